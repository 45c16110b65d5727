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
namespace {

struct Hasher {
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx{EVP_MD_CTX_new(), &EVP_MD_CTX_free};
  Hasher() {
    if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) throw Error("OpenSSL: cannot start SHA-256");
  }
  void add(const void* data, std::size_t n) { EVP_DigestUpdate(ctx.get(), data, n); }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(ctx.get(), md, &len);
    static const char* digits = "0123456789abcdef";
    std::string s;
    for (unsigned int i = 0; i < len; ++i) s += {digits[md[i] >> 4], digits[md[i] & 15]};
    return s;
  }
};

}  // namespace

std::string sha256_hex(const std::string& bytes) {
  Hasher h;
  h.add(bytes.data(), bytes.size());
  return h.hex();
}

FileDigest digest_file(const std::string& path) {
  std::unique_ptr<std::FILE, decltype(&std::fclose)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) throw ConfigError("cannot read " + path + ": " + std::strerror(errno));
  Hasher h;
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
