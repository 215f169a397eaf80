// Commit wake (docs/design.md "Processes"): an enqueuing transaction's commit wakes the launcher
// through shared memory and its latch, so an idle system delivers in milliseconds without polling,
// and publishing needs nothing but a plain function call (no LISTEN/NOTIFY, which transaction-mode
// poolers break).
#pragma once

#include "pg_headers.hpp"

namespace evproc {

void RegisterCommitWake();                           // from _PG_init
void NoteEnqueued(int32 topic_id, int32 partition);  // remember for this transaction
void WakeAtCommit();                  // wake the launcher at commit, no partition written
void WakeReadersAtCommit();           // wake waiting readers at commit (units were freed)
void SubscriptionsChangedAtCommit();  // and the maintenance worker, to sync the registry

// The launcher's side (the protocol is described in commit_wake.cpp):
// Commits marked slots since the last tick; with lazy_due, also those of commits no
// subscription awaits now (the launcher passes it once a second).
bool TickRequested(bool lazy_due);
int TakeCommittedSlots(int *slots);             // before a tick's snapshot: the marked slots
void CommittedSlotsTicked();                    // the tick that listed them is recorded
int AwaitedSlots(const int *slots, int count);  // how many some subscription delivers
bool TakeWorkersWanted();                       // subscriptions changed: every worker looks
uint64 EventsCommitted();                       // a running total since the server started

// Whether the launcher ticks for this database (it stamps the slots).
bool LauncherServesHere();
// The newest tick at which (topic, partition) may have gained events (see
// shared_state.hpp; PG_INT64_MAX where the launcher does not serve this database).
int64 DirtyTick(int32 topic_id, int32 partition);

}  // namespace evproc
