// What only the PostgreSQL store has to show: errors when the server is missing or goes away, and concurrent
// first connects creating the table once.
#include "common/history/postgres_history_store.h"

#include <thread>

#include "common/postgres/embedded_postgres.h"
#include "common/status.h"
#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::history {
namespace {

using ::testshard::testing::IsOk;
using ::testshard::testing::StatusIs;

TEST(PostgresHistoryStoreTest, MissingServerIsUnavailable) {
  EXPECT_THAT(PostgresHistoryStore::Connect("host=/tmp/testshard-no-such-dir dbname=x connect_timeout=2"),
              StatusIs(absl::StatusCode::kUnavailable, ::testing::HasSubstr("PostgreSQL")));
}

TEST(PostgresHistoryStoreTest, BadSpecIsInvalidArgument) {
  EXPECT_THAT(OpenHistoryStore("mysql://x"), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST(PostgresHistoryStoreTest, ConcurrentFirstConnectsCreateTheTableOnce) {
  TS_ASSERT_OK_AND_ASSIGN(auto server, pg::EmbeddedPostgres::Start(pg::EmbeddedOptions{}));
  std::vector<absl::Status> results(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] { results[i] = OpenHistoryStore(server->admin().Url()).status(); });
  }
  for (auto& t : threads) t.join();
  for (const absl::Status& s : results) EXPECT_THAT(s, IsOk());
}

TEST(PostgresHistoryStoreTest, ServerGoneIsUnavailableNotACrash) {
  TS_ASSERT_OK_AND_ASSIGN(auto server, pg::EmbeddedPostgres::Start(pg::EmbeddedOptions{}));
  TS_ASSERT_OK_AND_ASSIGN(auto store, OpenHistoryStore(server->admin().Url()));
  Sample s{"t", 1, Outcome::kPassed, absl::FromUnixSeconds(1)};
  ASSERT_THAT(store->Update("p", {s}), IsOk());
  ASSERT_THAT(server->Stop(), IsOk());
  EXPECT_THAT(store->Update("p", {s}), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_THAT(store->ReadAll("p"), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
}

}  // namespace
}  // namespace testshard::history
