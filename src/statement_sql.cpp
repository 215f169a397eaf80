// evproc.statement_sql(name): the text of a statement the delivery workers prepare, by
// its name in delivery_statements.hpp. The regression tests EXPLAIN exactly that text
// (sql/window.sql, sql/statements.sql) and evproc.window_events runs the window's two
// parts, so the statements exist in one place only. Superuser only (REVOKEd).
#include <cstring>

#include "delivery_statements.hpp"
#include "error_boundary.hpp"

extern "C" {
#include "utils/builtins.h"
}

EVPROC_CPP_FUNCTION(evproc_statement_sql) {
  using evproc::pg::CallPostgres;
  const char *name = CallPostgres([&] { return text_to_cstring(PG_GETARG_TEXT_PP(0)); });
  for (const auto &statement : evproc::sql::kStatements) {
    if (std::strcmp(statement.name, name) == 0)
      return CallPostgres([&] { return CStringGetTextDatum(statement.text); });
  }
  CallPostgres([&] {
    ereport(ERROR, (errcode(ERRCODE_INVALID_PARAMETER_VALUE),
                    errmsg("evproc has no delivery statement named \"%s\"", name)));
  });
  return 0;
}
