// SHA-256 of files and strings (OpenSSL's libcrypto), as lowercase hex: the checksums a checkpoint
// manifest records and a load verifies before it trusts a file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace tpipe {

// Incremental: add() the bytes as they are written, hex() at the end.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void add(const void* data, std::size_t size);
  std::string hex();  // ends the digest

 private:
  void* ctx_;  // EVP_MD_CTX
};

std::string sha256_hex(const std::string& bytes);
std::string sha256_hex(const void* data, std::size_t size);

struct FileDigest {
  std::int64_t bytes = 0;
  std::string sha256;
};

// Reads the whole file; throws ConfigError("cannot read <path>: <reason>").
FileDigest digest_file(const std::string& path);

}  // namespace tpipe
