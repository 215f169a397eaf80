#include "spi_plan.hpp"

namespace evproc {

SPIPlanPtr PrepareOnce(SPIPlanPtr *slot, const char *sql, int nargs, const Oid *types) {
  if (*slot == nullptr) {
    SPIPlanPtr plan = SPI_prepare(sql, nargs, const_cast<Oid *>(types));
    if (plan == nullptr) {
      elog(ERROR, "evproc: could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
    }
    SPI_keepplan(plan);
    *slot = plan;
  }
  return *slot;
}

}  // namespace evproc
