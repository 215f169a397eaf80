// The stream sinks' default message-id origin (sink/stream.hpp): this cluster's system
// identifier and the sink worker's database, so that several PostgreSQL servers (or
// databases) publishing into one stream never share a message id, while a promoted
// replica — same system identifier — keeps the ids and the stream's dedup.
#include <string>

#include "sink/stream.hpp"

#include "pg_headers.hpp"

extern "C" {
#include "access/xlog.h"
#include "miscadmin.h"
}

namespace {

std::string ReadOrigin() {
  // Both are plain reads (shared memory filled at startup, a process global): no error
  // can be raised here.
  return std::to_string(static_cast<unsigned long long>(GetSystemIdentifier())) + "." +
         std::to_string(MyDatabaseId);
}

// Set when the library is loaded: a pointer assignment, nothing else.
[[maybe_unused]] const bool kRegistered = [] {
  evproc::sink::stream_origin_source = ReadOrigin;
  return true;
}();

}  // namespace
