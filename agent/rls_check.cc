#include "agent/rls_check.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"

namespace testshard::agent {
namespace {

constexpr size_t kListed = 8;

// "a, b, c and 4 more"
std::string List(const std::vector<pg::Row>& rows) {
  std::vector<std::string> names;
  for (size_t i = 0; i < rows.size() && i < kListed; ++i) names.push_back(rows[i][0]);
  std::string out = absl::StrJoin(names, ", ");
  if (rows.size() > kListed) absl::StrAppend(&out, " and ", rows.size() - kListed, " more");
  return out;
}

constexpr char kUserTables[] =
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' ";

}  // namespace

absl::StatusOr<std::vector<std::string>> CheckRowLevelSecurity(pg::SqlSession& s) {
  std::vector<std::string> warnings;
  TS_ASSIGN_OR_RETURN(
      std::vector<pg::Row> role,
      s.Query("SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"));
  if (role.empty()) return absl::InternalError("the tests' role is not in pg_roles");
  const std::string& name = role[0][0];
  const std::string fix =
      "set database.role to a role that is not a superuser, has no BYPASSRLS and owns no tables (the migrations grant "
      "it what the app needs)";
  if (role[0][1] == "t") {
    warnings.push_back(absl::StrCat("the tests connect as \"", name,
                                    "\", a superuser: row level security policies do not apply to it, so tests of "
                                    "tenant isolation pass whatever the policies say; ",
                                    fix));
  } else if (role[0][2] == "t") {
    warnings.push_back(absl::StrCat("the tests connect as \"", name,
                                    "\", which has BYPASSRLS: row level security policies do not apply to it; ", fix));
  }
  // Owners (and members of the owning role) bypass a table's policies unless it is FORCEd.
  TS_ASSIGN_OR_RETURN(std::vector<pg::Row> owned,
                      s.Query(absl::StrCat("SELECT format('%I.%I', n.nspname, c.relname) ", kUserTables,
                                           "AND NOT c.relforcerowsecurity "
                                           "AND pg_has_role(current_user, c.relowner, 'USAGE') ORDER BY 1")));
  if (!owned.empty() && role[0][1] != "t") {
    warnings.push_back(absl::StrCat("the tests' role \"", name, "\" owns ", owned.size(),
                                    " table(s) whose row level security is not forced, so their policies do not "
                                    "apply to it: ",
                                    List(owned),
                                    "; use a role that owns no tables, or ALTER TABLE ... FORCE ROW LEVEL SECURITY"));
  }
  TS_ASSIGN_OR_RETURN(std::vector<pg::Row> unenforced,
                      s.Query(absl::StrCat("SELECT format('%I.%I', n.nspname, c.relname) ", kUserTables,
                                           "AND NOT c.relrowsecurity "
                                           "AND EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid) "
                                           "ORDER BY 1")));
  if (!unenforced.empty()) {
    warnings.push_back(absl::StrCat(unenforced.size(),
                                    " table(s) have row level security policies but row level security is not "
                                    "enabled, so the policies apply to nobody: ",
                                    List(unenforced), "; ALTER TABLE ... ENABLE ROW LEVEL SECURITY"));
  }
  return warnings;
}

}  // namespace testshard::agent
