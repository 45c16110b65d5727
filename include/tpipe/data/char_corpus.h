// A character-level text corpus: the King James Bible from Debian's bible-kjv by default (4.3 MB
// of public-domain ASCII), or any text file. Tokens are the distinct bytes of the text; the last
// tenth is held out for validation. Batches are drawn deterministically from (seed, step), so
// every rank computes the same global batch and each data-parallel replica takes its own slice.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

namespace tpipe {

class CharCorpus {
 public:
  // `path` empty: the Bible through the `bible` command. Throws ConfigError when the text cannot
  // be read, is a directory, is not text (a NUL byte, or not UTF-8) or is too short, saying how
  // to fix it. Any UTF-8 text works; its tokens are bytes.
  static CharCorpus load(const std::string& path = "");
  static CharCorpus from_text(const std::string& text, std::string source = "text");

  // Throws ConfigError unless the training and the validation text are longer than seq_len + 1.
  void check_fits(int seq_len) const;

  int vocab_size() const { return static_cast<int>(chars_.size()); }
  const std::string& source() const { return source_; }
  std::int64_t train_tokens() const { return train_.numel(); }
  std::int64_t val_tokens() const { return val_.numel(); }

  // Entropy (nats) of the character distribution of the training text: the loss of a model that
  // learned only character frequencies.
  double unigram_entropy() const { return unigram_entropy_; }

  // {inputs, targets}: [batch, seq_len] int64 windows and the same shifted by one.
  std::pair<at::Tensor, at::Tensor> batch(bool validation, std::int64_t step, int batch, int seq_len,
                                          std::uint64_t seed) const;

  at::Tensor encode(const std::string& text) const;  // unknown bytes map to token 0
  std::string decode(const at::Tensor& tokens) const;

 private:
  std::string source_;
  std::vector<char> chars_;  // token -> byte
  std::vector<int> index_;   // byte -> token
  at::Tensor train_, val_;
  double unigram_entropy_ = 0;
};

}  // namespace tpipe
