// What only the Redis store has to show: URL parsing, and errors when the server is missing or refuses us.
#include "common/history/redis_history_store.h"

#include "common/testing/redis_server.h"
#include "common/status.h"
#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::history {
namespace {

using ::testing::HasSubstr;
using ::testshard::testing::IsOk;
using ::testshard::testing::StatusIs;

TEST(ParseRedisUrlTest, TcpWithPasswordPortAndDb) {
  TS_ASSERT_OK_AND_ASSIGN(RedisAddress a, ParseRedisUrl("redis://:s3cret@cache.internal:6380/2"));
  EXPECT_EQ(a.host, "cache.internal");
  EXPECT_EQ(a.port, 6380);
  EXPECT_EQ(a.password, "s3cret");
  EXPECT_EQ(a.db, 2);
  EXPECT_TRUE(a.unix_socket.empty());
}

TEST(ParseRedisUrlTest, DefaultsToLocalhost6379) {
  TS_ASSERT_OK_AND_ASSIGN(RedisAddress a, ParseRedisUrl("redis://"));
  EXPECT_EQ(a.host, "127.0.0.1");
  EXPECT_EQ(a.port, 6379);
  EXPECT_EQ(a.db, 0);
}

TEST(ParseRedisUrlTest, UnixSocketForms) {
  for (const char* url : {"unix:/run/r.sock?db=3", "unix:///run/r.sock?db=3", "redis+unix:///run/r.sock?db=3"}) {
    TS_ASSERT_OK_AND_ASSIGN(RedisAddress a, ParseRedisUrl(url));
    EXPECT_EQ(a.unix_socket, "/run/r.sock") << url;
    EXPECT_EQ(a.db, 3) << url;
  }
}

TEST(ParseRedisUrlTest, BadUrlsAreInvalidArgument) {
  EXPECT_THAT(ParseRedisUrl("http://x"), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(ParseRedisUrl("redis://h:port"), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(ParseRedisUrl("unix:relative.sock"), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(ParseRedisUrl("unix:/r.sock?colour=red"), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST(RedisHistoryStoreTest, MissingServerIsUnavailable) {
  RedisAddress a;
  a.unix_socket = "/tmp/testshard-no-such-dir/redis.sock";
  EXPECT_THAT(RedisHistoryStore::Connect(a), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("redis")));
}

TEST(RedisHistoryStoreTest, WrongPasswordIsPermissionDenied) {
  TS_ASSERT_OK_AND_ASSIGN(auto server, testing::RedisServer::Start("requirepass right-one"));
  TS_ASSERT_OK_AND_ASSIGN(RedisAddress a, ParseRedisUrl(server->url() + "?password=wrong"));
  EXPECT_THAT(RedisHistoryStore::Connect(a), StatusIs(absl::StatusCode::kPermissionDenied, ::testing::_));
  TS_ASSERT_OK_AND_ASSIGN(RedisAddress good, ParseRedisUrl(server->url() + "?password=right-one"));
  EXPECT_THAT(RedisHistoryStore::Connect(good), IsOk());
}

TEST(RedisHistoryStoreTest, ServerGoneIsUnavailable) {
  TS_ASSERT_OK_AND_ASSIGN(auto server, testing::RedisServer::Start());
  TS_ASSERT_OK_AND_ASSIGN(RedisAddress a, ParseRedisUrl(server->url()));
  TS_ASSERT_OK_AND_ASSIGN(auto store, RedisHistoryStore::Connect(a));
  Sample s{"t", 1, Outcome::kPassed, absl::FromUnixSeconds(1)};
  ASSERT_THAT(store->Update("p", {s}), IsOk());
  // The server goes away: the store says so with kUnavailable rather than crashing or hanging.
  server.reset();
  EXPECT_THAT(store->Update("p", {s}), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
  EXPECT_THAT(store->ReadAll("p"), StatusIs(absl::StatusCode::kUnavailable, ::testing::_));
}

}  // namespace
}  // namespace testshard::history
