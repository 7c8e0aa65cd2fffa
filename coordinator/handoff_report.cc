#include "coordinator/handoff_report.h"

#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace testshard::coordinator {
namespace {

bool Serious(const HandoffFinding& f) { return f.kind != HandoffFinding::Kind::kNote; }

}  // namespace

void HandoffReport::Add(HandoffFinding finding) {
  absl::MutexLock l(&mu_);
  for (const HandoffFinding& f : findings_) {
    if (f.kind == finding.kind && f.agent == finding.agent && f.database == finding.database &&
        f.message == finding.message) {
      return;
    }
  }
  findings_.push_back(std::move(finding));
}

std::vector<HandoffFinding> HandoffReport::findings() const {
  absl::MutexLock l(&mu_);
  return findings_;
}

bool HandoffReport::Fails() const {
  if (mode_ != DatabaseConfig::HandoffCheck::kFail) return false;
  absl::MutexLock l(&mu_);
  for (const HandoffFinding& f : findings_) {
    if (Serious(f)) return true;
  }
  return false;
}

std::string HandoffReport::Summary() const {
  std::vector<HandoffFinding> all = findings();
  if (all.empty()) return "";
  // Foreign databases, each with the agents whose tests used it.
  std::map<std::string, std::set<std::string>> agents_by_db;
  for (const HandoffFinding& f : all) {
    if (f.kind == HandoffFinding::Kind::kForeignDatabase) agents_by_db[f.database].insert(f.agent);
  }
  bool serious = false, leftovers = false;
  for (const HandoffFinding& f : all) {
    serious |= Serious(f);
    leftovers |= f.kind == HandoffFinding::Kind::kLeftoverTables;
  }
  std::string out = !agents_by_db.empty()
                        ? "\nDatabase hand-off: the suite does not keep to the databases testshard hands it\n"
                    : leftovers ? "\nDatabase hand-off: tests failed on tables an earlier test process left behind\n"
                                : "\nDatabase hand-off:\n";
  for (const auto& [db, agents] : agents_by_db) {
    if (agents.size() > 1) {
      absl::StrAppend(&out, "  database \"", db, "\" was used by the tests of ", agents.size(), " agents (",
                      absl::StrJoin(agents, ", "), "): they share it and may trample one another's data.\n");
    }
    for (const HandoffFinding& f : all) {
      if (f.kind == HandoffFinding::Kind::kForeignDatabase && f.database == db) {
        absl::StrAppend(&out, "  - ", f.message, "\n");
      }
    }
  }
  for (const HandoffFinding& f : all) {
    if (f.kind == HandoffFinding::Kind::kLeftoverTables) absl::StrAppend(&out, "  - ", f.message, "\n");
  }
  for (const HandoffFinding& f : all) {
    if (f.kind == HandoffFinding::Kind::kNote) absl::StrAppend(&out, "  note: ", f.message, "\n");
  }
  if (serious) {
    absl::StrAppend(&out, mode_ == DatabaseConfig::HandoffCheck::kFail
                              ? "  The run fails because of this (database.handoff_check = \"fail\"; \"warn\" only "
                                "reports it).\n"
                              : "  (database.handoff_check = \"warn\": reported, the run's outcome is the tests'.)\n");
  }
  return out;
}

std::optional<TestSuite> HandoffReport::Suite() const {
  std::vector<HandoffFinding> all = findings();
  TestSuite suite;
  suite.name = "testshard.handoff";
  std::map<std::string, TestCase> by_name;  // one case per foreign database: its agents' messages together
  for (const HandoffFinding& f : all) {
    if (!Serious(f)) continue;
    std::string name = f.kind == HandoffFinding::Kind::kForeignDatabase
                           ? absl::StrCat("foreign_database[", f.database, "]")
                           : absl::StrCat("leftover_tables[", f.agent, "]");
    TestCase& tc = by_name[name];
    if (tc.id.empty()) {
      tc.id = "testshard.handoff::" + name;
      tc.classname = "testshard.handoff";
      tc.name = name;
      bool fail = mode_ == DatabaseConfig::HandoffCheck::kFail;
      tc.result.outcome = fail ? Outcome::kError : Outcome::kSkipped;
      tc.result.type = "testshard.Handoff";
      tc.result.message = f.kind == HandoffFinding::Kind::kForeignDatabase
                              ? absl::StrCat("tests used database \"", f.database,
                                             "\", not the one testshard handed them")
                              : absl::StrCat("tests failed on tables an earlier shard left (agent ", f.agent, ")");
      if (!fail) tc.result.message = "warning: " + tc.result.message;
    }
    absl::StrAppend(&tc.result.details, tc.result.details.empty() ? "" : "\n\n", f.message);
  }
  if (by_name.empty()) return std::nullopt;
  for (auto& [name, tc] : by_name) suite.cases.push_back(std::move(tc));
  return suite;
}

}  // namespace testshard::coordinator
