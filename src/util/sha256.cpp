// SHA-256 through OpenSSL's EVP interface (see sha256.h).
#include "tpipe/util/sha256.h"

#include <openssl/evp.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "tpipe/error.h"

namespace tpipe {
Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr) != 1)
    throw Error("OpenSSL: cannot start SHA-256");
}

Sha256::~Sha256() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }

void Sha256::add(const void* data, std::size_t size) { EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data, size); }

std::string Sha256::hex() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), md, &len);
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (unsigned int i = 0; i < len; ++i) s += {digits[md[i] >> 4], digits[md[i] & 15]};
  return s;
}

std::string sha256_hex(const void* data, std::size_t size) {
  Sha256 h;
  h.add(data, size);
  return h.hex();
}

std::string sha256_hex(const std::string& bytes) { return sha256_hex(bytes.data(), bytes.size()); }

FileDigest digest_file(const std::string& path) {
  std::unique_ptr<std::FILE, decltype(&std::fclose)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) throw ConfigError("cannot read " + path + ": " + std::strerror(errno));
  Sha256 h;
  FileDigest d;
  std::vector<char> buf(1 << 20);
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f.get())) > 0) {
    h.add(buf.data(), n);
    d.bytes += static_cast<std::int64_t>(n);
  }
  if (std::ferror(f.get())) throw ConfigError("cannot read " + path + ": " + std::strerror(errno));
  d.sha256 = h.hex();
  return d;
}

}  // namespace tpipe
