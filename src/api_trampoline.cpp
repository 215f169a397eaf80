// evproc_as_owner: the single entry point of evproc's SQL API functions that act with
// the extension owner's rights on behalf of their caller.
//
// A plpgsql SECURITY DEFINER function cannot learn who called it (current_user is its
// owner inside), and an argument naming the caller could be forged. So each such API
// function is declared `LANGUAGE C AS 'MODULE_PATHNAME', 'evproc_as_owner'` with its
// public signature; this trampoline
//   1. finds (once per FmgrInfo, cached in fn_extra) its implementation by exact name and
//      argument types: evproc.<name without "evproc_">_impl(caller oid, <the same
//      arguments>), a plain plpgsql function with a pinned search_path, owned by the
//      extension owner, that PUBLIC may not execute (fmgr calls skip the EXECUTE check:
//      this is the only way in; an implementation PUBLIC may execute is refused);
//   2. takes the caller from GetUserId(): the current user, which honours SET ROLE and
//      outer SECURITY DEFINER functions (called from one, the caller is its owner);
//   3. switches to the extension owner (a local user id change: SET ROLE is refused
//      until it is undone; search_path pinned), calls the implementation with the
//      caller prepended and the caller's ReturnSetInfo (set-returning implementations
//      materialize into it), and switches back. On ERROR nothing is restored here: the
//      abort of the (sub)transaction restores the user, security context and settings
//      saved when it started.
// PostgreSQL code only: an ERROR may longjmp through these frames.
#include <cstring>

#include "api_trampoline.hpp"
#include "error_boundary.hpp"
#include "extension_gate.hpp"

extern "C" {
#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type_d.h"
#include "nodes/makefuncs.h"
#include "nodes/pg_list.h"
#include "nodes/value.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"
#include "utils/syscache.h"
}

namespace evproc {

Oid ExtensionOwner(bool missing_ok) {
  ExtensionRow row = ReadExtensionRow();
  if (row.version != nullptr) pfree(row.version);  // callers may be in a long-lived context
  Oid owner = row.owner;
  if (!OidIsValid(owner) && !missing_ok) {
    ereport(ERROR, (errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
                    errmsg("extension \"evproc\" is not installed in this database")));
  }
  return owner;
}

SavedUser BecomeOwner(Oid owner) {
  SavedUser saved{InvalidOid, 0, 0};
  GetUserIdAndSecContext(&saved.user, &saved.security_context);
  SetUserIdAndSecContext(owner, saved.security_context | SECURITY_LOCAL_USERID_CHANGE);
  saved.guc_level = NewGUCNestLevel();
  (void)set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
                          GUC_ACTION_SAVE, true, 0, false);
  return saved;
}

void RestoreUser(const SavedUser &saved) {
  AtEOXact_GUC(true, saved.guc_level);
  SetUserIdAndSecContext(saved.user, saved.security_context);
}

namespace {

// What a trampolined function needs across calls, in fn_mcxt.
struct Target {
  FmgrInfo impl;
  Oid owner;
};

Target *FindTarget(FunctionCallInfo fcinfo) {
  FmgrInfo *flinfo = fcinfo->flinfo;
  Oid api = flinfo->fn_oid;
  HeapTuple tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(api));
  if (!HeapTupleIsValid(tuple)) elog(ERROR, "evproc: cache lookup failed for function %u", api);
  auto *proc = reinterpret_cast<Form_pg_proc>(GETSTRUCT(tuple));
  const char *name = NameStr(proc->proname);
  if (strncmp(name, "evproc_", 7) == 0) name += 7;
  char *impl_name = psprintf("%s_impl", name);
  int nargs = proc->pronargs;
  if (nargs + 1 > FUNC_MAX_ARGS) elog(ERROR, "evproc: too many arguments for %s", impl_name);
  Oid arg_types[FUNC_MAX_ARGS];
  arg_types[0] = OIDOID;
  for (int i = 0; i < nargs; ++i) arg_types[i + 1] = proc->proargtypes.values[i];
  Oid result_type = proc->prorettype;
  bool returns_set = proc->proretset;
  ReleaseSysCache(tuple);

  // By exact name and argument types in schema evproc, straight from the catalog:
  // LookupFuncName would check the caller's USAGE on schema evproc, which callers of the
  // API need not have.
  List *qualified = list_make2(makeString(pstrdup("evproc")), makeString(impl_name));
  Oid impl = GetSysCacheOid3(PROCNAMEARGSNSP, Anum_pg_proc_oid, CStringGetDatum(impl_name),
                             PointerGetDatum(buildoidvector(arg_types, nargs + 1)),
                             ObjectIdGetDatum(get_namespace_oid("evproc", false)));
  if (!OidIsValid(impl)) {
    ereport(ERROR, (errcode(ERRCODE_UNDEFINED_FUNCTION),
                    errmsg("evproc: implementation %s of function %s is missing",
                           func_signature_string(qualified, nargs + 1, NIL, arg_types),
                           format_procedure(api))));
  }
  // The implementation runs with the extension owner's rights: it must return what the
  // API function promises (a set is materialized into the caller's ReturnSetInfo), must
  // not switch users itself, and PUBLIC must not be able to call it with a forged caller.
  tuple = SearchSysCache1(PROCOID, ObjectIdGetDatum(impl));
  if (!HeapTupleIsValid(tuple)) elog(ERROR, "evproc: cache lookup failed for function %u", impl);
  proc = reinterpret_cast<Form_pg_proc>(GETSTRUCT(tuple));
  bool sound =
      !proc->prosecdef && proc->prorettype == result_type && proc->proretset == returns_set;
  bool acl_isnull = true;
  Datum acl_datum = SysCacheGetAttr(PROCOID, tuple, Anum_pg_proc_proacl, &acl_isnull);
  if (acl_isnull) {
    sound = false;  // the default ACL: PUBLIC may execute
  } else {
    Acl *acl = DatumGetAclP(acl_datum);
    const AclItem *items = ACL_DAT(acl);
    for (int i = 0; i < ACL_NUM(acl); ++i) {
      if (items[i].ai_grantee == ACL_ID_PUBLIC && (ACLITEM_GET_PRIVS(items[i]) & ACL_EXECUTE) != 0)
        sound = false;
    }
  }
  ReleaseSysCache(tuple);
  if (!sound) {
    ereport(ERROR, (errcode(ERRCODE_INVALID_FUNCTION_DEFINITION),
                    errmsg("evproc: implementation %s of function %s is unfit",
                           format_procedure(impl), format_procedure(api)),
                    errdetail("It must return what the function returns, not be SECURITY "
                              "DEFINER, and PUBLIC must not have EXECUTE on it.")));
  }
  Oid owner = ExtensionOwner(false);
  auto *target = static_cast<Target *>(MemoryContextAllocZero(flinfo->fn_mcxt, sizeof(Target)));
  fmgr_info_cxt(impl, &target->impl, flinfo->fn_mcxt);
  target->owner = owner;
  return target;
}

}  // namespace
}  // namespace evproc

EVPROC_CPP_FUNCTION(evproc_as_owner) {
  using namespace evproc;
  auto *target = static_cast<Target *>(fcinfo->flinfo->fn_extra);
  if (target == nullptr) {
    target = FindTarget(fcinfo);
    fcinfo->flinfo->fn_extra = target;
  }
  int nargs = fcinfo->nargs;
  LOCAL_FCINFO(inner, FUNC_MAX_ARGS);
  InitFunctionCallInfoData(*inner, &target->impl, nargs + 1, fcinfo->fncollation, fcinfo->context,
                           fcinfo->resultinfo);
  Oid caller = GetUserId();
  inner->args[0].value = ObjectIdGetDatum(caller);
  inner->args[0].isnull = false;
  for (int i = 0; i < nargs; ++i) inner->args[i + 1] = fcinfo->args[i];
  SavedUser saved = BecomeOwner(target->owner);
  Datum result = FunctionCallInvoke(inner);
  RestoreUser(saved);
  fcinfo->isnull = inner->isnull;
  return result;
}
