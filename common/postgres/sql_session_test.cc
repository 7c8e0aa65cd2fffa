// SQLSTATE and connection-failure mapping, and literal quoting. (Sessions against a real server are exercised by
// the provisioner's tests.)
#include "common/postgres/sql_session.h"

#include "common/testing/status_matchers.h"
#include "gtest/gtest.h"

namespace testshard::pg {
namespace {

using ::testing::HasSubstr;
using ::testshard::testing::StatusIs;

TEST(SqlErrorTest, MapsSqlStatesToCanonicalCodes) {
  EXPECT_THAT(SqlError("42501", "permission denied to create database", "ctx"),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("ctx: permission denied")));
  EXPECT_THAT(SqlError("53100", "could not extend file", ""),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("extend")));
  EXPECT_THAT(SqlError("58030", "could not write: No space left on device", ""),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("No space")));
  EXPECT_THAT(SqlError("55006", "source database is being accessed by other users", ""),
              StatusIs(absl::StatusCode::kAborted, HasSubstr("accessed")));
  EXPECT_THAT(SqlError("57P01", "terminating connection due to administrator command", ""),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("administrator")));
  EXPECT_THAT(SqlError("08006", "connection failure", ""),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("failure")));
  EXPECT_THAT(SqlError("3D000", "database does not exist", ""),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("exist")));
  EXPECT_THAT(SqlError("42P04", "database exists", ""),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("exists")));
  EXPECT_THAT(SqlError("42601", "syntax error", ""), StatusIs(absl::StatusCode::kInternal, HasSubstr("syntax")));
}

TEST(SqlSessionTest, UnreachableServerIsUnavailable) {
  Connection nowhere;
  nowhere.host = "/nonexistent-socket-dir";
  nowhere.port = 5;
  nowhere.user = "u";
  nowhere.dbname = "d";
  EXPECT_THAT(SqlSession::Open(nowhere),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("cannot reach PostgreSQL")));
}

TEST(QuoteTest, LiteralsAndConninfoValues) {
  EXPECT_EQ(QuoteLiteral("it's"), "'it''s'");
  EXPECT_EQ(QuoteLiteral("a\\b"), "E'a\\\\b'");
  EXPECT_EQ(QuoteConninfo("a'b"), "'a\\'b'");
}

}  // namespace
}  // namespace testshard::pg
