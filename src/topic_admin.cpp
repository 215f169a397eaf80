// Support functions for topic administration (the SQL side is in extension/evproc.sql).
#include <cstring>

#include "core/schema_api.hpp"
#include "error_boundary.hpp"
#include "pg_headers.hpp"

extern "C" {
#include "commands/trigger.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/rel.h"
}

// evproc.validate_schema(jsonb): raises 22023 naming what is wrong with the schema.
EVPROC_CPP_FUNCTION(evproc_validate_schema) {
  Jsonb *schema = PG_GETARG_JSONB_P(0);
  char *text = JsonbToCString(nullptr, &schema->root, VARSIZE(schema));
  char problem[512];
  evproc::core::CompiledSchema *compiled =
      evproc::core::SchemaCompile(text, std::strlen(text), problem, sizeof(problem));
  if (compiled == nullptr) {
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("invalid payload_schema: %s", problem),
                    errhint("evproc supports type, required, properties, items, enum, minimum, "
                            "maximum, minLength, maxLength and additionalProperties.")));
  }
  evproc::core::SchemaFree(compiled);
  PG_RETURN_VOID();
}

// Statement trigger on evproc.topic: tells every backend's topic cache to reload.
EVPROC_CPP_FUNCTION(evproc_topic_changed) {
  if (!CALLED_AS_TRIGGER(fcinfo)) {
    ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                    errmsg("evproc.topic_changed() must be called as a trigger")));
  }
  auto *trigger_data = reinterpret_cast<TriggerData *>(fcinfo->context);
  CacheInvalidateRelcache(trigger_data->tg_relation);
  return PointerGetDatum(nullptr);
}
