// Errors of the library. Every message says where it happened — rank, stage, micro-batch and
// action where they are known — so that a failure in an 8-rank job can be read from one line:
//   [rank 3 | stage 1 | mb 5 | 1B5] expected activation [8,512] float, got [8,256] float from rank 2
#pragma once

#include <stdexcept>
#include <string>

namespace tpipe {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Invalid input from the user: bad options, a batch too small, a partition that does not fit.
class ConfigError : public Error {
 public:
  using Error::Error;
};

// A schedule that is malformed or would deadlock; the message carries the rank x step grid.
class ScheduleError : public Error {
 public:
  using Error::Error;
};

// A message that is not what the receiver expected (count, dtype or shape).
class ShapeError : public Error {
 public:
  using Error::Error;
};

// A peer that died, hung past the timeout, or a transport failure.
class CommError : public Error {
 public:
  using Error::Error;
};

// A step whose loss or gradient norm is not finite (NaN or infinite); thrown on every rank alike,
// before the optimizer changes anything.
class NonFiniteError : public Error {
 public:
  using Error::Error;
};

// Where something happened; fields left at -1 / empty are omitted from the text.
struct Where {
  int rank = -1;
  int stage = -1;
  int mb = -1;
  std::string action;

  // "[rank 3 | stage 1 | mb 5 | 1B5] "  (with the trailing space), or "" when nothing is known.
  std::string prefix() const;
};

}  // namespace tpipe
