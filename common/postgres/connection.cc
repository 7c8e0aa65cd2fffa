#include "common/postgres/connection.h"

#include <libpq-fe.h>

#include <cctype>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"

namespace testshard::pg {
namespace {

std::string PercentEncode(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out += absl::StrFormat("%%%02X", c);
    }
  }
  return out;
}

// Calls `emit` for each literal run and each placeholder name in `tmpl`.
template <typename Literal, typename Placeholder>
absl::Status Scan(std::string_view tmpl, Literal literal, Placeholder placeholder) {
  for (size_t i = 0; i < tmpl.size();) {
    if (tmpl.compare(i, 2, "{{") == 0 || tmpl.compare(i, 2, "}}") == 0) {
      literal(tmpl.substr(i, 1));
      i += 2;
    } else if (tmpl[i] == '{') {
      size_t end = tmpl.find('}', i);
      if (end == std::string_view::npos) {
        return absl::InvalidArgumentError(absl::StrCat("unclosed '{' in \"", ToAbsl(tmpl), "\""));
      }
      TS_RETURN_IF_ERROR(placeholder(tmpl.substr(i + 1, end - i - 1)));
      i = end + 1;
    } else {
      literal(tmpl.substr(i, 1));
      ++i;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Value(std::string_view name, const Connection& c) {
  if (name == "url") return c.Url();
  if (name == "sqlalchemy_url") return c.Url("postgresql+psycopg2");
  if (name == "asyncpg_url") return c.Url("postgresql+asyncpg");
  if (name == "host") return c.host;
  if (name == "port") return std::to_string(c.port);
  if (name == "user") return c.user;
  if (name == "password") return c.password;
  if (name == "dbname") return c.dbname;
  if (name == "socket_dir") return c.is_socket() ? c.host : std::string();
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown placeholder {", ToAbsl(name),
      "} (known: {url} {sqlalchemy_url} {asyncpg_url} {host} {port} {user} {password} {dbname} {socket_dir})"));
}

}  // namespace

Connection Connection::WithDb(std::string_view db) const {
  Connection c = *this;
  c.dbname = std::string(db);
  return c;
}

Connection Connection::WithUser(std::string_view u, std::string_view pw) const {
  Connection c = *this;
  c.user = std::string(u);
  c.password = std::string(pw);
  return c;
}

std::string Connection::Url(std::string_view scheme) const {
  std::string auth = PercentEncode(user);
  if (!password.empty()) auth += ":" + PercentEncode(password);
  if (!auth.empty()) auth += "@";
  if (is_socket()) {
    return absl::StrCat(ToAbsl(scheme), "://", auth, "/", PercentEncode(dbname), "?host=", PercentEncode(host),
                        "&port=", port);
  }
  return absl::StrCat(ToAbsl(scheme), "://", auth, host, ":", port, "/", PercentEncode(dbname));
}

std::string Connection::Conninfo() const {
  std::string s = absl::StrCat("host=", QuoteConninfo(host), " port=", port, " dbname=", QuoteConninfo(dbname));
  if (!user.empty()) s += " user=" + QuoteConninfo(user);
  if (!password.empty()) s += " password=" + QuoteConninfo(password);
  return s;
}

absl::StatusOr<Connection> ParseConnection(std::string_view text) {
  char* err = nullptr;
  std::string input(text);
  PQconninfoOption* opts = PQconninfoParse(input.c_str(), &err);
  if (!opts) {
    std::string msg = err ? err : "cannot parse";
    if (err) PQfreemem(err);
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    return absl::InvalidArgumentError(absl::StrCat("bad PostgreSQL URL: ", msg));
  }
  std::unique_ptr<PQconninfoOption, decltype(&PQconninfoFree)> guard(opts, PQconninfoFree);
  Connection c;
  c.host = "";
  for (PQconninfoOption* o = opts; o->keyword; ++o) {
    if (!o->val) continue;
    std::string_view k = o->keyword;
    if (k == "host") c.host = o->val;
    if (k == "hostaddr" && c.host.empty()) c.host = o->val;
    if (k == "port" && *o->val) c.port = std::atoi(o->val);
    if (k == "user") c.user = o->val;
    if (k == "password") c.password = o->val;
    if (k == "dbname") c.dbname = o->val;
  }
  if (c.host.empty()) c.host = "/var/run/postgresql";  // libpq's compiled-in default on Debian
  if (c.dbname.empty()) c.dbname = c.user.empty() ? "postgres" : c.user;
  return c;
}

absl::StatusOr<std::string> RenderTemplate(std::string_view tmpl, const Connection& c) {
  std::string out;
  TS_RETURN_IF_ERROR(Scan(
      tmpl, [&](std::string_view lit) { out.append(lit); },
      [&](std::string_view name) -> absl::Status {
        TS_ASSIGN_OR_RETURN(std::string v, Value(name, c));
        out += v;
        return absl::OkStatus();
      }));
  return out;
}

absl::Status ValidateTemplate(std::string_view tmpl) {
  Connection c;
  return RenderTemplate(tmpl, c).status();
}

std::string QuoteConninfo(std::string_view v) {
  std::string out = "'";
  for (char c : v) {
    if (c == '\'' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out + "'";
}

std::string QuoteLiteral(std::string_view value) {
  bool backslash = value.find('\\') != std::string_view::npos;
  std::string out = backslash ? "E'" : "'";
  for (char c : value) {
    if (c == '\'' || (backslash && c == '\\')) out.push_back(c);
    out.push_back(c);
  }
  return out + "'";
}

std::string QuoteIdent(std::string_view name) {
  std::string out = "\"";
  for (char ch : name) {
    if (ch == '"') out.push_back('"');
    out.push_back(ch);
  }
  return out + "\"";
}

}  // namespace testshard::pg
