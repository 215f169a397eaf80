// evproc's GUCs, defined in module.cpp and documented in docs/operations.md "Settings".
#pragma once

#include "pg_headers.hpp"

namespace evproc {

// Longest key, type and dedup id accepted by enqueue, in bytes. Fixed (not settings) so
// that what one server accepted another one accepts too; documented in docs/api.md "Enqueue".
constexpr int kMaxKeyBytes = 512;
constexpr int kMaxTypeBytes = 128;
constexpr int kMaxDedupIdBytes = 256;
constexpr int kMaxHeadersBytes = 64 * 1024;

extern int max_payload_bytes;  // evproc.max_payload_bytes
extern int max_batch_events;   // evproc.max_batch_events

void DefineSettings();

}  // namespace evproc
