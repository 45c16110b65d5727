// A fresh directory per test under GoogleTest's temporary directory, removed afterwards.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>

namespace tpipe::testing {

struct TempDir {
  std::string path;
  explicit TempDir(const std::string& prefix = "tpipe_test") {
    std::string tmpl = ::testing::TempDir() + prefix + "_XXXXXX";
    EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
    path = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

}  // namespace tpipe::testing
