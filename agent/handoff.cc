#include "agent/handoff.h"

#include <algorithm>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status.h"
#include "spdlog/spdlog.h"

namespace testshard::agent {
namespace {

constexpr char kDjangoPlugin[] = "testshard_django";

// The value a child will see for `name`: the project's env first, else what the agent inherited.
std::string Current(const std::map<std::string, std::string>& env, const std::string& name) {
  if (auto it = env.find(name); it != env.end()) return it->second;
  const char* v = std::getenv(name.c_str());
  return v ? v : "";
}

}  // namespace

absl::Status CheckTransport(const v1::DatabaseSpec& db, const pg::Connection& server) {
  const std::string& want = db.transport();
  if (want.empty() || (want == "tcp") == !server.is_socket()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "database.transport is \"", want, "\" but this agent's server is reached ",
      server.is_socket() ? absl::StrCat("over the unix socket in ", server.host)
                         : absl::StrCat("over TCP at ", server.host, ":", server.port),
      "; give the agent (--database-url) or the coordinator a URL of the other form"));
}

void AddHandoffEnv(const v1::DatabaseSpec& db, std::string_view database, std::string_view application_name,
                   std::string_view plugin_dir, std::map<std::string, std::string>* env) {
  if (db.handoff_check() != "off" && !application_name.empty()) {
    // libpq (psycopg2, Django, SQLAlchemy) puts it in application_name unless the code sets one itself.
    env->emplace("PGAPPNAME", std::string(application_name));
  }
  if (db.django_test_db() == "reuse") {
    (*env)["TESTSHARD_DJANGO_REUSE_DB"] = std::string(database);
    std::string plugins = Current(*env, "PYTEST_PLUGINS");
    bool loaded = false;
    for (absl::string_view p : absl::StrSplit(plugins, ',')) loaded |= p == kDjangoPlugin;
    if (!loaded) (*env)["PYTEST_PLUGINS"] = plugins.empty() ? kDjangoPlugin : absl::StrCat(plugins, ",", kDjangoPlugin);
    std::string path = Current(*env, "PYTHONPATH");
    (*env)["PYTHONPATH"] = path.empty() ? std::string(plugin_dir) : absl::StrCat(ToAbsl(plugin_dir), ":", path);
  }
}

absl::StatusOr<std::unique_ptr<HandoffMonitor>> StartHandoffCheck(const v1::DatabaseSpec& db,
                                                                  const pg::Connection& admin,
                                                                  const std::string& database,
                                                                  const std::string& agent_name,
                                                                  const std::string& application_name,
                                                                  const std::string& log_path) {
  std::string advice = db.django_test_db() == "create" ? DjangoNameAdvice(database) : "";
  if (db.handoff_check() == "off") {
    if (!advice.empty()) spdlog::warn("{}: {}", agent_name, advice);
    return std::unique_ptr<HandoffMonitor>();
  }
  HandoffMonitorOptions o;
  o.admin = admin;
  o.identity.agent = agent_name;
  o.identity.application_name = application_name;
  o.identity.env_names_database = false;
  for (const auto& [name, tmpl] : db.env()) {
    o.identity.env_vars.push_back(name);
    for (const char* p : {"{dbname}", "{url}", "{sqlalchemy_url}", "{asyncpg_url}"}) {
      o.identity.env_names_database |= tmpl.find(p) != std::string::npos;
    }
  }
  std::sort(o.identity.env_vars.begin(), o.identity.env_vars.end());
  o.log_path = log_path;
  TS_ASSIGN_OR_RETURN(std::unique_ptr<HandoffMonitor> m, HandoffMonitor::Start(std::move(o)));
  m->SetDatabase(database);
  if (!advice.empty()) m->Note(absl::StrCat("agent ", agent_name, ": ", advice));
  return m;
}

}  // namespace testshard::agent
