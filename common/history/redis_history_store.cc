#include "common/history/redis_history_store.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <random>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace testshard::history {
namespace {

// Fields per HMGET/HSET: big enough to amortise the round trip, small enough not to stall the server.
constexpr size_t kChunk = 1000;
constexpr int kMaxAttempts = 50;

}  // namespace

std::string RedisHistoryStore::KeyFor(std::string_view project) {
  // Braces make it a Redis Cluster hash tag, should the store ever be sharded.
  return absl::StrCat("testshard:history:{", ToAbsl(project), "}");
}

RedisHistoryStore::RedisHistoryStore(RedisAddress address, HistoryOptions options)
    : options_(options), conn_(std::move(address)) {}

RedisHistoryStore::~RedisHistoryStore() {
  absl::MutexLock l(&mu_);
  conn_.Drop();
}

absl::StatusOr<std::unique_ptr<RedisHistoryStore>> RedisHistoryStore::Connect(RedisAddress address,
                                                                               HistoryOptions options) {
  std::unique_ptr<RedisHistoryStore> store(new RedisHistoryStore(std::move(address), options));
  {
    absl::MutexLock l(&store->mu_);
    ScopedSigpipeBlock no_sigpipe;
    TS_RETURN_IF_ERROR(store->conn_.EnsureConnected());
  }
  return store;
}

// Only the connection's immutable address is read, so no lock (Update() calls this holding mu_).
std::string RedisHistoryStore::Describe() const ABSL_NO_THREAD_SAFETY_ANALYSIS { return conn_.Describe(); }

absl::StatusOr<std::vector<TestHistory>> RedisHistoryStore::ReadLocked(const std::string& key,
                                                                       const std::vector<std::string>& ids) {
  std::vector<RedisCommand> commands;
  for (size_t begin = 0; begin < ids.size(); begin += kChunk) {
    RedisCommand cmd = {"HMGET", key};
    size_t end = std::min(ids.size(), begin + kChunk);
    cmd.insert(cmd.end(), ids.begin() + begin, ids.begin() + end);
    commands.push_back(std::move(cmd));
  }
  TS_ASSIGN_OR_RETURN(std::vector<RedisReply> replies, conn_.Pipeline(commands));
  std::vector<TestHistory> out;
  for (size_t c = 0; c < replies.size(); ++c) {
    const redisReply* r = replies[c].get();
    if (r->type == REDIS_REPLY_ERROR) return RedisReplyError(r, "HMGET");
    if (r->type != REDIS_REPLY_ARRAY) return absl::InternalError("redis: HMGET did not answer an array");
    for (size_t i = 0; i < r->elements; ++i) {
      const redisReply* e = r->element[i];
      if (e->type != REDIS_REPLY_STRING) continue;  // nil: no record
      const std::string& id = ids[c * kChunk + i];
      absl::StatusOr<TestHistory> h = DecodeJson(std::string_view(e->str, e->len), id);
      if (!h.ok()) return Annotate(h.status(), absl::StrCat("redis ", key, " field '", id, "'"));
      h->test_id = id;
      out.push_back(*std::move(h));
    }
  }
  return out;
}

absl::StatusOr<bool> RedisHistoryStore::WriteLocked(const std::string& key, const std::vector<TestHistory>& records) {
  std::vector<RedisCommand> commands = {{"MULTI"}};
  for (size_t begin = 0; begin < records.size(); begin += kChunk) {
    RedisCommand cmd = {"HSET", key};
    for (size_t i = begin; i < std::min(records.size(), begin + kChunk); ++i) {
      cmd.push_back(records[i].test_id);
      cmd.push_back(EncodeJson(records[i], /*with_id=*/false));
    }
    commands.push_back(std::move(cmd));
  }
  commands.push_back({"EXEC"});
  TS_ASSIGN_OR_RETURN(std::vector<RedisReply> replies, conn_.Pipeline(commands));
  for (size_t i = 0; i + 1 < replies.size(); ++i) {
    if (replies[i]->type == REDIS_REPLY_ERROR) return RedisReplyError(replies[i].get(), commands[i].front());
  }
  const redisReply* exec = replies.back().get();
  if (exec->type == REDIS_REPLY_NIL) return false;  // a WATCHed key changed
  if (exec->type == REDIS_REPLY_ERROR) return RedisReplyError(exec, "EXEC");
  if (exec->type != REDIS_REPLY_ARRAY) return absl::InternalError("redis: EXEC did not answer an array");
  for (size_t i = 0; i < exec->elements; ++i) {
    if (exec->element[i]->type == REDIS_REPLY_ERROR) return RedisReplyError(exec->element[i], "HSET");
  }
  return true;
}

absl::StatusOr<std::vector<TestHistory>> RedisHistoryStore::Read(std::string_view project,
                                                                 const std::vector<std::string>& test_ids) {
  TS_RETURN_IF_ERROR(CheckProject(project));
  absl::MutexLock l(&mu_);
  ScopedSigpipeBlock no_sigpipe;
  TS_RETURN_IF_ERROR(conn_.EnsureConnected());
  absl::StatusOr<std::vector<TestHistory>> out = ReadLocked(KeyFor(project), test_ids);
  if (!out.ok() && absl::IsUnavailable(out.status())) conn_.Drop();
  return out;
}

absl::StatusOr<std::vector<TestHistory>> RedisHistoryStore::ReadAll(std::string_view project) {
  TS_RETURN_IF_ERROR(CheckProject(project));
  const std::string key = KeyFor(project);
  absl::MutexLock l(&mu_);
  ScopedSigpipeBlock no_sigpipe;
  TS_RETURN_IF_ERROR(conn_.EnsureConnected());
  // HSCAN rather than HGETALL: a million-field hash comes back in slices without stalling the server. A field may
  // be reported twice; the map keeps one.
  std::unordered_map<std::string, TestHistory> seen;
  std::string cursor = "0";
  do {
    absl::StatusOr<RedisReply> r = conn_.Call({"HSCAN", key, cursor, "COUNT", std::to_string(kChunk)});
    if (!r.ok()) {
      if (absl::IsUnavailable(r.status())) conn_.Drop();
      return r.status();
    }
    const redisReply* reply = r->get();
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2) return absl::InternalError("redis: bad HSCAN reply");
    cursor.assign(reply->element[0]->str, reply->element[0]->len);
    const redisReply* items = reply->element[1];
    for (size_t i = 0; i + 1 < items->elements; i += 2) {
      std::string id(items->element[i]->str, items->element[i]->len);
      absl::StatusOr<TestHistory> h =
          DecodeJson(std::string_view(items->element[i + 1]->str, items->element[i + 1]->len), id);
      if (!h.ok()) return Annotate(h.status(), absl::StrCat("redis ", key, " field '", id, "'"));
      h->test_id = id;
      seen.insert_or_assign(std::move(id), *std::move(h));
    }
  } while (cursor != "0");
  std::vector<TestHistory> out;
  out.reserve(seen.size());
  for (auto& [id, h] : seen) out.push_back(std::move(h));
  return out;
}

absl::StatusOr<bool> RedisHistoryStore::TryUpdateLocked(const std::string& key, const std::vector<std::string>& ids,
                                                         const std::vector<Sample>& samples) {
  TS_RETURN_IF_ERROR(conn_.EnsureConnected());
  TS_RETURN_IF_ERROR(conn_.Call({"WATCH", key}).status());
  TS_ASSIGN_OR_RETURN(std::vector<TestHistory> existing, ReadLocked(key, ids));
  ApplySamples(existing, samples, options_);
  return WriteLocked(key, existing);
}

absl::Status RedisHistoryStore::Update(std::string_view project, const std::vector<Sample>& samples) {
  TS_RETURN_IF_ERROR(CheckProject(project));
  std::vector<std::string> ids;
  {
    std::unordered_set<std::string_view> distinct;
    for (const Sample& s : samples) {
      if (s.outcome != Outcome::kNotRun && distinct.insert(s.test_id).second) ids.push_back(s.test_id);
    }
  }
  if (ids.empty()) return absl::OkStatus();
  const std::string key = KeyFor(project);
  std::minstd_rand jitter(std::random_device{}());
  absl::MutexLock l(&mu_);
  ScopedSigpipeBlock no_sigpipe;
  for (int attempt = 0; attempt < kMaxAttempts; ++attempt) {
    absl::StatusOr<bool> committed = TryUpdateLocked(key, ids, samples);
    if (!committed.ok()) {
      // The connection may be mid-transaction or WATCHing; a fresh one is the simplest clean state.
      conn_.Drop();
      return Annotate(committed.status(), "updating the history in " + Describe());
    }
    if (*committed) return absl::OkStatus();
    // Lost the race to another writer: back off a little (jittered, growing) and redo the read-modify-write.
    // Sleeping under mu_ is deliberate: this connection is useless to other threads until the retry is done.
    int max_ms = std::min(50, 1 + attempt * 2);
    std::this_thread::sleep_for(std::chrono::milliseconds(jitter() % max_ms));
  }
  return absl::AbortedError(absl::StrCat("redis history update of ", key, " lost to concurrent writers ",
                                         kMaxAttempts, " times"));
}

absl::Status RedisHistoryStore::Put(std::string_view project, const std::vector<TestHistory>& records) {
  TS_RETURN_IF_ERROR(CheckProject(project));
  if (records.empty()) return absl::OkStatus();
  absl::MutexLock l(&mu_);
  ScopedSigpipeBlock no_sigpipe;
  TS_RETURN_IF_ERROR(conn_.EnsureConnected());
  absl::StatusOr<bool> committed = WriteLocked(KeyFor(project), records);
  if (!committed.ok()) {
    conn_.Drop();
    return Annotate(committed.status(), "writing the history to " + Describe());
  }
  return absl::OkStatus();
}

}  // namespace testshard::history
