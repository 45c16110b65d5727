// Formatting of error locations.
#include "tpipe/error.h"

namespace tpipe {

std::string Where::prefix() const {
  std::string parts;
  auto add = [&](const std::string& p) { parts += (parts.empty() ? "" : " | ") + p; };
  if (rank >= 0) add("rank " + std::to_string(rank));
  if (stage >= 0) add("stage " + std::to_string(stage));
  if (mb >= 0) add("mb " + std::to_string(mb));
  if (!action.empty()) add(action);
  return parts.empty() ? std::string() : "[" + parts + "] ";
}

}  // namespace tpipe
