#include "common/history/redis_connection.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <sys/time.h>

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace testshard::history {

void RedisReplyDeleter::operator()(redisReply* r) const { freeReplyObject(r); }

absl::Status RedisReplyError(const redisReply* r, std::string_view what) {
  std::string text(r->str, r->len);
  std::string message = absl::StrCat("redis ", ToAbsl(what), ": ", text);
  if (text.rfind("NOAUTH", 0) == 0 || text.rfind("WRONGPASS", 0) == 0) return absl::PermissionDeniedError(message);
  if (text.rfind("WRONGTYPE", 0) == 0) return absl::FailedPreconditionError(message);
  if (text.rfind("LOADING", 0) == 0 || text.rfind("BUSY", 0) == 0) return absl::UnavailableError(message);
  return absl::InternalError(message);
}

ScopedSigpipeBlock::ScopedSigpipeBlock() {
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  sigset_t pending;
  sigpending(&pending);
  was_pending_ = sigismember(&pending, SIGPIPE) == 1;
  pthread_sigmask(SIG_BLOCK, &pipe, &old_);
}

ScopedSigpipeBlock::~ScopedSigpipeBlock() {
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

std::string RedisConnection::Describe() const {
  if (!address_.unix_socket.empty()) return "unix:" + address_.unix_socket;
  return absl::StrCat("redis://", address_.host, ":", address_.port, "/", address_.db);
}

void RedisConnection::Drop() {
  if (context_) redisFree(context_);
  context_ = nullptr;
}

absl::Status RedisConnection::EnsureConnected() {
  if (context_ && context_->err == 0) return absl::OkStatus();
  Drop();
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
  absl::Status s = absl::OkStatus();
  if (!address_.password.empty()) s = Call({"AUTH", address_.password}).status();
  if (s.ok() && address_.db != 0) s = Call({"SELECT", std::to_string(address_.db)}).status();
  if (!s.ok()) Drop();
  return s;
}

absl::StatusOr<std::vector<RedisReply>> RedisConnection::Pipeline(const std::vector<RedisCommand>& commands) {
  redisContext* c = context_;
  if (c == nullptr) return absl::UnavailableError("redis: not connected");
  for (const RedisCommand& cmd : commands) {
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
  std::vector<RedisReply> replies;
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

absl::StatusOr<RedisReply> RedisConnection::Call(const RedisCommand& command) {
  TS_ASSIGN_OR_RETURN(std::vector<RedisReply> replies, Pipeline({command}));
  RedisReply r = std::move(replies.front());
  if (r->type == REDIS_REPLY_ERROR) return RedisReplyError(r.get(), command.front());
  return r;
}

}  // namespace testshard::history
