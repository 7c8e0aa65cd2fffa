// What only the file store has to show: its on-disk format, damage reports, and safety between processes.
#include "common/history/file_history_store.h"

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/status.h"
#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::history {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;
using ::testshard::testing::IsOk;
using ::testshard::testing::StatusIs;

class FileHistoryStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/testshard-file-history-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

Sample S(std::string id, double seconds) {
  return Sample{std::move(id), seconds, Outcome::kPassed, absl::FromUnixSeconds(1'700'000'000)};
}

TEST_F(FileHistoryStoreTest, CreatesTheDirectoryOnFirstWrite) {
  FileHistoryStore store(dir_ + "/nested/.testshard");
  ASSERT_THAT(store.Update("p", {S("a", 1)}), IsOk());
  EXPECT_TRUE(std::filesystem::exists(store.PathFor("p")));
}

TEST_F(FileHistoryStoreTest, ProjectNameCannotEscapeTheDirectory) {
  FileHistoryStore store(dir_);
  ASSERT_THAT(store.Update("../../etc/passwd", {S("a", 1)}), IsOk());
  std::filesystem::path path = store.PathFor("../../etc/passwd");
  EXPECT_EQ(path.parent_path(), std::filesystem::path(dir_ + "/history"));
  EXPECT_TRUE(std::filesystem::exists(path));
}

TEST_F(FileHistoryStoreTest, DamagedLineIsDataLossNamingFileAndLine) {
  FileHistoryStore store(dir_);
  ASSERT_THAT(store.Update("p", {S("a", 1), S("b", 2)}), IsOk());
  {
    std::ofstream out(store.PathFor("p"), std::ios::app);
    out << "{\"id\": \"c\", \"ewma\": tru\n";
  }
  EXPECT_THAT(store.ReadAll("p"), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("p.jsonl:4")));
  // A damaged history is not silently overwritten by the next run.
  EXPECT_THAT(store.Update("p", {S("a", 1)}), StatusIs(absl::StatusCode::kDataLoss, ::testing::_));
}

TEST_F(FileHistoryStoreTest, ForeignFileIsDataLoss) {
  FileHistoryStore store(dir_);
  std::filesystem::create_directories(dir_ + "/history");
  std::ofstream(store.PathFor("p")) << "{\"something\": \"else\"}\n";
  EXPECT_THAT(store.ReadAll("p"), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("not a testshard history")));
}

TEST_F(FileHistoryStoreTest, LeavesNoTemporaryFilesBehind) {
  FileHistoryStore store(dir_);
  ASSERT_THAT(store.Update("p", {S("a", 1)}), IsOk());
  ASSERT_THAT(store.Update("p", {S("a", 2)}), IsOk());
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_ + "/history")) {
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
    ++files;
  }
  EXPECT_EQ(files, 2);  // p.jsonl and p.lock
}

TEST_F(FileHistoryStoreTest, UnwritableDirectoryIsAnError) {
  FileHistoryStore store("/proc/testshard-cannot-exist");
  EXPECT_FALSE(store.Update("p", {S("a", 1)}).ok());
}

TEST_F(FileHistoryStoreTest, ConcurrentProcessesLoseNoSample) {
  // Real processes, each with its own store object, all writing the same project at once.
  constexpr int kProcesses = 4;
  constexpr int kRounds = 10;
  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      FileHistoryStore store(dir_);
      for (int r = 0; r < kRounds; ++r) {
        std::vector<Sample> run;
        for (int t = 0; t < 100; ++t) run.push_back(S("t" + std::to_string(t), 1));
        if (!store.Update("p", run).ok()) ::_exit(1);
      }
      ::_exit(0);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int wstatus = 0;
    ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
    EXPECT_TRUE(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
  }
  FileHistoryStore store(dir_);
  TS_ASSERT_OK_AND_ASSIGN(auto got, store.ReadAll("p"));
  ASSERT_THAT(got, SizeIs(100));
  for (const TestHistory& h : got) EXPECT_EQ(h.runs, kProcesses * kRounds) << h.test_id;
}

}  // namespace
}  // namespace testshard::history
