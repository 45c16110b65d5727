// SHA-256 of files and strings (OpenSSL's libcrypto), as lowercase hex: the checksums a checkpoint
// manifest records and a load verifies before it trusts a file.
#pragma once

#include <cstdint>
#include <string>

namespace tpipe {

std::string sha256_hex(const std::string& bytes);

struct FileDigest {
  std::int64_t bytes = 0;
  std::string sha256;
};

// Reads the whole file; throws ConfigError("cannot read <path>: <reason>").
FileDigest digest_file(const std::string& path);

}  // namespace tpipe
