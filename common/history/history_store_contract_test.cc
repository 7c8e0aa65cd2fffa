// One behavioural contract, run against every HistoryStore backend with real servers: the file store in a temp
// dir, Redis on a private unix socket, PostgreSQL on a private unix socket.
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/history/file_history_store.h"
#include "common/history/history_store.h"
#include "common/history/redis_history_store.h"
#include "common/status.h"
#include "common/testing/shared_servers.h"
#include "common/testing/status_matchers.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::history {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;
using ::testshard::testing::IsOk;
using ::testshard::testing::StatusIs;

// Owns whatever backs one kind of store and opens independent clients onto the same data.
class Backend {
 public:
  virtual ~Backend() = default;
  virtual absl::StatusOr<std::unique_ptr<HistoryStore>> NewClient() = 0;
};

class FileBackend : public Backend {
 public:
  FileBackend() {
    char tmpl[] = "/tmp/testshard-history-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
  }
  ~FileBackend() override { std::filesystem::remove_all(dir_); }
  absl::StatusOr<std::unique_ptr<HistoryStore>> NewClient() override {
    return std::unique_ptr<HistoryStore>(new FileHistoryStore(dir_ + "/.testshard"));
  }

 private:
  std::string dir_;
};

class RedisBackend : public Backend {
 public:
  absl::StatusOr<std::unique_ptr<HistoryStore>> NewClient() override {
    TS_ASSIGN_OR_RETURN(std::string url, testing::SharedRedisUrl());
    return OpenHistoryStore(url);
  }
};

class PostgresBackend : public Backend {
 public:
  absl::StatusOr<std::unique_ptr<HistoryStore>> NewClient() override {
    TS_ASSIGN_OR_RETURN(std::string url, testing::SharedPostgresUrl());
    return OpenHistoryStore(url);
  }
};

// One backend per kind for the whole binary (and one server: shared_servers.h); every test uses its own project,
// so tests do not see each other's data.
Backend& GetBackend(const std::string& kind) {
  // Destroyed at exit, which stops the servers and removes their directories.
  static std::map<std::string, std::unique_ptr<Backend>> backends;
  auto& b = backends[kind];
  if (!b) {
    if (kind == "file") b = std::make_unique<FileBackend>();
    if (kind == "redis") b = std::make_unique<RedisBackend>();
    if (kind == "postgres") b = std::make_unique<PostgresBackend>();
  }
  return *b;
}

class HistoryStoreContractTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    auto client = GetBackend(GetParam()).NewClient();
    ASSERT_THAT(client, IsOk());
    store_ = *std::move(client);
    project_ = ::testing::UnitTest::GetInstance()->current_test_info()->name();
  }

  std::unique_ptr<HistoryStore> store_;
  std::string project_;
};

Sample S(std::string id, double seconds, Outcome outcome = Outcome::kPassed, int64_t at_s = 1'700'000'000) {
  return Sample{std::move(id), seconds, outcome, absl::FromUnixSeconds(at_s)};
}

std::map<std::string, TestHistory> ById(const std::vector<TestHistory>& v) {
  std::map<std::string, TestHistory> m;
  for (const TestHistory& h : v) m[h.test_id] = h;
  return m;
}

// What the store must hold after `samples`: the pure rules applied locally.
std::map<std::string, TestHistory> Expected(const std::vector<Sample>& samples) {
  std::map<std::string, TestHistory> m;
  for (const Sample& s : samples) {
    if (s.outcome == Outcome::kNotRun) continue;
    m[s.test_id].test_id = s.test_id;
    ApplySample(m[s.test_id], s);
  }
  return m;
}

TEST_P(HistoryStoreContractTest, UnknownProjectReadsEmpty) {
  TS_ASSERT_OK_AND_ASSIGN(auto all, store_->ReadAll(project_));
  EXPECT_THAT(all, IsEmpty());
  TS_ASSERT_OK_AND_ASSIGN(auto some, store_->Read(project_, {"a.py::test_x"}));
  EXPECT_THAT(some, IsEmpty());
}

TEST_P(HistoryStoreContractTest, UpdatesFoldInExactlyAsTheRulesSay) {
  std::vector<Sample> run1 = {S("a.py::test_x", 1.5), S("a.py::test_y", 0.25, Outcome::kFailed)};
  std::vector<Sample> run2 = {S("a.py::test_x", 3.0, Outcome::kPassed, 1'700'000'100),
                              S("a.py::test_y", 0.001, Outcome::kSkipped, 1'700'000'100)};
  ASSERT_THAT(store_->Update(project_, run1), IsOk());
  ASSERT_THAT(store_->Update(project_, run2), IsOk());
  std::vector<Sample> all = run1;
  all.insert(all.end(), run2.begin(), run2.end());
  TS_ASSERT_OK_AND_ASSIGN(auto got, store_->ReadAll(project_));
  EXPECT_EQ(ById(got), Expected(all));
  EXPECT_EQ(ById(got)["a.py::test_y"].outcomes, "FS");
}

TEST_P(HistoryStoreContractTest, DuplicateIdsInOneUpdateApplyInOrder) {
  std::vector<Sample> run = {S("a.py::t", 1), S("a.py::t", 2), S("a.py::t", 4, Outcome::kFailed)};
  ASSERT_THAT(store_->Update(project_, run), IsOk());
  TS_ASSERT_OK_AND_ASSIGN(auto got, store_->ReadAll(project_));
  EXPECT_EQ(ById(got), Expected(run));
  EXPECT_THAT(got.at(0).recent_s, ElementsAre(1, 2, 4));
}

TEST_P(HistoryStoreContractTest, NotRunSamplesLeaveNoRecord) {
  ASSERT_THAT(store_->Update(project_, {S("a.py::cancelled", 0, Outcome::kNotRun)}), IsOk());
  TS_ASSERT_OK_AND_ASSIGN(auto got, store_->ReadAll(project_));
  EXPECT_THAT(got, IsEmpty());
}

TEST_P(HistoryStoreContractTest, ReadReturnsOnlyTheRequestedKnownTests) {
  ASSERT_THAT(store_->Update(project_, {S("a", 1), S("b", 2), S("c", 3)}), IsOk());
  TS_ASSERT_OK_AND_ASSIGN(auto got, (store_->Read(project_, {"c", "a", "never-ran"})));
  std::vector<std::string> ids;
  for (const auto& h : got) ids.push_back(h.test_id);
  EXPECT_THAT(ids, UnorderedElementsAre("a", "c"));
}

TEST_P(HistoryStoreContractTest, ProjectsAreIsolated) {
  ASSERT_THAT(store_->Update(project_ + "-one", {S("a", 1)}), IsOk());
  ASSERT_THAT(store_->Update(project_ + "-two", {S("a", 7), S("b", 1)}), IsOk());
  TS_ASSERT_OK_AND_ASSIGN(auto one, store_->ReadAll(project_ + "-one"));
  ASSERT_THAT(one, SizeIs(1));
  EXPECT_DOUBLE_EQ(one[0].ewma_s, 1);
}

TEST_P(HistoryStoreContractTest, ProjectNamesAreOpaque) {
  const std::string odd = project_ + "/../x y:{z}";
  ASSERT_THAT(store_->Update(odd, {S("a", 1)}), IsOk());
  TS_ASSERT_OK_AND_ASSIGN(auto got, store_->ReadAll(odd));
  EXPECT_THAT(got, SizeIs(1));
  TS_ASSERT_OK_AND_ASSIGN(auto other, store_->ReadAll(project_ + "/../x y:{z"));
  EXPECT_THAT(other, IsEmpty());
}

TEST_P(HistoryStoreContractTest, EmptyProjectIsInvalidArgument) {
  EXPECT_THAT(store_->Update("", {S("a", 1)}), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
  EXPECT_THAT(store_->ReadAll(""), StatusIs(absl::StatusCode::kInvalidArgument, ::testing::_));
}

TEST_P(HistoryStoreContractTest, AwkwardTestIdsRoundTrip) {
  std::vector<std::string> ids = {
      "tests/test_a.py::TestK::test_x[a/b::c d]",
      "t.py::test[\"quoted\", 'single']",
      "t.py::test[tab\there]",
      "t.py::test[new\nline]",
      "t.py::test[back\\slash]",
      "t.py::test[ünïcødé-🚀]",
      "t.py::test[$(rm -rf /); `x` | & > <]",
      "t.py::test[{\"json\": [1, 2]}]",
      "t.py::test[%s%d%n,;=]",
      "t.py::test[ ]",
      "t.py::test[]",
  };
  std::vector<Sample> run;
  for (size_t i = 0; i < ids.size(); ++i) run.push_back(S(ids[i], 0.5 + static_cast<double>(i)));
  ASSERT_THAT(store_->Update(project_, run), IsOk());
  TS_ASSERT_OK_AND_ASSIGN(auto all, store_->ReadAll(project_));
  EXPECT_EQ(ById(all), Expected(run));
  TS_ASSERT_OK_AND_ASSIGN(auto some, store_->Read(project_, ids));
  EXPECT_EQ(ById(some), Expected(run));
}

TEST_P(HistoryStoreContractTest, ValuesRoundTripExactly) {
  Sample s = S("t", 0.1);
  s.at = absl::FromUnixMicros(1'700'000'000'123'456);
  std::vector<Sample> run = {s, S("t", 12345.678901234567), S("u", 1e-9)};
  ASSERT_THAT(store_->Update(project_, run), IsOk());
  TS_ASSERT_OK_AND_ASSIGN(auto got, store_->ReadAll(project_));
  EXPECT_EQ(ById(got), Expected(run));
}

TEST_P(HistoryStoreContractTest, ARunOfFiveThousandTestsIsOneBatch) {
  std::vector<Sample> run;
  for (int i = 0; i < 5000; ++i) {
    run.push_back(S("tests/test_m" + std::to_string(i % 50) + ".py::test_" + std::to_string(i), 0.01 * i));
  }
  ASSERT_THAT(store_->Update(project_, run), IsOk());
  for (Sample& s : run) s.duration_s *= 2;
  ASSERT_THAT(store_->Update(project_, run), IsOk());
  TS_ASSERT_OK_AND_ASSIGN(auto got, store_->ReadAll(project_));
  ASSERT_THAT(got, SizeIs(5000));
  auto by_id = ById(got);
  EXPECT_EQ(by_id["tests/test_m10.py::test_10"].recent_s, (std::vector<double>{0.1, 0.2}));
  std::vector<std::string> wanted;
  for (int i = 0; i < 5000; i += 2) wanted.push_back(run[i].test_id);
  TS_ASSERT_OK_AND_ASSIGN(auto half, store_->Read(project_, wanted));
  EXPECT_THAT(half, SizeIs(2500));
}

TEST_P(HistoryStoreContractTest, PutReplacesWholeRecords) {
  ASSERT_THAT(store_->Update(project_, {S("a", 1), S("b", 2)}), IsOk());
  TestHistory a;
  a.test_id = "a";
  a.ewma_s = 9;
  a.p90_s = 9;
  a.recent_s = {9};
  a.outcomes = "F";
  a.last_seen = absl::FromUnixSeconds(5);
  a.runs = 77;
  TestHistory c = a;
  c.test_id = "c";
  ASSERT_THAT(store_->Put(project_, {a, c}), IsOk());
  TS_ASSERT_OK_AND_ASSIGN(auto got, store_->ReadAll(project_));
  auto by_id = ById(got);
  ASSERT_EQ(by_id.size(), 3u);
  EXPECT_EQ(by_id["a"], a);
  EXPECT_EQ(by_id["c"], c);
  EXPECT_DOUBLE_EQ(by_id["b"].ewma_s, 2);
}

TEST_P(HistoryStoreContractTest, ConcurrentWritersLoseNoSample) {
  // Two independent clients (two connections, or two open file descriptions) update overlapping tests at once.
  constexpr int kRounds = 15;
  std::vector<std::thread> writers;
  std::vector<absl::Status> results(2);
  Backend& backend = GetBackend(GetParam());
  for (int w = 0; w < 2; ++w) {
    writers.emplace_back([&, w] {
      auto client = backend.NewClient();
      if (!client.ok()) {
        results[w] = client.status();
        return;
      }
      for (int r = 0; r < kRounds && results[w].ok(); ++r) {
        std::vector<Sample> run;
        for (int t = 0; t < 200; ++t) run.push_back(S("shared_" + std::to_string(t), 1));
        run.push_back(S("own_" + std::to_string(w), 1));
        results[w] = (*client)->Update(project_, run);
      }
    });
  }
  for (auto& t : writers) t.join();
  ASSERT_THAT(results[0], IsOk());
  ASSERT_THAT(results[1], IsOk());
  TS_ASSERT_OK_AND_ASSIGN(auto got, store_->ReadAll(project_));
  auto by_id = ById(got);
  ASSERT_EQ(by_id.size(), 202u);
  EXPECT_EQ(by_id["shared_0"].runs, 2 * kRounds);
  EXPECT_EQ(by_id["shared_199"].runs, 2 * kRounds);
  EXPECT_EQ(by_id["own_0"].runs, kRounds);
  EXPECT_EQ(by_id["own_1"].runs, kRounds);
}

INSTANTIATE_TEST_SUITE_P(Backends, HistoryStoreContractTest, ::testing::Values("file", "redis", "postgres"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace testshard::history
