#include "common/config.h"

#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard {
namespace {

using ::testing::HasSubstr;
using ::testshard::testing::IsOk;
using ::testshard::testing::StatusIs;
constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;

constexpr char kGood[] = R"(
command = ["/usr/bin/python3", "-m", "pytest"]
workdir = "app"
agents = 3

[env]
LOG_LEVEL = "WARNING"

[database]
role = "app_user"
setup = [["/usr/bin/python3", "-m", "alembic", "upgrade", "head"]]
template_inputs = ["alembic/**"]
env = { SQLALCHEMY_DATABASE_TEST_URL = "{url}" }

[[stages]]
name = "unit-critical"
markers = "unit and critical"
maxfail = 5
timeout = "2m"

[[stages]]
name = "slow"
markers = "slow"
branches = ["main"]
continue_on_failure = true
)";

TEST(ConfigTest, ParsesEveryField) {
  TS_ASSERT_OK_AND_ASSIGN(Config c, ParseConfig(kGood, "/proj/testshard.toml"));
  EXPECT_EQ(c.command, (std::vector<std::string>{"/usr/bin/python3", "-m", "pytest"}));
  EXPECT_EQ(c.workdir, "/proj/app");
  EXPECT_EQ(c.project, "proj");
  EXPECT_EQ(c.agents, 3);
  EXPECT_EQ(c.env.at("LOG_LEVEL"), "WARNING");
  EXPECT_EQ(c.database.mode, DatabaseConfig::Mode::kEmbedded);
  EXPECT_EQ(c.database.role, "app_user");
  EXPECT_EQ(c.database.setup.size(), 1u);
  EXPECT_EQ(c.database.env.at("SQLALCHEMY_DATABASE_TEST_URL"), "{url}");
  ASSERT_EQ(c.stages.size(), 2u);
  EXPECT_EQ(c.stages[0].name, "unit-critical");
  EXPECT_EQ(c.stages[0].maxfail, 5);
  EXPECT_EQ(c.stages[0].timeout, absl::Minutes(2));
  EXPECT_EQ(c.stages[1].branches, std::vector<std::string>{"main"});
  EXPECT_TRUE(c.stages[1].continue_on_failure);
}

TEST(ConfigTest, ReadsToolTestshardFromPyproject) {
  std::string text = R"([tool.pytest.ini_options]
addopts = "-q"

[tool.testshard]
command = ["pytest"]

[[tool.testshard.stages]]
name = "all"
)";
  TS_ASSERT_OK_AND_ASSIGN(Config c, ParseConfig(text, "/p/pyproject.toml"));
  EXPECT_EQ(c.stages[0].name, "all");
  EXPECT_EQ(c.database.mode, DatabaseConfig::Mode::kNone);
  EXPECT_THAT(ParseConfig("[tool.pytest]\nx = 1\n", "/p/pyproject.toml"),
              StatusIs(kInvalid, HasSubstr("no [tool.testshard]")));
}

TEST(ConfigTest, UnknownKeyNamesFileKeyAndLine) {
  std::string text = "command = [\"pytest\"]\n[[stages]]\nname = \"a\"\nmaxfial = 3\n";
  EXPECT_THAT(ParseConfig(text, "t.toml"),
              StatusIs(kInvalid, HasSubstr("t.toml:4: stages[0].maxfial: unknown key")));
}

TEST(ConfigTest, WrongTypeNamesFileKeyAndLine) {
  std::string text = "command = [\"pytest\"]\n\n[[stages]]\nname = \"a\"\nmaxfail = \"three\"\n";
  EXPECT_THAT(ParseConfig(text, "t.toml"),
              StatusIs(kInvalid, HasSubstr("t.toml:5: stages[0].maxfail: expected an integer, got a string")));
  EXPECT_THAT(ParseConfig("command = \"pytest -q\"\n[[stages]]\nname=\"a\"\n", "t.toml"),
              StatusIs(kInvalid, HasSubstr("t.toml:1: command: expected an array of strings")));
}

TEST(ConfigTest, SyntaxErrorNamesLine) {
  EXPECT_THAT(ParseConfig("command = [\"pytest\"\n", "t.toml"), StatusIs(kInvalid, HasSubstr("t.toml:")));
}

TEST(ConfigTest, MissingPiecesAreRefused) {
  EXPECT_THAT(ParseConfig("[[stages]]\nname = \"a\"\n", "t.toml"), StatusIs(kInvalid, HasSubstr("command: missing")));
  EXPECT_THAT(ParseConfig("command = [\"pytest\"]\n", "t.toml"), StatusIs(kInvalid, HasSubstr("stages: missing")));
  EXPECT_THAT(ParseConfig("command = []\n[[stages]]\nname = \"a\"\n", "t.toml"),
              StatusIs(kInvalid, HasSubstr("non-empty argv")));
  EXPECT_THAT(ParseConfig("command = [\"p\"]\n[[stages]]\nname = \"a\"\n[[stages]]\nname = \"a\"\n", "t.toml"),
              StatusIs(kInvalid, HasSubstr("t.toml:5: stages[1].name: duplicate stage")));
  EXPECT_THAT(ParseConfig("command = [\"p\"]\n[database]\nrole = \"x\"\n[[stages]]\nname = \"a\"\n", "t.toml"),
              StatusIs(kInvalid, HasSubstr("database.env")));
}

// [database] keys of the hand-off: how the tests reach the server, pytest-django's test database, the check.
std::string Db(const std::string& keys) {
  return "command = [\"p\"]\n[database]\nenv = { DB_NAME = \"{dbname}\" }\n" + keys + "\n[[stages]]\nname = \"a\"\n";
}

TEST(ConfigTest, HandoffKeysDefaultToSocketNoDjangoAndFail) {
  TS_ASSERT_OK_AND_ASSIGN(Config c, ParseConfig(Db(""), "t.toml"));
  EXPECT_EQ(c.database.transport, DatabaseConfig::Transport::kAuto);
  EXPECT_EQ(c.database.django_test_db, DatabaseConfig::DjangoTestDb::kNone);
  EXPECT_EQ(c.database.handoff_check, DatabaseConfig::HandoffCheck::kFail);
}

TEST(ConfigTest, HandoffKeysAreRead) {
  TS_ASSERT_OK_AND_ASSIGN(
      Config c, ParseConfig(Db("transport = \"tcp\"\ndjango_test_db = \"reuse\"\nhandoff_check = \"warn\""), "t.toml"));
  EXPECT_EQ(c.database.transport, DatabaseConfig::Transport::kTcp);
  EXPECT_EQ(c.database.django_test_db, DatabaseConfig::DjangoTestDb::kReuse);
  EXPECT_EQ(c.database.handoff_check, DatabaseConfig::HandoffCheck::kWarn);
  EXPECT_EQ(TransportName(c.database.transport), "tcp");
  EXPECT_EQ(DjangoTestDbName(c.database.django_test_db), "reuse");
  EXPECT_EQ(HandoffCheckName(c.database.handoff_check), "warn");
}

TEST(ConfigTest, BadHandoffValuesNameTheKeyAndLine) {
  EXPECT_THAT(ParseConfig(Db("transport = \"udp\""), "t.toml"),
              StatusIs(kInvalid, HasSubstr("t.toml:4: database.transport: expected \"socket\", \"tcp\", got \"udp\"")));
  EXPECT_THAT(ParseConfig(Db("django_test_db = \"keep\""), "t.toml"),
              StatusIs(kInvalid, HasSubstr("database.django_test_db: expected \"create\", \"reuse\"")));
  EXPECT_THAT(ParseConfig(Db("handoff_check = true"), "t.toml"),
              StatusIs(kInvalid, HasSubstr("database.handoff_check: expected a string")));
}

TEST(ConfigTest, TransportMustAgreeWithTheServersUrl) {
  EXPECT_THAT(ParseConfig(Db("mode = \"server\"\nurl = \"postgresql://u@/postgres?host=/run/pg\"\ntransport = \"tcp\""),
                          "t.toml"),
              StatusIs(kInvalid, HasSubstr("reaches the server over the unix socket in /run/pg")));
  EXPECT_THAT(ParseConfig(Db("mode = \"server\"\nurl = \"postgresql://u@db:5432/postgres\"\ntransport = \"socket\""),
                          "t.toml"),
              StatusIs(kInvalid, HasSubstr("over TCP at db")));
  EXPECT_THAT(ParseConfig(Db("mode = \"server\"\nurl = \"postgresql://u@db:5432/postgres\"\ntransport = \"tcp\""),
                          "t.toml"),
              IsOk());
}

TEST(ConfigTest, BadMarkerExpressionIsRefusedWithLine) {
  std::string text = "command = [\"p\"]\n[[stages]]\nname = \"a\"\nmarkers = \"unit and\"\n";
  EXPECT_THAT(ParseConfig(text, "t.toml"), StatusIs(kInvalid, HasSubstr("t.toml:4: stages[0].markers: bad marker")));
}

// Planning keys: where the history lives, and how a stage may be cut.
TEST(ConfigTest, PlanningKeysDefaultToTheProjectsFileStoreAndSingleTests) {
  TS_ASSERT_OK_AND_ASSIGN(Config c, ParseConfig(kGood, "/proj/testshard.toml"));
  EXPECT_EQ(HistoryStoreSpec(c), "file:/proj/.testshard");
  EXPECT_EQ(c.stages[0].granularity, "test");
  EXPECT_EQ(c.stages[0].group_marker, "");
}

TEST(ConfigTest, PlanningKeysAreRead) {
  std::string text = "command = [\"p\"]\nhistory = \"file:.cache/durations\"\n[[stages]]\nname = \"a\"\n"
                     "granularity = \"module\"\ngroup_marker = \"serial_group\"\n";
  TS_ASSERT_OK_AND_ASSIGN(Config c, ParseConfig(text, "/proj/sub/testshard.toml"));
  EXPECT_EQ(HistoryStoreSpec(c), "file:/proj/sub/.cache/durations");
  EXPECT_EQ(c.stages[0].granularity, "module");
  EXPECT_EQ(c.stages[0].group_marker, "serial_group");
  c.history = "redis://cache:6379/2";
  EXPECT_EQ(HistoryStoreSpec(c), "redis://cache:6379/2");
  c.history = "file:/var/lib/testshard";
  EXPECT_EQ(HistoryStoreSpec(c), "file:/var/lib/testshard");
}

TEST(ConfigTest, BadPlanningValuesNameTheKeyAndLine) {
  EXPECT_THAT(ParseConfig("command = [\"p\"]\nhistory = \"s3://bucket\"\n[[stages]]\nname = \"a\"\n", "t.toml"),
              StatusIs(kInvalid, HasSubstr("t.toml:2: history: expected file:DIR")));
  EXPECT_THAT(ParseConfig("command = [\"p\"]\n[[stages]]\nname = \"a\"\ngranularity = \"file\"\n", "t.toml"),
              StatusIs(kInvalid, HasSubstr("t.toml:4: stages[0].granularity: expected \"test\", \"class\"")));
  EXPECT_THAT(ParseConfig("command = [\"p\"]\n[[stages]]\nname = \"a\"\ngroup_marker = \"a b\"\n", "t.toml"),
              StatusIs(kInvalid, HasSubstr("t.toml:4: stages[0].group_marker: expected a marker name")));
}

TEST(MarkerExpressionTest, AcceptsPytestGrammar) {
  for (const char* ok : {"", "unit", "unit and critical", "integration and not slow", "not (a or b) and c",
                         "(slow)", "not not x"}) {
    EXPECT_THAT(ValidateMarkerExpression(ok), IsOk()) << ok;
  }
  for (const char* bad : {"and", "unit and", "(unit", "unit)", "unit critical", "not", "a or or b"}) {
    EXPECT_THAT(ValidateMarkerExpression(bad), StatusIs(kInvalid, HasSubstr("column"))) << bad;
  }
}

}  // namespace
}  // namespace testshard

namespace testshard {
namespace {

constexpr char kDatabaseHead[] = "command = [\"p\"]\n[database]\nenv = { DATABASE_URL = \"{url}\" }\n";
constexpr char kOneStage[] = "[[stages]]\nname = \"a\"\n";

TEST(DatabaseConfigTest, ParsesIsolationKeys) {
  std::string text = std::string(kDatabaseHead) + R"(reset = "shard"
pool_size = 4
keep_templates = 2
clone_strategy = "wal_log"
setup_timeout = "5m"
settings = { timezone = "UTC", "app.tenant_mode" = "strict" }
grants = { reporting = "connect, temporary" }
bin_dir = "/usr/lib/postgresql/15/bin"
data_dir = "/var/tmp"
tcp = true
max_connections = 400
reuse_templates = false
[[stages]]
name = "unit"
reset = "agent"
[[stages]]
name = "security"
)";
  TS_ASSERT_OK_AND_ASSIGN(Config c, ParseConfig(text, "/p/testshard.toml"));
  const DatabaseConfig& d = c.database;
  EXPECT_EQ(d.reset, "shard");
  EXPECT_EQ(d.pool_size, 4);
  EXPECT_EQ(d.keep_templates, 2);
  EXPECT_EQ(d.clone_strategy, "wal_log");
  EXPECT_EQ(d.setup_timeout, absl::Minutes(5));
  EXPECT_EQ(d.settings.at("app.tenant_mode"), "strict");
  EXPECT_EQ(d.grants.at("reporting"), "CONNECT, TEMPORARY");
  EXPECT_EQ(d.bin_dir, "/usr/lib/postgresql/15/bin");
  EXPECT_EQ(d.data_dir, "/var/tmp");
  EXPECT_TRUE(d.tcp);
  EXPECT_EQ(d.max_connections, 400);
  EXPECT_FALSE(d.reuse_templates);
  EXPECT_EQ(c.stages[0].reset, "agent");
  EXPECT_EQ(c.stages[1].reset, "");  // = database.reset
}

TEST(DatabaseConfigTest, DefaultsSuitAWorkstation) {
  TS_ASSERT_OK_AND_ASSIGN(Config c, ParseConfig(std::string(kDatabaseHead) + kOneStage, "/p/testshard.toml"));
  EXPECT_EQ(c.database.mode, DatabaseConfig::Mode::kEmbedded);
  EXPECT_EQ(c.database.reset, "agent");
  EXPECT_EQ(c.database.pool_size, 2);
  EXPECT_EQ(c.database.keep_templates, 3);
  EXPECT_EQ(c.database.clone_strategy, "auto");
  EXPECT_EQ(c.database.setup_timeout, absl::Minutes(30));
  EXPECT_TRUE(c.database.reuse_templates);
}

TEST(DatabaseConfigTest, BadValuesNameKeyAndLine) {
  auto parse = [](const std::string& lines) {
    return ParseConfig(std::string(kDatabaseHead) + lines + "\n" + kOneStage, "t.toml");
  };
  EXPECT_THAT(parse("reset = \"test\""), StatusIs(kInvalid, HasSubstr("t.toml:4: database.reset: expected \"agent\"")));
  EXPECT_THAT(parse("clone_strategy = \"copy\""), StatusIs(kInvalid, HasSubstr("t.toml:4: database.clone_strategy")));
  EXPECT_THAT(parse("reuse_templates = \"yes\""),
              StatusIs(kInvalid, HasSubstr("t.toml:4: database.reuse_templates: expected")));
  EXPECT_THAT(parse("pool_size = -1"), StatusIs(kInvalid, HasSubstr("database.pool_size: must be at least 0")));
  EXPECT_THAT(parse("keep_templates = 0"),
              StatusIs(kInvalid, HasSubstr("database.keep_templates: must be at least 1")));
  EXPECT_THAT(parse("grants = { app = \"SELECT\" }"), StatusIs(kInvalid, HasSubstr("database.grants.app")));
  EXPECT_THAT(parse("settings = { \"a;b\" = \"x\" }"), StatusIs(kInvalid, HasSubstr("database.settings.a;b")));
  EXPECT_THAT(parse("url = \"postgresql://[::1/db\""), StatusIs(kInvalid, HasSubstr("database.url")));
  std::string bad_env = "command = [\"p\"]\n[database]\nenv = { U = \"{uri}\" }\n" + std::string(kOneStage);
  EXPECT_THAT(ParseConfig(bad_env, "t.toml"), StatusIs(kInvalid, HasSubstr("database.env.U: unknown placeholder {uri}")));
  EXPECT_THAT(ParseConfig(std::string(kDatabaseHead) + kOneStage + "reset = \"always\"\n", "t.toml"),
              StatusIs(kInvalid, HasSubstr("stages[0].reset")));
}


constexpr char kStages[] = R"(
[[stages]]
name = "all"
)";

absl::StatusOr<Config> WithCoverage(const std::string& table) {
  return ParseConfig("command = [\"pytest\"]\n" + table + kStages, "/proj/testshard.toml");
}

TEST(CoverageConfigTest, OffWithoutATable) {
  TS_ASSERT_OK_AND_ASSIGN(Config c, WithCoverage(""));
  EXPECT_FALSE(c.coverage.enabled);
}

TEST(CoverageConfigTest, ATableTurnsItOnWithCoberturaByDefault) {
  TS_ASSERT_OK_AND_ASSIGN(Config c, WithCoverage("[coverage]\nsource = [\"app\"]\n"));
  EXPECT_TRUE(c.coverage.enabled);
  EXPECT_EQ(c.coverage.source, std::vector<std::string>{"app"});
  EXPECT_FALSE(c.coverage.branch);
  EXPECT_EQ(c.coverage.cobertura, "/proj/coverage.xml");
  EXPECT_EQ(c.coverage.lcov, "");
}

TEST(CoverageConfigTest, ReadsEveryKeyWithOutputsRelativeToTheConfig) {
  TS_ASSERT_OK_AND_ASSIGN(Config c, WithCoverage(R"([coverage]
source = ["app", "lib/util"]
branch = true
lcov = "out/coverage.lcov"
upload_timeout = "30s"
)"));
  EXPECT_EQ(c.coverage.source, (std::vector<std::string>{"app", "lib/util"}));
  EXPECT_TRUE(c.coverage.branch);
  EXPECT_EQ(c.coverage.cobertura, "");  // only what was asked for
  EXPECT_EQ(c.coverage.lcov, "/proj/out/coverage.lcov");
  EXPECT_EQ(c.coverage.upload_timeout, absl::Seconds(30));
}

TEST(CoverageConfigTest, ReadFromToolTestshardCoverageInPyproject) {
  TS_ASSERT_OK_AND_ASSIGN(Config c, ParseConfig(R"([tool.testshard]
command = ["pytest"]
[tool.testshard.coverage]
source = ["app"]
enabled = false
[[tool.testshard.stages]]
name = "all"
)", "/proj/pyproject.toml"));
  EXPECT_FALSE(c.coverage.enabled);
  EXPECT_EQ(c.coverage.source, std::vector<std::string>{"app"});
}

TEST(CoverageConfigTest, BadValuesNameTheFileKeyAndLine) {
  struct Case {
    const char* table;
    const char* want;
  } cases[] = {
      {"[coverage]\nsorce = [\"app\"]\n", "/proj/testshard.toml:3: coverage.sorce: unknown key"},
      {"[coverage]\nsource = \"app\"\n", "/proj/testshard.toml:3: coverage.source: expected an array of strings"},
      {"[coverage]\nsource = [1]\n", "coverage.source[0]: expected a string, got an integer"},
      {"[coverage]\nsource = [\"\"]\n", "/proj/testshard.toml:3: coverage.source: expected package names"},
      {"[coverage]\nsource = [\"/abs/app\"]\n", "coverage.source: expected package names or paths relative"},
      {"[coverage]\nbranch = \"yes\"\n", "/proj/testshard.toml:3: coverage.branch: expected true or false"},
      {"[coverage]\ncobertura = 1\n", "/proj/testshard.toml:3: coverage.cobertura: expected a string"},
      {"[coverage]\nlcov = \"\"\n", "/proj/testshard.toml:3: coverage.lcov: expected a file name"},
      {"[coverage]\nupload_timeout = -1\n", "coverage.upload_timeout: must not be negative"},
      {"coverage = true\n", "/proj/testshard.toml:2: coverage: expected a table, got a boolean"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(WithCoverage(c.table), StatusIs(kInvalid, HasSubstr(c.want))) << c.table;
  }
}

}  // namespace
}  // namespace testshard
