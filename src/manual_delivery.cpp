// evproc.deliver_batch(): one batch of delivery run by the calling session, inside its
// transaction. Tests step delivery deterministically with it (with the launcher serving
// another database); an operator can drain a unit by hand. Superuser only (REVOKEd).
#include "delivery.hpp"
#include "error_boundary.hpp"

extern "C" {
#include "access/htup_details.h"
#include "funcapi.h"
#include "utils/builtins.h"
}

EVPROC_CPP_FUNCTION(evproc_deliver_batch) {
  using evproc::pg::CallPostgres;
  TupleDesc descriptor = nullptr;
  CallPostgres([&] {
    if (get_call_result_type(fcinfo, nullptr, &descriptor) != TYPEFUNC_COMPOSITE) {
      elog(ERROR, "evproc.deliver_batch must return a record");
    }
  });
  evproc::BatchResult result = evproc::RunOneBatchInTransaction();
  return CallPostgres([&] {
    Datum values[7] = {
        BoolGetDatum(result.worked),
        result.subscription != nullptr ? CStringGetTextDatum(result.subscription) : 0,
        Int32GetDatum(result.partition),
        Int64GetDatum(result.delivered),
        Int64GetDatum(result.failed),
        Int64GetDatum(result.dead),
        BoolGetDatum(result.paused)};
    bool nulls[7] = {false, !result.worked, !result.worked, false, false, false, false};
    return HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(descriptor), values, nulls));
  });
}
