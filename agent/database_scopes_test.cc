// The reset policies over a fake provisioner: which leases share a database, and when databases go back.
#include "agent/database_scopes.h"

#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::agent {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testshard::testing::StatusIs;

class FakeProvisioner : public DatabaseProvisioner {
 public:
  absl::StatusOr<PrepareReport> Prepare() override { return PrepareReport{}; }
  absl::StatusOr<Database> Acquire(std::string_view use) override {
    if (!acquire_error.ok()) return acquire_error;
    Database db;
    db.name = absl::StrCat("db", ++made, "_", std::string(use));
    held.insert(db.name);
    return db;
  }
  void Release(const Database& db) override {
    released.push_back(db.name);
    held.erase(db.name);
  }
  absl::Status CheckHealth() override { return health; }

  int made = 0;
  std::set<std::string> held;
  std::vector<std::string> released;
  absl::Status health;
  absl::Status acquire_error;
};

TEST(DatabaseScopesTest, AgentPolicySharesOneDatabaseAcrossLeasesAndStages) {
  FakeProvisioner p;
  DatabaseScopes scopes(&p);
  TS_ASSERT_OK_AND_ASSIGN(Database a, scopes.ForLease("lease-1", "unit", ResetPolicy::kAgent));
  scopes.Done("lease-1");
  TS_ASSERT_OK_AND_ASSIGN(Database b, scopes.ForLease("lease-2", "integration", ResetPolicy::kAgent));
  scopes.Done("lease-2");
  EXPECT_EQ(a.name, b.name);
  EXPECT_EQ(p.made, 1);
  EXPECT_THAT(p.released, IsEmpty());
  scopes.ReleaseAll();
  EXPECT_THAT(p.released, ElementsAre(a.name));
}

TEST(DatabaseScopesTest, ShardPolicyGivesEachLeaseAFreshDatabaseAndTakesItBack) {
  FakeProvisioner p;
  DatabaseScopes scopes(&p);
  TS_ASSERT_OK_AND_ASSIGN(Database a, scopes.ForLease("lease-1", "security", ResetPolicy::kShard));
  EXPECT_EQ(a.name, "db1_lease-1");
  scopes.Done("lease-1");
  TS_ASSERT_OK_AND_ASSIGN(Database b, scopes.ForLease("lease-2", "security", ResetPolicy::kShard));
  EXPECT_NE(a.name, b.name);
  EXPECT_THAT(p.released, ElementsAre(a.name));
  scopes.Done("lease-2");
  EXPECT_THAT(p.held, IsEmpty());
}

TEST(DatabaseScopesTest, StagePolicyKeepsTheDatabaseWithinAStageAndReplacesItForTheNext) {
  FakeProvisioner p;
  DatabaseScopes scopes(&p);
  TS_ASSERT_OK_AND_ASSIGN(Database a1, scopes.ForLease("lease-1", "integration", ResetPolicy::kStage));
  scopes.Done("lease-1");
  TS_ASSERT_OK_AND_ASSIGN(Database a2, scopes.ForLease("lease-2", "integration", ResetPolicy::kStage));
  scopes.Done("lease-2");
  EXPECT_EQ(a1.name, a2.name);
  TS_ASSERT_OK_AND_ASSIGN(Database b, scopes.ForLease("lease-3", "security", ResetPolicy::kStage));
  EXPECT_NE(a1.name, b.name);
  EXPECT_THAT(p.released, ElementsAre(a1.name));
}

TEST(DatabaseScopesTest, AKeptDatabaseOnADeadServerIsAnError) {
  FakeProvisioner p;
  DatabaseScopes scopes(&p);
  ASSERT_TRUE(scopes.ForLease("lease-1", "unit", ResetPolicy::kAgent).ok());
  p.health = absl::UnavailableError("the database server: went away");
  EXPECT_THAT(scopes.ForLease("lease-2", "unit", ResetPolicy::kAgent),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::HasSubstr("went away")));
}

TEST(DatabaseScopesTest, AcquireFailureIsReturned) {
  FakeProvisioner p;
  p.acquire_error = absl::ResourceExhaustedError("disk full");
  DatabaseScopes scopes(&p);
  EXPECT_THAT(scopes.ForLease("lease-1", "unit", ResetPolicy::kShard),
              StatusIs(absl::StatusCode::kResourceExhausted, ::testing::HasSubstr("disk full")));
  scopes.Done("lease-1");  // nothing to give back
  EXPECT_THAT(p.released, IsEmpty());
}

}  // namespace
}  // namespace testshard::agent
