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

// What later runs of a project get from SaveSnapshot: the templates, and nothing else of the cluster.
TEST(EmbeddedPostgresTest, SnapshotKeepsTemplatesForTheNextStartWithItsName) {
  char base_tmpl[] = "/tmp/ts-pgsnap-XXXXXX";
  std::string base = mkdtemp(base_tmpl);
  chmod(base.c_str(), 0755);
  fs::create_directories(base + "/projects/a");
  fs::create_directories(base + "/projects/b");
  EmbeddedOptions options;
  options.base_dir = base;
  options.snapshot = base + "/projects/a";
  auto databases = [](const EmbeddedPostgres& pg) {
    pqxx::connection c(pg.admin().Conninfo());
    pqxx::work w(c);
    std::string names;
    for (const auto& row : w.exec("SELECT datname || ':' || datistemplate::text FROM pg_database WHERE datname "
                                  "NOT IN ('postgres', 'template0', 'template1') ORDER BY 1")) {
      names += row[0].as<std::string>() + " ";
    }
    return names;
  };
  {
    TS_ASSERT_OK_AND_ASSIGN(auto first, EmbeddedPostgres::Start(options));
    pqxx::connection c(first->admin().Conninfo());
    pqxx::nontransaction w(c);
    w.exec0("CREATE DATABASE tpl_kept");
    w.exec0("ALTER DATABASE tpl_kept WITH IS_TEMPLATE true ALLOW_CONNECTIONS false");
    w.exec0("CREATE DATABASE a_clone TEMPLATE tpl_kept");
    // A session still open on a clone does not keep it in the snapshot.
    pqxx::connection on_clone(first->admin().WithDb("a_clone").Conninfo());
    std::string dir = first->dir();
    ASSERT_TRUE(first->SaveSnapshot().ok());
    EXPECT_FALSE(fs::exists(dir));
  }
  {
    TS_ASSERT_OK_AND_ASSIGN(auto second, EmbeddedPostgres::Start(options));
    EXPECT_EQ(databases(*second), "tpl_kept:true ");
    // Nothing new was built: the snapshot is left as it is (a plain database is not a template).
    pqxx::connection c(second->admin().Conninfo());
    pqxx::nontransaction(c).exec0("CREATE DATABASE scratch");
    ASSERT_TRUE(second->SaveSnapshot().ok());
  }
  {
    TS_ASSERT_OK_AND_ASSIGN(auto third, EmbeddedPostgres::Start(options));
    EXPECT_EQ(databases(*third), "tpl_kept:true ");
  }
  options.snapshot = base + "/projects/b";  // another project starts from a fresh initdb
  {
    TS_ASSERT_OK_AND_ASSIGN(auto other, EmbeddedPostgres::Start(options));
    EXPECT_EQ(databases(*other), "");
  }
  // Once the project is gone, so is its snapshot (a test suite's temporary projects must not fill /dev/shm).
  auto snapshots = [&] {
    int n = 0;
    for (const auto& e : fs::directory_iterator(base)) {
      n += e.path().filename().string().find("-snap-") != std::string::npos;
    }
    return n;
  };
  EXPECT_EQ(snapshots(), 1);
  fs::remove_all(base + "/projects/a");
  options.snapshot.clear();
  {
    TS_ASSERT_OK_AND_ASSIGN(auto plain, EmbeddedPostgres::Start(options));
    EXPECT_EQ(databases(*plain), "");
  }
  EXPECT_EQ(snapshots(), 0);
  fs::remove_all(base);
}

}  // namespace
}  // namespace testshard::pg
