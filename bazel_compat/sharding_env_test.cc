#include "bazel_compat/sharding_env.h"

#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::bazel_compat {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testshard::testing::IsOk;
using ::testshard::testing::StatusIs;
constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;

TEST(ShardingEnvTest, NothingSetMeansNotSharded) {
  TS_ASSERT_OK_AND_ASSIGN(ShardingEnv env, ParseShardingEnv({{"PATH", "/usr/bin"}}));
  EXPECT_FALSE(env.shard.has_value());
  EXPECT_THAT(env.status_file, IsEmpty());
  EXPECT_THAT(env.xml_output_file, IsEmpty());
}

TEST(ShardingEnvTest, ReadsAllFourVariables) {
  TS_ASSERT_OK_AND_ASSIGN(ShardingEnv env, ParseShardingEnv({{"TEST_TOTAL_SHARDS", "3"},
                                                             {"TEST_SHARD_INDEX", "2"},
                                                             {"TEST_SHARD_STATUS_FILE", "/tmp/s"},
                                                             {"XML_OUTPUT_FILE", "/tmp/test.xml"}}));
  ASSERT_TRUE(env.shard.has_value());
  EXPECT_EQ(env.shard->index, 2);
  EXPECT_EQ(env.shard->total, 3);
  EXPECT_EQ(env.status_file, "/tmp/s");
  EXPECT_EQ(env.xml_output_file, "/tmp/test.xml");
}

TEST(ShardingEnvTest, OneShardOfOneIsValid) {
  TS_ASSERT_OK_AND_ASSIGN(ShardingEnv env, ParseShardingEnv({{"TEST_TOTAL_SHARDS", "1"}, {"TEST_SHARD_INDEX", "0"}}));
  ASSERT_TRUE(env.shard.has_value());
  EXPECT_EQ(env.shard->total, 1);
}

TEST(ShardingEnvTest, FileVariablesWorkWithoutSharding) {
  TS_ASSERT_OK_AND_ASSIGN(ShardingEnv env, ParseShardingEnv({{"XML_OUTPUT_FILE", "/out/test.xml"}}));
  EXPECT_FALSE(env.shard.has_value());
  EXPECT_EQ(env.xml_output_file, "/out/test.xml");
}

TEST(ShardingEnvTest, NonNumericValuesNameTheVariable) {
  EXPECT_THAT(ParseShardingEnv({{"TEST_TOTAL_SHARDS", "three"}, {"TEST_SHARD_INDEX", "0"}}),
              StatusIs(kInvalid, AllOf(HasSubstr("TEST_TOTAL_SHARDS"), HasSubstr("three"))));
  EXPECT_THAT(ParseShardingEnv({{"TEST_TOTAL_SHARDS", "3"}, {"TEST_SHARD_INDEX", "1x"}}),
              StatusIs(kInvalid, HasSubstr("TEST_SHARD_INDEX='1x'")));
  EXPECT_THAT(ParseShardingEnv({{"TEST_TOTAL_SHARDS", ""}, {"TEST_SHARD_INDEX", "0"}}),
              StatusIs(kInvalid, HasSubstr("TEST_TOTAL_SHARDS")));
  EXPECT_THAT(ParseShardingEnv({{"TEST_TOTAL_SHARDS", " 3"}, {"TEST_SHARD_INDEX", "0"}}),
              StatusIs(kInvalid, HasSubstr("TEST_TOTAL_SHARDS")));
  EXPECT_THAT(ParseShardingEnv({{"TEST_TOTAL_SHARDS", "99999999999999999999"}, {"TEST_SHARD_INDEX", "0"}}),
              StatusIs(kInvalid, HasSubstr("TEST_TOTAL_SHARDS")));
}

TEST(ShardingEnvTest, IndexMustBeBelowTotal) {
  EXPECT_THAT(ParseShardingEnv({{"TEST_TOTAL_SHARDS", "3"}, {"TEST_SHARD_INDEX", "3"}}),
              StatusIs(kInvalid, AllOf(HasSubstr("TEST_SHARD_INDEX=3"), HasSubstr("TEST_TOTAL_SHARDS=3"))));
  EXPECT_THAT(ParseShardingEnv({{"TEST_TOTAL_SHARDS", "3"}, {"TEST_SHARD_INDEX", "-1"}}),
              StatusIs(kInvalid, HasSubstr("TEST_SHARD_INDEX=-1")));
}

TEST(ShardingEnvTest, TotalMustBeAtLeastOne) {
  EXPECT_THAT(ParseShardingEnv({{"TEST_TOTAL_SHARDS", "0"}, {"TEST_SHARD_INDEX", "0"}}),
              StatusIs(kInvalid, HasSubstr("TEST_TOTAL_SHARDS=0 must be at least 1")));
  EXPECT_THAT(ParseShardingEnv({{"TEST_TOTAL_SHARDS", "-2"}, {"TEST_SHARD_INDEX", "0"}}),
              StatusIs(kInvalid, HasSubstr("TEST_TOTAL_SHARDS")));
}

TEST(ShardingEnvTest, HalfAPairIsAnError) {
  EXPECT_THAT(ParseShardingEnv({{"TEST_TOTAL_SHARDS", "3"}}),
              StatusIs(kInvalid, HasSubstr("TEST_SHARD_INDEX is not")));
  EXPECT_THAT(ParseShardingEnv({{"TEST_SHARD_INDEX", "0"}}),
              StatusIs(kInvalid, HasSubstr("TEST_TOTAL_SHARDS is not")));
}

TEST(ShardingEnvTest, ProcessEnvironmentSeesSetenv) {
  ::setenv("TESTSHARD_SHARDING_ENV_TEST", "a=b", 1);
  auto env = ProcessEnvironment();
  ::unsetenv("TESTSHARD_SHARDING_ENV_TEST");
  EXPECT_EQ(env["TESTSHARD_SHARDING_ENV_TEST"], "a=b");
}

class TouchStatusFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/testshard-touch-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(TouchStatusFileTest, CreatesAMissingFile) {
  std::string path = dir_ + "/status";
  EXPECT_THAT(TouchStatusFile(path), IsOk());
  EXPECT_TRUE(std::filesystem::exists(path));
}

TEST_F(TouchStatusFileTest, KeepsAnExistingFilesContents) {
  std::string path = dir_ + "/status";
  std::ofstream(path) << "keep";
  EXPECT_THAT(TouchStatusFile(path), IsOk());
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  EXPECT_EQ(s.str(), "keep");
}

TEST_F(TouchStatusFileTest, MissingDirectoryIsNotFoundNamingTheVariable) {
  EXPECT_THAT(TouchStatusFile(dir_ + "/no/such/status"),
              StatusIs(absl::StatusCode::kNotFound, AllOf(HasSubstr("TEST_SHARD_STATUS_FILE"), HasSubstr("/no/such"))));
}

TEST(PytestJunitTest, RecognisesPytestCommands) {
  EXPECT_TRUE(RunsPytest({"/usr/bin/python3", "-m", "pytest", "-p", "no:cacheprovider"}));
  EXPECT_TRUE(RunsPytest({"python3", "-X", "dev", "-m", "pytest"}));
  EXPECT_TRUE(RunsPytest({"/venv/bin/pytest", "-q"}));
  EXPECT_TRUE(RunsPytest({"py.test"}));
  EXPECT_FALSE(RunsPytest({"/usr/bin/python3", "-m", "unittest"}));
  EXPECT_FALSE(RunsPytest({"./run_tests.sh", "pytest"}));
  EXPECT_FALSE(RunsPytest({}));
}

TEST(PytestJunitTest, AddsJunitxmlUnlessTheCommandHasOne) {
  EXPECT_THAT(PytestJunitArgs({"pytest"}, "/out/test.xml"), ElementsAre("--junitxml=/out/test.xml"));
  EXPECT_THAT(PytestJunitArgs({"pytest"}, ""), IsEmpty());
  EXPECT_THAT(PytestJunitArgs({"pytest", "--junitxml=mine.xml"}, "/out/test.xml"), IsEmpty());
  EXPECT_THAT(PytestJunitArgs({"pytest", "--junit-xml", "mine.xml"}, "/out/test.xml"), IsEmpty());
}

}  // namespace
}  // namespace testshard::bazel_compat
