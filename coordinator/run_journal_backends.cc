#include "coordinator/run_journal_backends.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <chrono>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/history/history_store.h"
#include "common/status.h"
#include "coordinator/run_journal_servers.h"
#include "spdlog/spdlog.h"

namespace testshard::coordinator {
namespace {

using history::RedisCommand;
using history::RedisReply;

// Elements per LRANGE: big enough to amortise the round trip, small enough not to stall the server.
constexpr int64_t kReadChunk = 5000;

constexpr const char* kCreateJournalTable = R"sql(
CREATE TABLE IF NOT EXISTS testshard_run_journal (
  project  text NOT NULL,
  run_id   text NOT NULL,
  seq      bigserial,
  event    text NOT NULL,
  created  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (project, run_id, seq)
);
CREATE INDEX IF NOT EXISTS testshard_run_journal_created ON testshard_run_journal (created))sql";

}  // namespace

// ---- Redis ----

std::string RedisJournalLog::KeyFor(std::string_view project, std::string_view run_id) {
  return absl::StrCat("testshard:{", ToAbsl(project), "}:run:", ToAbsl(run_id), ":journal");
}

absl::StatusOr<std::unique_ptr<RedisJournalLog>> RedisJournalLog::Connect(history::RedisAddress address,
                                                                          std::string_view project,
                                                                          std::string_view run_id) {
  TS_RETURN_IF_ERROR(history::CheckProject(project));
  std::unique_ptr<RedisJournalLog> log(new RedisJournalLog(std::move(address), KeyFor(project, run_id)));
  absl::MutexLock l(&log->mu_);
  history::ScopedSigpipeBlock no_sigpipe;
  TS_RETURN_IF_ERROR(log->conn_.EnsureConnected());
  return log;
}

std::string RedisJournalLog::Describe() const ABSL_NO_THREAD_SAFETY_ANALYSIS {
  // Only the connection's immutable address is read.
  return absl::StrCat(conn_.Describe(), " ", key_);
}

absl::StatusOr<RedisReply> RedisJournalLog::CallLocked(const history::RedisCommand& command) {
  TS_RETURN_IF_ERROR(conn_.EnsureConnected());
  absl::StatusOr<RedisReply> r = conn_.Call(command);
  if (!r.ok() && absl::IsUnavailable(r.status())) conn_.Drop();
  return r;
}

absl::Status RedisJournalLog::Append(const std::vector<std::string>& lines) {
  if (lines.empty()) return absl::OkStatus();
  RedisCommand push = {"RPUSH", key_};
  push.insert(push.end(), lines.begin(), lines.end());
  absl::MutexLock l(&mu_);
  history::ScopedSigpipeBlock no_sigpipe;
  TS_RETURN_IF_ERROR(conn_.EnsureConnected());
  // One RPUSH of the whole batch is atomic; the EXPIRE rides in the same round trip.
  absl::StatusOr<std::vector<RedisReply>> replies =
      conn_.Pipeline({push, {"EXPIRE", key_, std::to_string(absl::ToInt64Seconds(kExpiry))}});
  if (!replies.ok()) {
    conn_.Drop();
    return replies.status();
  }
  if ((*replies)[0]->type == REDIS_REPLY_ERROR) return history::RedisReplyError((*replies)[0].get(), "RPUSH");
  if ((*replies)[1]->type == REDIS_REPLY_ERROR) return history::RedisReplyError((*replies)[1].get(), "EXPIRE");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> RedisJournalLog::ReadAll() {
  absl::MutexLock l(&mu_);
  history::ScopedSigpipeBlock no_sigpipe;
  std::vector<std::string> lines;
  for (int64_t begin = 0;; begin += kReadChunk) {
    TS_ASSIGN_OR_RETURN(RedisReply r,
                        CallLocked({"LRANGE", key_, std::to_string(begin), std::to_string(begin + kReadChunk - 1)}));
    const redisReply* reply = r.get();
    if (reply->type != REDIS_REPLY_ARRAY) return absl::InternalError("redis: LRANGE did not answer an array");
    for (size_t i = 0; i < reply->elements; ++i) lines.emplace_back(reply->element[i]->str, reply->element[i]->len);
    if (static_cast<int64_t>(reply->elements) < kReadChunk) break;
  }
  return lines;
}

absl::StatusOr<int64_t> RedisJournalLog::Count() {
  absl::MutexLock l(&mu_);
  history::ScopedSigpipeBlock no_sigpipe;
  TS_ASSIGN_OR_RETURN(RedisReply r, CallLocked({"LLEN", key_}));
  if (r->type != REDIS_REPLY_INTEGER) return absl::InternalError("redis: LLEN did not answer an integer");
  return static_cast<int64_t>(r->integer);
}

// ---- PostgreSQL ----

PostgresJournalLog::PostgresJournalLog(std::string conninfo, std::string project, std::string run_id)
    : conn_(std::move(conninfo), "testshard_run_journal", kCreateJournalTable),
      project_(std::move(project)),
      run_id_(std::move(run_id)) {}

absl::StatusOr<std::unique_ptr<PostgresJournalLog>> PostgresJournalLog::Connect(std::string conninfo,
                                                                                std::string_view project,
                                                                                std::string_view run_id, bool prune) {
  TS_RETURN_IF_ERROR(history::CheckProject(project));
  std::unique_ptr<PostgresJournalLog> log(
      new PostgresJournalLog(std::move(conninfo), std::string(project), std::string(run_id)));
  absl::MutexLock l(&log->mu_);
  TS_RETURN_IF_ERROR(log->conn_.EnsureConnected("opening the PostgreSQL run journal"));
  if (prune) {
    try {
      pqxx::work txn(log->conn_.get());
      txn.exec_params("DELETE FROM testshard_run_journal WHERE created < now() - $1::bigint * interval '1 second'",
                      absl::ToInt64Seconds(kExpiry));
      txn.commit();
    } catch (...) {
      return history::PostgresError("pruning old run journals");
    }
  }
  return log;
}

std::string PostgresJournalLog::Describe() const {
  absl::MutexLock l(&mu_);
  return absl::StrCat(conn_.Describe(), " testshard_run_journal ", project_, "/", run_id_);
}

absl::Status PostgresJournalLog::Append(const std::vector<std::string>& lines) {
  if (lines.empty()) return absl::OkStatus();
  absl::MutexLock l(&mu_);
  TS_RETURN_IF_ERROR(conn_.EnsureConnected("opening the PostgreSQL run journal"));
  try {
    // One transaction per batch: all lines or none. COPY assigns seq in row order.
    pqxx::work txn(conn_.get());
    pqxx::stream_to stream(txn, "testshard_run_journal", std::vector<std::string>{"project", "run_id", "event"});
    for (const std::string& line : lines) stream << std::make_tuple(project_, run_id_, line);
    stream.complete();
    txn.commit();
    return absl::OkStatus();
  } catch (...) {
    return history::PostgresError("appending to the run journal");
  }
}

absl::StatusOr<pqxx::result> PostgresJournalLog::QueryLocked(const char* sql, std::string_view what) {
  TS_RETURN_IF_ERROR(conn_.EnsureConnected("opening the PostgreSQL run journal"));
  try {
    pqxx::work txn(conn_.get());
    pqxx::result rows = txn.exec_params(sql, project_, run_id_);
    txn.commit();
    return rows;
  } catch (...) {
    return history::PostgresError(what);
  }
}

absl::StatusOr<std::vector<std::string>> PostgresJournalLog::ReadAll() {
  absl::MutexLock l(&mu_);
  TS_ASSIGN_OR_RETURN(pqxx::result rows,
                      QueryLocked("SELECT event FROM testshard_run_journal WHERE project = $1 AND run_id = $2 "
                                  "ORDER BY seq",
                                  "reading the run journal"));
  std::vector<std::string> lines;
  lines.reserve(rows.size());
  for (const pqxx::row& row : rows) lines.emplace_back(row[0].c_str(), row[0].size());
  return lines;
}

absl::StatusOr<int64_t> PostgresJournalLog::Count() {
  absl::MutexLock l(&mu_);
  TS_ASSIGN_OR_RETURN(pqxx::result rows,
                      QueryLocked("SELECT count(*) FROM testshard_run_journal WHERE project = $1 AND run_id = $2",
                                  "counting the run journal"));
  return rows[0][0].as<int64_t>();
}

// ---- The queue in front of them ----

QueuedRunJournal::QueuedRunJournal(std::unique_ptr<JournalLog> log, int64_t stored)
    : log_(std::move(log)), stored_(stored) {
  writer_ = std::thread([this] { WriterLoop(); });
}

QueuedRunJournal::~QueuedRunJournal() {
  {
    absl::MutexLock l(&mu_);
    stopping_ = true;
  }
  writer_.join();
}

void QueuedRunJournal::Append(const JournalEvent& event) {
  std::string line = EncodeJournalEvent(event);
  absl::MutexLock l(&mu_);
  queue_.push_back(std::move(line));
}

bool QueuedRunJournal::Flush(absl::Duration timeout) {
  absl::MutexLock l(&mu_);
  auto drained = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return queue_.empty() && in_flight_ == 0; };
  return mu_.AwaitWithTimeout(absl::Condition(&drained), timeout);
}

void QueuedRunJournal::WriterLoop() {
  std::vector<std::string> batch;  // taken from the queue, not yet known to be stored
  absl::Duration backoff = absl::ZeroDuration();
  bool failing = false;
  for (;;) {
    bool last_try = false;
    {
      absl::MutexLock l(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || !queue_.empty(); };
      if (batch.empty()) {
        mu_.Await(absl::Condition(&ready));
      } else {
        // A failed batch is retried after the back-off, or at once when the journal is being closed.
        mu_.AwaitWithTimeout(absl::Condition(&stopping_), backoff);
      }
      last_try = stopping_;
      while (!queue_.empty()) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      in_flight_ = static_cast<int64_t>(batch.size());
      if (batch.empty() && stopping_) return;
    }
    absl::Status s = absl::OkStatus();
    if (failing) {
      // The failed attempt may have been stored with only its answer lost: Append is atomic, so the count
      // tells.
      absl::StatusOr<int64_t> count = log_->Count();
      s = count.status();
      if (s.ok() && *count > stored_) {
        // Stored: exactly the lines of the failed attempt, which are the first ones of `batch`.
        int64_t landed = std::min<int64_t>(*count - stored_, static_cast<int64_t>(batch.size()));
        batch.erase(batch.begin(), batch.begin() + landed);
        stored_ += landed;
      }
    }
    if (s.ok()) s = log_->Append(batch);
    if (s.ok()) {
      stored_ += static_cast<int64_t>(batch.size());
      batch.clear();
      if (failing) spdlog::info("run journal: writing to {} again", log_->Describe());
      failing = false;
      backoff = absl::ZeroDuration();
    } else {
      if (!failing) {
        spdlog::error("run journal: cannot write to {}: {}. The run goes on, and the lines are kept and retried; "
                      "a coordinator restarted before they are written repeats those tests",
                      log_->Describe(), s.ToString());
      }
      failing = true;
      backoff = std::min(absl::Seconds(10), std::max(absl::Milliseconds(200), backoff * 2));
    }
    absl::MutexLock l(&mu_);
    in_flight_ = static_cast<int64_t>(batch.size());
    if (last_try && !batch.empty()) {
      spdlog::error("run journal: {} events were not written to {}; a resumed run repeats their tests",
                    batch.size() + queue_.size(), log_->Describe());
      queue_.clear();
      in_flight_ = 0;
      return;
    }
  }
}

// ---- The factory ----

absl::StatusOr<std::unique_ptr<RunJournal>> OpenRunJournal(std::string_view history_spec, std::string_view project,
                                                           std::string_view run_id, const std::string& run_dir,
                                                           bool resume) {
  TS_ASSIGN_OR_RETURN(history::StoreSpec spec, history::ParseStoreSpec(history_spec));
  std::unique_ptr<JournalLog> log;
  switch (spec.kind) {
    case history::StoreSpec::kFile: {
      TS_ASSIGN_OR_RETURN(auto journal, FileRunJournal::Open(run_dir + "/journal.jsonl"));
      return std::unique_ptr<RunJournal>(std::move(journal));
    }
    case history::StoreSpec::kRedis: {
      TS_ASSIGN_OR_RETURN(history::RedisAddress address, history::ParseRedisUrl(spec.target));
      TS_ASSIGN_OR_RETURN(log, RedisJournalLog::Connect(std::move(address), project, run_id));
      break;
    }
    case history::StoreSpec::kPostgres:
      TS_ASSIGN_OR_RETURN(log, PostgresJournalLog::Connect(std::move(spec.target), project, run_id, !resume));
      break;
  }
  TS_ASSIGN_OR_RETURN(int64_t stored, log->Count());
  return std::unique_ptr<RunJournal>(new QueuedRunJournal(std::move(log), stored));
}

absl::StatusOr<std::vector<JournalEvent>> ReadRunJournal(std::string_view history_spec, std::string_view project,
                                                         std::string_view run_id, const std::string& run_dir) {
  TS_ASSIGN_OR_RETURN(history::StoreSpec spec, history::ParseStoreSpec(history_spec));
  std::unique_ptr<JournalLog> log;
  switch (spec.kind) {
    case history::StoreSpec::kFile:
      return FileRunJournal::Read(run_dir + "/journal.jsonl");
    case history::StoreSpec::kRedis: {
      TS_ASSIGN_OR_RETURN(history::RedisAddress address, history::ParseRedisUrl(spec.target));
      TS_ASSIGN_OR_RETURN(log, RedisJournalLog::Connect(std::move(address), project, run_id));
      break;
    }
    case history::StoreSpec::kPostgres:
      TS_ASSIGN_OR_RETURN(log, PostgresJournalLog::Connect(std::move(spec.target), project, run_id, false));
      break;
  }
  TS_ASSIGN_OR_RETURN(std::vector<std::string> lines, log->ReadAll());
  if (lines.empty()) {
    return absl::NotFoundError(absl::StrCat("no run journal for run ", ToAbsl(run_id), " in ", log->Describe()));
  }
  std::vector<JournalEvent> events;
  events.reserve(lines.size());
  for (size_t i = 0; i < lines.size(); ++i) {
    absl::StatusOr<JournalEvent> e = DecodeJournalEvent(lines[i]);
    if (!e.ok()) return Annotate(e.status(), absl::StrCat(log->Describe(), " line ", i + 1));
    events.push_back(*std::move(e));
  }
  return events;
}

}  // namespace testshard::coordinator
