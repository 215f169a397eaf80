// Support functions for topic administration (the SQL side is in extension/evproc.sql).
#include <cstring>

#include "core/schema_api.hpp"
#include "pg_headers.hpp"

extern "C" {
#include "commands/trigger.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "utils/rel.h"

PG_FUNCTION_INFO_V1(evproc_validate_schema);
PG_FUNCTION_INFO_V1(evproc_topic_changed);
}

// evproc.validate_schema(jsonb): raises 22023 naming what is wrong with the schema.
extern "C" Datum evproc_validate_schema(PG_FUNCTION_ARGS) {
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
extern "C" Datum evproc_topic_changed(PG_FUNCTION_ARGS) {
  if (!CALLED_AS_TRIGGER(fcinfo)) {
    ereport(ERROR, (errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
                    errmsg("evproc.topic_changed() must be called as a trigger")));
  }
  auto *trigger_data = reinterpret_cast<TriggerData *>(fcinfo->context);
  CacheInvalidateRelcache(trigger_data->tg_relation);
  return PointerGetDatum(nullptr);
}
