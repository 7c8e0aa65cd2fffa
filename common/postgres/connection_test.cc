#include "common/postgres/connection.h"

#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::pg {
namespace {

using ::testing::HasSubstr;
using ::testshard::testing::StatusIs;

Connection Socket() {
  Connection c;
  c.host = "/tmp/ts dir";
  c.port = 5433;
  c.user = "app_user";
  c.dbname = "ts_run1_a0";
  return c;
}

TEST(ConnectionTest, SocketUrlCarriesHostAndPortAsParameters) {
  EXPECT_EQ(Socket().Url(), "postgresql://app_user@/ts_run1_a0?host=%2Ftmp%2Fts%20dir&port=5433");
  EXPECT_EQ(Socket().Url("postgresql+psycopg2"),
            "postgresql+psycopg2://app_user@/ts_run1_a0?host=%2Ftmp%2Fts%20dir&port=5433");
}

TEST(ConnectionTest, TcpUrlEncodesCredentials) {
  Connection c = Socket();
  c.host = "127.0.0.1";
  c.password = "p@ss:w/rd";
  EXPECT_EQ(c.Url(), "postgresql://app_user:p%40ss%3Aw%2Frd@127.0.0.1:5433/ts_run1_a0");
}

TEST(ConnectionTest, UrlRoundTripsThroughLibpq) {
  Connection c = Socket();
  c.password = "it's \"x\"";
  TS_ASSERT_OK_AND_ASSIGN(Connection back, ParseConnection(c.Url()));
  EXPECT_EQ(back.host, c.host);
  EXPECT_EQ(back.port, c.port);
  EXPECT_EQ(back.user, c.user);
  EXPECT_EQ(back.password, c.password);
  EXPECT_EQ(back.dbname, c.dbname);
  TS_ASSERT_OK_AND_ASSIGN(Connection again, ParseConnection(c.Conninfo()));
  EXPECT_EQ(again.password, c.password);
  EXPECT_THAT(ParseConnection("postgresql://h/db?nosuchparam=1"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad PostgreSQL URL")));
}

TEST(ConnectionTest, TemplatesRenderEveryPlaceholder) {
  TS_ASSERT_OK_AND_ASSIGN(std::string s, RenderTemplate("{host}|{port}|{user}|{dbname}|{socket_dir}|{{x}}", Socket()));
  EXPECT_EQ(s, "/tmp/ts dir|5433|app_user|ts_run1_a0|/tmp/ts dir|{x}");
  TS_ASSERT_OK_AND_ASSIGN(s, RenderTemplate("{asyncpg_url}", Socket()));
  EXPECT_EQ(s, "postgresql+asyncpg://app_user@/ts_run1_a0?host=%2Ftmp%2Fts%20dir&port=5433");
  EXPECT_THAT(ValidateTemplate("{uri}"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown placeholder {uri}")));
  EXPECT_THAT(ValidateTemplate("{url"), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unclosed")));
}

TEST(ConnectionTest, QuoteIdentDoublesQuotes) { EXPECT_EQ(QuoteIdent("a\"b"), "\"a\"\"b\""); }

}  // namespace
}  // namespace testshard::pg
