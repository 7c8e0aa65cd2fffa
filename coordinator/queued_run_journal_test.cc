// QueuedRunJournal over a fake log that fails on demand: the stored journal stays a prefix of the run's events,
// catches up when the log is back, and never stores a line twice when an append's answer was lost.
#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "coordinator/run_journal_backends.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace testshard::coordinator {
namespace {

// Fails the next `fail_next` appends; `land_failed` makes a failed append store its lines anyway (the answer was
// lost on the way back).
class FakeJournalLog : public JournalLog {
 public:
  struct State {
    absl::Mutex mu;
    std::vector<std::string> lines ABSL_GUARDED_BY(mu);
    int fail_next ABSL_GUARDED_BY(mu) = 0;
    bool land_failed ABSL_GUARDED_BY(mu) = false;
    int appends ABSL_GUARDED_BY(mu) = 0;
  };
  explicit FakeJournalLog(State* state) : state_(state) {}
  absl::Status Append(const std::vector<std::string>& lines) override {
    absl::MutexLock l(&state_->mu);
    ++state_->appends;
    bool fail = state_->fail_next > 0;
    if (fail) --state_->fail_next;
    if (!fail || state_->land_failed) state_->lines.insert(state_->lines.end(), lines.begin(), lines.end());
    return fail ? absl::UnavailableError("fake: down") : absl::OkStatus();
  }
  absl::StatusOr<std::vector<std::string>> ReadAll() override {
    absl::MutexLock l(&state_->mu);
    return state_->lines;
  }
  absl::StatusOr<int64_t> Count() override {
    absl::MutexLock l(&state_->mu);
    return static_cast<int64_t>(state_->lines.size());
  }
  std::string Describe() const override { return "fake"; }

 private:
  State* state_;
};

JournalEvent Attempt(int i) {
  JournalEvent e;
  e.kind = JournalEvent::kAttempt;
  e.stage = "unit";
  e.result.id = "t" + std::to_string(i);
  return e;
}

std::vector<std::string> Ids(const std::vector<std::string>& lines) {
  std::vector<std::string> ids;
  for (const std::string& line : lines) {
    auto e = DecodeJournalEvent(line);
    ids.push_back(e.ok() ? e->result.id : "?");
  }
  return ids;
}

TEST(QueuedRunJournalTest, AnUnreachableLogIsRetriedInOrderUntilItTakesTheLines) {
  FakeJournalLog::State state;
  {
    absl::MutexLock l(&state.mu);
    state.fail_next = 2;
  }
  QueuedRunJournal journal(std::make_unique<FakeJournalLog>(&state), 0);
  journal.Append(Attempt(1));
  journal.Append(Attempt(2));
  ASSERT_TRUE(journal.Flush(absl::Seconds(30)));
  journal.Append(Attempt(3));
  ASSERT_TRUE(journal.Flush(absl::Seconds(30)));
  absl::MutexLock l(&state.mu);
  EXPECT_THAT(Ids(state.lines), ::testing::ElementsAre("t1", "t2", "t3"));
}

TEST(QueuedRunJournalTest, ABatchWhoseAnswerWasLostIsNotStoredTwice) {
  FakeJournalLog::State state;
  {
    absl::MutexLock l(&state.mu);
    state.fail_next = 1;
    state.land_failed = true;
  }
  QueuedRunJournal journal(std::make_unique<FakeJournalLog>(&state), 0);
  journal.Append(Attempt(1));
  ASSERT_TRUE(journal.Flush(absl::Seconds(30)));
  journal.Append(Attempt(2));
  ASSERT_TRUE(journal.Flush(absl::Seconds(30)));
  absl::MutexLock l(&state.mu);
  EXPECT_THAT(Ids(state.lines), ::testing::ElementsAre("t1", "t2"));
}

TEST(QueuedRunJournalTest, ALogDownAtCloseGetsOneLastTryAndTheRunIsNotHeldUp) {
  FakeJournalLog::State state;
  {
    absl::MutexLock l(&state.mu);
    state.fail_next = 1000;
  }
  {
    QueuedRunJournal journal(std::make_unique<FakeJournalLog>(&state), 0);
    journal.Append(Attempt(1));
    EXPECT_FALSE(journal.Flush(absl::Milliseconds(50)));
  }  // returns although nothing could be stored
  absl::MutexLock l(&state.mu);
  EXPECT_TRUE(state.lines.empty());
}

}  // namespace
}  // namespace testshard::coordinator
