#include "spi_plan.hpp"

namespace evproc {

SPIPlanPtr PrepareOnce(SPIPlanPtr *slot, const char *sql, int nargs, const Oid *types,
                       int cursor_options) {
  if (*slot == nullptr) {
    SPIPlanPtr plan = SPI_prepare_cursor(sql, nargs, const_cast<Oid *>(types), cursor_options);
    if (plan == nullptr) {
      elog(ERROR, "evproc: could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
    }
    SPI_keepplan(plan);
    *slot = plan;
  }
  return *slot;
}

}  // namespace evproc
