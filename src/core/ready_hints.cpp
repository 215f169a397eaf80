#include "core/ready_hints.hpp"

namespace evproc::core {

bool ReadyHints::Push(UnitKey unit) {
  if (count >= kReadyHintCapacity) {
    ++dropped;
    return false;
  }
  units[(head + count) % kReadyHintCapacity] = unit;
  ++count;
  return true;
}

bool ReadyHints::Pop(UnitKey *unit) {
  if (count == 0) return false;
  *unit = units[head];
  head = (head + 1) % kReadyHintCapacity;
  --count;
  return true;
}

}  // namespace evproc::core
