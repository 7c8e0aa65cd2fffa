#include "common/history/redis_history_store.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>

#include <algorithm>
#include <random>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace testshard::history {
namespace {

// Fields per HMGET/HSET: big enough to amortise the round trip, small enough not to stall the server.
constexpr size_t kChunk = 1000;
constexpr int kMaxAttempts = 50;

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;
using Command = std::vector<std::string>;


absl::Status ReplyError(const redisReply* r, std::string_view what) {
  std::string text(r->str, r->len);
  std::string message = absl::StrCat("redis ", ToAbsl(what), ": ", text);
  if (text.rfind("NOAUTH", 0) == 0 || text.rfind("WRONGPASS", 0) == 0) return absl::PermissionDeniedError(message);
  if (text.rfind("WRONGTYPE", 0) == 0) return absl::FailedPreconditionError(message);
  if (text.rfind("LOADING", 0) == 0 || text.rfind("BUSY", 0) == 0) return absl::UnavailableError(message);
  return absl::InternalError(message);
}

// hiredis writes with write(2), so a server that went away raises SIGPIPE, whose default action kills the whole
// process. A library must not change the process's signal dispositions, so for the duration of a call the signal
// is blocked in this thread only, and one it raised is consumed before unblocking (the classic recipe for
// libraries, as in libcurl's sigpipe.h).
class ScopedSigpipeBlock {
 public:
  ScopedSigpipeBlock() {
    sigset_t pipe;
    sigemptyset(&pipe);
    sigaddset(&pipe, SIGPIPE);
    sigset_t pending;
    sigpending(&pending);
    was_pending_ = sigismember(&pending, SIGPIPE) == 1;
    pthread_sigmask(SIG_BLOCK, &pipe, &old_);
  }
  ~ScopedSigpipeBlock() {
    if (!was_pending_) {
      sigset_t pending;
      sigpending(&pending);
      if (sigismember(&pending, SIGPIPE) == 1) {
        sigset_t pipe;
        sigemptyset(&pipe);
        sigaddset(&pipe, SIGPIPE);
        const timespec zero{0, 0};
        sigtimedwait(&pipe, nullptr, &zero);
      }
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }

 private:
  sigset_t old_;
  bool was_pending_ = false;
};

}  // namespace

absl::StatusOr<RedisAddress> ParseRedisUrl(std::string_view url) {
  RedisAddress a;
  auto parse_query = [&](std::string_view query) -> absl::Status {
    while (!query.empty()) {
      size_t amp = query.find('&');
      std::string_view kv = query.substr(0, amp);
      query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
      size_t eq = kv.find('=');
      std::string_view k = kv.substr(0, eq);
      std::string_view v = eq == std::string_view::npos ? std::string_view() : kv.substr(eq + 1);
      if (k == "db") {
        if (!absl::SimpleAtoi(ToAbsl(v), &a.db)) return absl::InvalidArgumentError("bad db in redis url");
      } else if (k == "password") {
        a.password = std::string(v);
      } else {
        return absl::InvalidArgumentError(absl::StrCat("unknown redis url parameter '", ToAbsl(k), "'"));
      }
    }
    return absl::OkStatus();
  };
  auto unix_path = [&](std::string_view rest) -> absl::Status {
    size_t q = rest.find('?');
    a.unix_socket = std::string(rest.substr(0, q));
    if (a.unix_socket.empty() || a.unix_socket[0] != '/') {
      return absl::InvalidArgumentError(absl::StrCat("redis unix socket must be an absolute path: '",
                                                     ToAbsl(url), "'"));
    }
    if (q != std::string_view::npos) TS_RETURN_IF_ERROR(parse_query(rest.substr(q + 1)));
    return absl::OkStatus();
  };
  auto strip = [&](std::string_view prefix) {
    if (url.substr(0, prefix.size()) != prefix) return false;
    url.remove_prefix(prefix.size());
    return true;
  };
  if (strip("redis+unix://") || strip("unix://") || strip("unix:")) {
    TS_RETURN_IF_ERROR(unix_path(url));
    return a;
  }
  if (!strip("redis://")) return absl::InvalidArgumentError(absl::StrCat("not a redis url: '", ToAbsl(url), "'"));
  size_t at = url.rfind('@');
  if (at != std::string_view::npos) {
    std::string_view auth = url.substr(0, at);
    size_t colon = auth.find(':');
    a.password = std::string(colon == std::string_view::npos ? auth : auth.substr(colon + 1));
    url.remove_prefix(at + 1);
  }
  size_t slash = url.find('/');
  std::string_view hostport = url.substr(0, slash);
  if (slash != std::string_view::npos) {
    std::string_view path = url.substr(slash + 1);
    size_t q = path.find('?');
    if (!path.substr(0, q).empty() && !absl::SimpleAtoi(ToAbsl(path.substr(0, q)), &a.db)) {
      return absl::InvalidArgumentError("bad db in redis url");
    }
    if (q != std::string_view::npos) TS_RETURN_IF_ERROR(parse_query(path.substr(q + 1)));
  }
  size_t colon = hostport.rfind(':');
  if (colon != std::string_view::npos && hostport.find(']') == std::string_view::npos) {
    if (!absl::SimpleAtoi(ToAbsl(hostport.substr(colon + 1)), &a.port)) {
      return absl::InvalidArgumentError("bad port in redis url");
    }
    hostport = hostport.substr(0, colon);
  }
  a.host = hostport.empty() ? "127.0.0.1" : std::string(hostport);
  return a;
}

std::string RedisHistoryStore::KeyFor(std::string_view project) {
  // Braces make it a Redis Cluster hash tag, should the store ever be sharded.
  return absl::StrCat("testshard:history:{", ToAbsl(project), "}");
}

RedisHistoryStore::RedisHistoryStore(RedisAddress address, HistoryOptions options)
    : address_(std::move(address)), options_(options) {}

RedisHistoryStore::~RedisHistoryStore() {
  absl::MutexLock l(&mu_);
  DropLocked();
}

absl::StatusOr<std::unique_ptr<RedisHistoryStore>> RedisHistoryStore::Connect(RedisAddress address,
                                                                               HistoryOptions options) {
  std::unique_ptr<RedisHistoryStore> store(new RedisHistoryStore(std::move(address), options));
  {
    absl::MutexLock l(&store->mu_);
    ScopedSigpipeBlock no_sigpipe;
    TS_RETURN_IF_ERROR(store->EnsureConnectedLocked());
  }
  return store;
}

std::string RedisHistoryStore::Describe() const {
  if (!address_.unix_socket.empty()) return "unix:" + address_.unix_socket;
  return absl::StrCat("redis://", address_.host, ":", address_.port, "/", address_.db);
}

void RedisHistoryStore::DropLocked() {
  if (context_) redisFree(context_);
  context_ = nullptr;
}

namespace {

// Sends `commands` in one pipeline and returns their replies; a transport failure is kUnavailable. Reply errors
// are returned as replies, for the caller to judge.
absl::StatusOr<std::vector<Reply>> Pipeline(redisContext* c, const std::vector<Command>& commands) {
  for (const Command& cmd : commands) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (const std::string& a : cmd) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    if (redisAppendCommandArgv(c, static_cast<int>(argv.size()), argv.data(), lens.data()) != REDIS_OK) {
      return absl::UnavailableError(absl::StrCat("redis: ", c->errstr));
    }
  }
  std::vector<Reply> replies;
  replies.reserve(commands.size());
  for (size_t i = 0; i < commands.size(); ++i) {
    void* raw = nullptr;
    if (redisGetReply(c, &raw) != REDIS_OK || raw == nullptr) {
      return absl::UnavailableError(absl::StrCat("redis: ", c->err ? c->errstr : "no reply"));
    }
    replies.emplace_back(static_cast<redisReply*>(raw));
  }
  return replies;
}

absl::StatusOr<Reply> Call(redisContext* c, const Command& command) {
  TS_ASSIGN_OR_RETURN(std::vector<Reply> replies, Pipeline(c, {command}));
  Reply r = std::move(replies.front());
  if (r->type == REDIS_REPLY_ERROR) return ReplyError(r.get(), command.front());
  return r;
}

}  // namespace

absl::Status RedisHistoryStore::EnsureConnectedLocked() {
  if (context_ && context_->err == 0) return absl::OkStatus();
  DropLocked();
  const timeval tv = absl::ToTimeval(address_.timeout);
  redisContext* c = address_.unix_socket.empty()
                        ? redisConnectWithTimeout(address_.host.c_str(), address_.port, tv)
                        : redisConnectUnixWithTimeout(address_.unix_socket.c_str(), tv);
  if (c == nullptr) return absl::ResourceExhaustedError("redis: cannot allocate a context");
  if (c->err) {
    absl::Status s = absl::UnavailableError(absl::StrCat("cannot connect to redis at ", Describe(), ": ", c->errstr));
    redisFree(c);
    return s;
  }
  redisSetTimeout(c, tv);
  context_ = c;
  absl::Status s = AuthAndSelectLocked();
  if (!s.ok()) DropLocked();
  return s;
}

absl::Status RedisHistoryStore::AuthAndSelectLocked() {
  if (!address_.password.empty()) TS_RETURN_IF_ERROR(Call(context_, {"AUTH", address_.password}).status());
  if (address_.db != 0) TS_RETURN_IF_ERROR(Call(context_, {"SELECT", std::to_string(address_.db)}).status());
  return absl::OkStatus();
}

absl::StatusOr<std::vector<TestHistory>> RedisHistoryStore::ReadLocked(const std::string& key,
                                                                       const std::vector<std::string>& ids) {
  std::vector<Command> commands;
  for (size_t begin = 0; begin < ids.size(); begin += kChunk) {
    Command cmd = {"HMGET", key};
    size_t end = std::min(ids.size(), begin + kChunk);
    cmd.insert(cmd.end(), ids.begin() + begin, ids.begin() + end);
    commands.push_back(std::move(cmd));
  }
  TS_ASSIGN_OR_RETURN(std::vector<Reply> replies, Pipeline(context_, commands));
  std::vector<TestHistory> out;
  for (size_t c = 0; c < replies.size(); ++c) {
    const redisReply* r = replies[c].get();
    if (r->type == REDIS_REPLY_ERROR) return ReplyError(r, "HMGET");
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
  std::vector<Command> commands = {{"MULTI"}};
  for (size_t begin = 0; begin < records.size(); begin += kChunk) {
    Command cmd = {"HSET", key};
    for (size_t i = begin; i < std::min(records.size(), begin + kChunk); ++i) {
      cmd.push_back(records[i].test_id);
      cmd.push_back(EncodeJson(records[i], /*with_id=*/false));
    }
    commands.push_back(std::move(cmd));
  }
  commands.push_back({"EXEC"});
  TS_ASSIGN_OR_RETURN(std::vector<Reply> replies, Pipeline(context_, commands));
  for (size_t i = 0; i + 1 < replies.size(); ++i) {
    if (replies[i]->type == REDIS_REPLY_ERROR) return ReplyError(replies[i].get(), commands[i].front());
  }
  const redisReply* exec = replies.back().get();
  if (exec->type == REDIS_REPLY_NIL) return false;  // a WATCHed key changed
  if (exec->type == REDIS_REPLY_ERROR) return ReplyError(exec, "EXEC");
  if (exec->type != REDIS_REPLY_ARRAY) return absl::InternalError("redis: EXEC did not answer an array");
  for (size_t i = 0; i < exec->elements; ++i) {
    if (exec->element[i]->type == REDIS_REPLY_ERROR) return ReplyError(exec->element[i], "HSET");
  }
  return true;
}

absl::StatusOr<std::vector<TestHistory>> RedisHistoryStore::Read(std::string_view project,
                                                                 const std::vector<std::string>& test_ids) {
  TS_RETURN_IF_ERROR(CheckProject(project));
  absl::MutexLock l(&mu_);
  ScopedSigpipeBlock no_sigpipe;
  TS_RETURN_IF_ERROR(EnsureConnectedLocked());
  absl::StatusOr<std::vector<TestHistory>> out = ReadLocked(KeyFor(project), test_ids);
  if (!out.ok() && absl::IsUnavailable(out.status())) DropLocked();
  return out;
}

absl::StatusOr<std::vector<TestHistory>> RedisHistoryStore::ReadAll(std::string_view project) {
  TS_RETURN_IF_ERROR(CheckProject(project));
  const std::string key = KeyFor(project);
  absl::MutexLock l(&mu_);
  ScopedSigpipeBlock no_sigpipe;
  TS_RETURN_IF_ERROR(EnsureConnectedLocked());
  // HSCAN rather than HGETALL: a million-field hash comes back in slices without stalling the server. A field may
  // be reported twice; the map keeps one.
  std::unordered_map<std::string, TestHistory> seen;
  std::string cursor = "0";
  do {
    absl::StatusOr<Reply> r = Call(context_, {"HSCAN", key, cursor, "COUNT", std::to_string(kChunk)});
    if (!r.ok()) {
      if (absl::IsUnavailable(r.status())) DropLocked();
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
  TS_RETURN_IF_ERROR(EnsureConnectedLocked());
  TS_RETURN_IF_ERROR(Call(context_, {"WATCH", key}).status());
  TS_ASSIGN_OR_RETURN(std::vector<TestHistory> existing, ReadLocked(key, ids));
  std::unordered_map<std::string, size_t> index;
  for (size_t i = 0; i < existing.size(); ++i) index.emplace(existing[i].test_id, i);
  for (const Sample& s : samples) {
    if (s.outcome == Outcome::kNotRun) continue;
    auto [it, inserted] = index.emplace(s.test_id, existing.size());
    if (inserted) {
      existing.emplace_back();
      existing.back().test_id = s.test_id;
    }
    ApplySample(existing[it->second], s, options_);
  }
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
      DropLocked();
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
  TS_RETURN_IF_ERROR(EnsureConnectedLocked());
  absl::StatusOr<bool> committed = WriteLocked(KeyFor(project), records);
  if (!committed.ok()) {
    DropLocked();
    return Annotate(committed.status(), "writing the history to " + Describe());
  }
  return absl::OkStatus();
}

}  // namespace testshard::history
