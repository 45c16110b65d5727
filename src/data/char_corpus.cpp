// Character corpus (see char_corpus.h).
#include "tpipe/data/char_corpus.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "tpipe/error.h"

namespace tpipe {
namespace {

std::string read_bible() {
  std::FILE* p = popen("bible gen1:1-rev22:21 2>/dev/null", "r");
  std::string text;
  if (p) {
    char buf[1 << 16];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) text.append(buf, n);
    pclose(p);
  }
  if (text.size() < 100000)
    throw ConfigError("the default corpus needs Debian's bible-kjv package (`apt-get install bible-kjv`, or "
                      "`make deps`); or train on any text file with --data FILE");
  return text;
}

// Text is UTF-8 without NUL bytes; anything else is most likely a binary file given by mistake.
void check_text(const std::string& text, const std::string& source) {
  auto refuse = [&](std::size_t at, const std::string& why) {
    char byte[8];
    std::snprintf(byte, sizeof byte, "0x%02x", static_cast<unsigned char>(text[at]));
    throw ConfigError("the corpus " + source + " is not text: " + why + " (byte " + byte + " at offset " +
                      std::to_string(at) + "); give a UTF-8 text file");
  };
  for (std::size_t i = 0; i < text.size();) {
    const auto b = static_cast<unsigned char>(text[i]);
    if (b == 0) refuse(i, "a NUL byte");
    const int extra = b < 0x80 ? 0 : (b >> 5) == 0x6 ? 1 : (b >> 4) == 0xe ? 2 : (b >> 3) == 0x1e ? 3 : -1;
    if (extra < 0) refuse(i, "not UTF-8");
    for (int k = 1; k <= extra; ++k)
      if (i + k >= text.size() || (static_cast<unsigned char>(text[i + k]) >> 6) != 0x2) refuse(i, "not UTF-8");
    i += 1 + extra;
  }
}

}  // namespace

void CharCorpus::check_fits(int seq_len) const {
  for (const auto* part : {&train_, &val_})
    if (part->numel() <= static_cast<std::int64_t>(seq_len) + 1)
      throw ConfigError("--seq-len " + std::to_string(seq_len) + " is longer than the " +
                        (part == &val_ ? std::string("validation") : std::string("training")) + " text of " +
                        source_ + " (" + std::to_string(part->numel()) + " characters)");
}

CharCorpus CharCorpus::load(const std::string& path) {
  if (path.empty()) return from_text(read_bible(), "King James Bible (bible-kjv)");
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    throw ConfigError("--data " + path + " is a directory; give a text file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError("cannot read --data " + path + ": no such file, or not readable");
  std::stringstream ss;
  ss << in.rdbuf();
  return from_text(ss.str(), path);
}

CharCorpus CharCorpus::from_text(const std::string& text, std::string source) {
  if (text.size() < 1000)
    throw ConfigError("the corpus " + source + " has " + std::to_string(text.size()) +
                      " characters; at least 1000 are needed for training and validation");
  check_text(text, source);
  CharCorpus c;
  c.source_ = std::move(source);
  std::vector<std::int64_t> counts(256, 0);
  for (unsigned char ch : text) ++counts[ch];
  c.index_.assign(256, 0);
  for (int b = 0; b < 256; ++b)
    if (counts[b] > 0) {
      c.index_[b] = static_cast<int>(c.chars_.size());
      c.chars_.push_back(static_cast<char>(b));
    }
  at::Tensor all = at::empty({static_cast<std::int64_t>(text.size())}, at::kLong);
  auto* p = all.data_ptr<std::int64_t>();
  for (std::size_t i = 0; i < text.size(); ++i) p[i] = c.index_[static_cast<unsigned char>(text[i])];
  const std::int64_t split = static_cast<std::int64_t>(text.size()) * 9 / 10;
  c.train_ = all.narrow(0, 0, split);
  c.val_ = all.narrow(0, split, all.numel() - split);
  std::vector<double> freq(c.chars_.size(), 0.0);
  for (std::int64_t i = 0; i < split; ++i) freq[p[i]] += 1.0;
  for (double f : freq)
    if (f > 0) c.unigram_entropy_ -= f / split * std::log(f / split);
  return c;
}

std::pair<at::Tensor, at::Tensor> CharCorpus::batch(bool validation, std::int64_t step, int batch, int seq_len,
                                                    std::uint64_t seed) const {
  const at::Tensor& data = validation ? val_ : train_;
  if (data.numel() <= seq_len + 1)
    throw ConfigError("--seq-len " + std::to_string(seq_len) + " is longer than the " +
                      (validation ? std::string("validation") : std::string("training")) + " text (" +
                      std::to_string(data.numel()) + " characters)");
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed * 1000003ull + static_cast<std::uint64_t>(step) * 2 +
                                                      (validation ? 1 : 0));
  const at::Tensor starts = at::randint(0, data.numel() - seq_len - 1, {batch}, gen, at::kLong);
  at::Tensor x = at::empty({batch, seq_len}, at::kLong), y = at::empty({batch, seq_len}, at::kLong);
  for (int b = 0; b < batch; ++b) {
    const std::int64_t s = starts[b].item<std::int64_t>();
    x[b] = data.narrow(0, s, seq_len);
    y[b] = data.narrow(0, s + 1, seq_len);
  }
  return {x, y};
}

at::Tensor CharCorpus::encode(const std::string& text) const {
  at::Tensor t = at::empty({static_cast<std::int64_t>(text.size())}, at::kLong);
  for (std::size_t i = 0; i < text.size(); ++i) t[i] = index_[static_cast<unsigned char>(text[i])];
  return t;
}

std::string CharCorpus::decode(const at::Tensor& tokens) const {
  std::string s;
  const at::Tensor t = tokens.contiguous().to(at::kLong);
  for (std::int64_t i = 0; i < t.numel(); ++i) s += chars_.at(t.data_ptr<std::int64_t>()[i]);
  return s;
}

}  // namespace tpipe
