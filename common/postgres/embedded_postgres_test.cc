#include "common/postgres/embedded_postgres.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <pqxx/pqxx>

#include "common/testing/status_matchers.h"
#include "gtest/gtest.h"

namespace testshard::pg {
namespace {

namespace fs = std::filesystem;

TEST(EmbeddedPostgresTest, ServesSqlOnItsSocketAndLeavesNothingBehind) {
  EmbeddedOptions options;
  options.tcp = true;
  TS_ASSERT_OK_AND_ASSIGN(auto pg, EmbeddedPostgres::Start(options));
  std::string dir = pg->dir();
  {
    pqxx::connection c(pg->admin().Conninfo());
    pqxx::work w(c);
    EXPECT_EQ(w.exec1("SELECT current_setting('fsync')")[0].as<std::string>(), "off");
    EXPECT_EQ(w.exec1("SELECT 1 + 1")[0].as<int>(), 2);
  }
  ASSERT_TRUE(pg->admin_tcp().has_value());
  {
    pqxx::connection c(pg->admin_tcp()->Conninfo());
    EXPECT_TRUE(c.is_open());
  }
  pid_t server = pg->server_pid();
  ASSERT_TRUE(pg->Stop().ok());
  EXPECT_FALSE(fs::exists(dir));
  EXPECT_NE(kill(server, 0), 0);
}

// kill -9 of the owner: the server dies with it (parent-death signal), and the next start sweeps its directory.
TEST(EmbeddedPostgresTest, KilledOwnersClusterIsGoneOnNextStart) {
  char base_tmpl[] = "/tmp/ts-pgbase-XXXXXX";
  std::string base = mkdtemp(base_tmpl);
  chmod(base.c_str(), 0755);
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  pid_t owner = fork();
  if (owner == 0) {
    close(pipefd[0]);
    EmbeddedOptions options;
    options.base_dir = base;
    auto pg = EmbeddedPostgres::Start(options);
    pid_t server = pg.ok() ? (*pg)->server_pid() : -1;
    (void)!write(pipefd[1], &server, sizeof server);
    pause();
    _exit(0);
  }
  close(pipefd[1]);
  pid_t server = -1;
  ASSERT_EQ(read(pipefd[0], &server, sizeof server), static_cast<ssize_t>(sizeof server));
  ASSERT_GT(server, 0);
  kill(owner, SIGKILL);
  waitpid(owner, nullptr, 0);
  // The server got SIGQUIT when its parent died; wait for it to go.
  for (int i = 0; i < 500 && kill(server, 0) == 0; ++i) usleep(10000);
  EXPECT_NE(kill(server, 0), 0) << "server outlived its owner";
  int dirs = 0;
  for (const auto& e : fs::directory_iterator(base)) dirs += e.path().filename().string().rfind("testshard-pg-", 0) == 0;
  EXPECT_EQ(dirs, 1);
  EXPECT_EQ(EmbeddedPostgres::SweepStale(base), 1);
  dirs = 0;
  for (const auto& e : fs::directory_iterator(base)) dirs += e.path().filename().string().rfind("testshard-pg-", 0) == 0;
  EXPECT_EQ(dirs, 0);
  fs::remove_all(base);
}

TEST(EmbeddedPostgresTest, MissingBinariesAreNamed) {
  EmbeddedOptions options;
  options.bin_dir = "/nonexistent";
  EXPECT_THAT(EmbeddedPostgres::Start(options),
              testing::StatusIs(absl::StatusCode::kNotFound, ::testing::HasSubstr("/nonexistent")));
}

}  // namespace
}  // namespace testshard::pg

namespace testshard::pg {
namespace {

// The second cluster starts from a copy of the first one's pristine initdb, and is a working cluster of its own.
TEST(EmbeddedPostgresTest, SecondStartCopiesTheCachedInitdb) {
  char base_tmpl[] = "/tmp/ts-pgcache-XXXXXX";
  std::string base = mkdtemp(base_tmpl);
  chmod(base.c_str(), 0755);
  EmbeddedOptions options;
  options.base_dir = base;
  TS_ASSERT_OK_AND_ASSIGN(auto first, EmbeddedPostgres::Start(options));
  int caches = 0;
  for (const auto& e : fs::directory_iterator(base)) {
    caches += e.path().filename().string().rfind("testshard-pgcache-", 0) == 0 && fs::exists(e.path() / "complete");
  }
  EXPECT_EQ(caches, 1);
  {
    pqxx::connection c(first->admin().Conninfo());
    pqxx::work w(c);
    w.exec0("CREATE TABLE only_in_first (x int)");
    w.commit();
  }
  TS_ASSERT_OK_AND_ASSIGN(auto second, EmbeddedPostgres::Start(options));
  {
    pqxx::connection c(second->admin().Conninfo());
    pqxx::work w(c);
    EXPECT_EQ(w.exec1("SELECT count(*) FROM pg_class WHERE relname = 'only_in_first'")[0].as<int>(), 0);
    EXPECT_EQ(w.exec1("SELECT current_setting('fsync')")[0].as<std::string>(), "off");
  }
  EXPECT_NE(first->dir(), second->dir());
  ASSERT_TRUE(first->Stop().ok());
  ASSERT_TRUE(second->Stop().ok());
  fs::remove_all(base);
}

}  // namespace
}  // namespace testshard::pg
