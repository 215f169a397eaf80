// SQL-callable support of sinks (extension/sink.sql): option validation, masking and the
// latency percentiles of evproc.sink_stats. The C++ work (nlohmann JSON, the registry)
// runs in noexcept helpers that leave a message in a buffer; errors are raised after
// every C++ frame is gone.
#include <cstring>
#include <string>

// nlohmann/json before PostgreSQL's headers (which redefine snprintf).
#include <nlohmann/json.hpp>

#include "sink/registry.hpp"

#include "core/latency.hpp"
#include "pg_headers.hpp"
#include "sink_worker.hpp"

extern "C" {
#include "catalog/pg_type_d.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/jsonb.h"

PG_FUNCTION_INFO_V1(evproc_validate_sink);
PG_FUNCTION_INFO_V1(evproc_mask_sink);
PG_FUNCTION_INFO_V1(evproc_sink_latency_ms);
}

namespace {

constexpr size_t kProblemSize = 1024;

struct Problem {
  char option[128];
  char message[kProblemSize];
};

void Copy(char *buffer, size_t size, const std::string &text) noexcept {
  std::strncpy(buffer, text.c_str(), size - 1);
  buffer[size - 1] = '\0';
}

// False with *problem filled when the sink is not acceptable.
bool Validate(const char *text, bool superuser, const char *allowed, Problem *problem) noexcept {
  try {
    nlohmann::json sink = nlohmann::json::parse(text);
    evproc::sink::ValidationContext context;
    context.superuser = superuser;
    context.allowed_destinations = allowed != nullptr ? allowed : "";
    auto found = evproc::sink::ValidateSink(sink, context);
    if (!found) return true;
    Copy(problem->option, sizeof(problem->option), found->option);
    Copy(problem->message, sizeof(problem->message), found->message);
  } catch (const std::exception &error) {
    Copy(problem->option, sizeof(problem->option), "sink");
    Copy(problem->message, sizeof(problem->message), error.what());
  }
  return false;
}

// The masked sink as JSON text in buffer (nullptr on failure, which masks everything).
bool Mask(const char *text, std::string *out) noexcept {
  try {
    *out = evproc::sink::MaskSink(nlohmann::json::parse(text)).dump();
    return true;
  } catch (const std::exception &) {
    return false;
  }
}

Datum JsonbFromText(const char *text) {
  return DirectFunctionCall1(jsonb_in, CStringGetDatum(text));
}

}  // namespace

// evproc.validate_sink(sink jsonb, superuser boolean) → sink: 22023 naming the option.
extern "C" Datum evproc_validate_sink(PG_FUNCTION_ARGS) {
  if (PG_ARGISNULL(0)) {
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE), errmsg("sink must not be null")));
  }
  Jsonb *sink = PG_GETARG_JSONB_P(0);
  bool superuser = !PG_ARGISNULL(1) && PG_GETARG_BOOL(1);
  char *text = JsonbToCString(nullptr, &sink->root, VARSIZE(sink));
  Problem problem{};
  if (!Validate(text, superuser, evproc::sink_allowed_destinations, &problem)) {
    ereport(ERROR,
            (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
             errmsg("invalid sink option \"%s\": %s", problem.option, problem.message),
             std::strcmp(problem.option, "url") == 0
                 ? errhint("A superuser lists allowed destinations in "
                           "evproc.sink_allowed_destinations (host names, *.domain, addresses, "
                           "CIDR blocks).")
                 : 0));
  }
  PG_RETURN_JSONB_P(sink);
}

// evproc.mask_sink(sink jsonb) → the sink with its secrets masked.
extern "C" Datum evproc_mask_sink(PG_FUNCTION_ARGS) {
  Jsonb *sink = PG_GETARG_JSONB_P(0);
  char *text = JsonbToCString(nullptr, &sink->root, VARSIZE(sink));
  std::string *masked = new (std::nothrow) std::string();
  char *copy = nullptr;
  if (masked != nullptr) {
    if (Mask(text, masked)) copy = pstrdup(masked->c_str());
    delete masked;
  }
  // Anything unexpected shows nothing rather than a secret.
  return JsonbFromText(copy != nullptr ? copy : "{}");
}

// evproc.sink_latency_ms(buckets bigint[], fraction float8): NULL when nothing counted.
extern "C" Datum evproc_sink_latency_ms(PG_FUNCTION_ARGS) {
  ArrayType *array = PG_GETARG_ARRAYTYPE_P(0);
  double fraction = PG_GETARG_FLOAT8(1);
  Datum *values = nullptr;
  bool *nulls = nullptr;
  int count = 0;
  deconstruct_array(array, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &values, &nulls, &count);
  uint64_t buckets[evproc::core::kLatencyBuckets] = {};
  uint64_t total = 0;
  for (int i = 0; i < count && i < evproc::core::kLatencyBuckets; ++i) {
    if (nulls[i] || DatumGetInt64(values[i]) <= 0) continue;
    buckets[i] = static_cast<uint64_t>(DatumGetInt64(values[i]));
    total += buckets[i];
  }
  if (total == 0) PG_RETURN_NULL();
  PG_RETURN_FLOAT8(evproc::core::LatencyPercentileMs(buckets, total, fraction));
}
