// Module entry: magic block and _PG_init (the settings: settings.cpp).
#include "background.hpp"
#include "commit_wake.hpp"
#include "core/version.hpp"
#include "error_boundary.hpp"
#include "handler_call.hpp"
#include "handler_watch.hpp"
#include "metrics_local.hpp"
#include "pg_headers.hpp"
#include "settings.hpp"
#include "shared_state.hpp"
#include "topic_cache.hpp"
#include "utility_hook.hpp"

extern "C" {
#include "utils/builtins.h"
#include "utils/guc.h"

PG_MODULE_MAGIC;

void _PG_init(void);
}

// Nothing here may throw: _PG_init is called by PostgreSQL's C code.
// Loaded without shared_preload_libraries, evproc still publishes (and its functions
// work), but no launcher runs and nothing is delivered; evproc_subscribe warns.
void _PG_init(void) {
  evproc::DefineSettings();
  evproc::NoteServerSearchPath();
  evproc::RegisterTopicCacheInvalidation();
  evproc::RegisterCommitWake();
  evproc::metrics::RegisterTransactionCounters();
  if (process_shared_preload_libraries_in_progress) {
    evproc::RequestSharedState();
    evproc::RequestHandlerWatch();
    evproc::RegisterLauncher();
    evproc::RegisterUtilityHook();
  }
}

// evproc.library_version(): the version of the library this backend runs, loaded when
// the server started; pg_extension.extversion is that of the SQL objects. They differ
// between the steps of an upgrade (docs/operations.md "Upgrading").
EVPROC_CPP_FUNCTION(evproc_library_version) {
  (void)fcinfo;
  const auto version = evproc::core::kLibraryVersion;
  PG_RETURN_TEXT_P(cstring_to_text_with_len(version.data(), static_cast<int>(version.size())));
}
