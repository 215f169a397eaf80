// Appending events to evproc.log at the price of an INSERT (issue 13.2): the rows go
// straight into the log partition that holds the transaction's xid, with a heap insert
// and the partition's index entries, as COPY and logical replication's apply do,
// without planning, executor start-up or per-row partition routing.
#pragma once

#include "pg_headers.hpp"

extern "C" {
#include "datatype/timestamp.h"
#include "utils/jsonb.h"
}

namespace evproc {

// One row of evproc.log (xid is the transaction's, filled in here). Pointers may be
// nullptr for NULL (payload never is).
struct LogRow {
  int64 id;
  int32 partition;
  const text *key;
  const text *type;
  const Jsonb *payload;
  const Jsonb *headers;
  const text *dedup_id;
};

// Appends `count` rows of topic `topic_id` enqueued at `enqueued_at`, in one pass (one
// multi-row heap insert when there are several). The caller runs as the extension owner
// (whose privileges on evproc.log are checked, as an INSERT would) and inside
// SPI_connect: when the log has what a direct insert does not reproduce (triggers, row
// security, generated columns, a column or partition layout it does not know), the rows
// go through an INSERT statement instead, with every effect an INSERT has.
// Plain PostgreSQL code: an ERROR longjmps through it safely.
void AppendToLog(int32 topic_id, const LogRow *rows, int count, TimestampTz enqueued_at);

}  // namespace evproc
