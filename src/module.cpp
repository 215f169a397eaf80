// Module entry: magic block, _PG_init and settings.
#include "background.hpp"
#include "commit_wake.hpp"
#include "core/version.hpp"
#include "lifecycle.hpp"
#include "metrics_local.hpp"
#include "pg_headers.hpp"
#include "settings.hpp"
#include "shared_state.hpp"
#include "sink_worker.hpp"
#include "topic_cache.hpp"

extern "C" {
#include "utils/builtins.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

void _PG_init(void);
PG_FUNCTION_INFO_V1(evproc_library_version);
}

namespace evproc {

int max_payload_bytes = 1024 * 1024;
int max_batch_events = 10000;

void DefineSettings() {
  DefineCustomIntVariable("evproc.max_payload_bytes",
                          "Largest event payload accepted by enqueue (jsonb size in bytes).",
                          nullptr, &max_payload_bytes, 1024 * 1024, 64, 64 * 1024 * 1024, PGC_SUSET,
                          GUC_UNIT_BYTE, nullptr, nullptr, nullptr);
  DefineCustomIntVariable(
      "evproc.max_batch_events", "Most events accepted by one evproc_enqueue_batch call.", nullptr,
      &max_batch_events, 10000, 1, 1000000, PGC_SUSET, 0, nullptr, nullptr, nullptr);
  DefineBackgroundSettings();
  DefineSinkSettings();
  MarkGUCPrefixReserved("evproc");
}

}  // namespace evproc

// Nothing here may throw: _PG_init is called by PostgreSQL's C code.
// Loaded without shared_preload_libraries, evproc still publishes (and its functions
// work), but no launcher runs and nothing is delivered; evproc_subscribe warns.
void _PG_init(void) {
  evproc::DefineSettings();
  evproc::RegisterTopicCacheInvalidation();
  evproc::RegisterCommitWake();
  evproc::metrics::RegisterTransactionCounters();
  if (process_shared_preload_libraries_in_progress) {
    evproc::RequestSharedState();
    evproc::RegisterLauncher();
    evproc::RegisterSinkWorkers();
    evproc::RegisterLifecycleHook();
  }
}

// evproc.library_version(): the version of the library this backend runs, loaded when
// the server started; pg_extension.extversion is that of the SQL objects. They differ
// between the steps of an upgrade (README "Upgrading").
extern "C" Datum evproc_library_version(PG_FUNCTION_ARGS) {
  (void)fcinfo;
  const auto version = evproc::core::kLibraryVersion;
  PG_RETURN_TEXT_P(cstring_to_text_with_len(version.data(), static_cast<int>(version.size())));
}
