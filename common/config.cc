#include "common/config.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <functional>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/postgres/connection.h"
#include "common/status.h"
#include "toml++/toml.h"

namespace testshard {
namespace {

namespace fs = std::filesystem;

std::string TypeName(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a number";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    default: return "a date or time";
  }
}

// Walks the document with the file name and key path at hand, so every error can say where it is.
class Reader {
 public:
  explicit Reader(std::string file) : file_(std::move(file)) {}

  absl::Status Error(const toml::node& n, std::string_view key, std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(file_, ":", n.source().begin.line, ": ", ToAbsl(key), ": ", ToAbsl(what)));
  }

  // Refuses keys not in `allowed`: a misspelt key silently ignored is a stage silently not configured.
  absl::Status OnlyKeys(const toml::table& t, std::string_view prefix, const std::set<std::string>& allowed) const {
    for (auto&& [k, v] : t) {
      if (!allowed.count(std::string(k.str()))) {
        return absl::InvalidArgumentError(absl::StrCat(file_, ":", k.source().begin.line, ": ", ToAbsl(prefix),
                                                       ToAbsl(k.str()), ": unknown key (expected one of: ",
                                                       absl::StrJoin(allowed, ", "), ")"));
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::string> String(const toml::node& n, std::string_view key) const {
    if (!n.is_string()) return Error(n, key, absl::StrCat("expected a string, got ", TypeName(n)));
    return std::string(*n.value<std::string>());
  }

  absl::StatusOr<int64_t> Int(const toml::node& n, std::string_view key, int64_t min) const {
    if (!n.is_integer()) return Error(n, key, absl::StrCat("expected an integer, got ", TypeName(n)));
    int64_t v = *n.value<int64_t>();
    if (v < min) return Error(n, key, absl::StrCat("must be at least ", min, ", got ", v));
    return v;
  }

  absl::StatusOr<bool> Bool(const toml::node& n, std::string_view key) const {
    if (!n.is_boolean()) return Error(n, key, absl::StrCat("expected true or false, got ", TypeName(n)));
    return *n.value<bool>();
  }

  absl::StatusOr<std::vector<std::string>> StringList(const toml::node& n, std::string_view key) const {
    const toml::array* a = n.as_array();
    if (!a) return Error(n, key, absl::StrCat("expected an array of strings, got ", TypeName(n)));
    std::vector<std::string> out;
    for (size_t i = 0; i < a->size(); ++i) {
      TS_ASSIGN_OR_RETURN(std::string s, String((*a)[i], absl::StrCat(ToAbsl(key), "[", i, "]")));
      out.push_back(std::move(s));
    }
    return out;
  }

  absl::StatusOr<std::vector<std::string>> Argv(const toml::node& n, std::string_view key) const {
    TS_ASSIGN_OR_RETURN(auto argv, StringList(n, key));
    if (argv.empty() || argv[0].empty()) {
      return Error(n, key, "expected a non-empty argv list such as [\"/usr/bin/python3\", \"-m\", \"pytest\"]");
    }
    return argv;
  }

  absl::StatusOr<std::map<std::string, std::string>> StringMap(const toml::node& n, std::string_view key) const {
    const toml::table* t = n.as_table();
    if (!t) return Error(n, key, absl::StrCat("expected a table of strings, got ", TypeName(n)));
    std::map<std::string, std::string> out;
    for (auto&& [k, v] : *t) {
      std::string name(k.str());
      TS_ASSIGN_OR_RETURN(out[name], String(v, absl::StrCat(ToAbsl(key), ".", name)));
    }
    return out;
  }

  absl::StatusOr<absl::Duration> Duration(const toml::node& n, std::string_view key) const {
    if (n.is_integer() || n.is_floating_point()) {
      double s = n.is_integer() ? static_cast<double>(*n.value<int64_t>()) : *n.value<double>();
      if (s < 0) return Error(n, key, "must not be negative");
      return absl::Seconds(s);
    }
    if (n.is_string()) {
      absl::Duration d;
      if (absl::ParseDuration(*n.value<std::string>(), &d) && d >= absl::ZeroDuration()) return d;
      return Error(n, key, "expected seconds or a duration such as \"90s\" or \"10m\"");
    }
    return Error(n, key, absl::StrCat("expected seconds or a duration string, got ", TypeName(n)));
  }

  absl::Status Database(const toml::node& n, DatabaseConfig* db) const {
    const toml::table* t = n.as_table();
    if (!t) return Error(n, "database", absl::StrCat("expected a table, got ", TypeName(n)));
    TS_RETURN_IF_ERROR(OnlyKeys(*t, "database.",
                                {"mode", "url", "role", "env", "setup", "template_inputs", "setup_timeout", "reset",
                                 "pool_size", "keep_templates", "clone_strategy", "settings", "grants", "bin_dir",
                                 "data_dir", "tcp", "max_connections", "transport", "django_test_db",
                                 "handoff_check", "reuse_templates"}));
    db->mode = DatabaseConfig::Mode::kEmbedded;
    if (const toml::node* m = t->get("mode")) {
      TS_ASSIGN_OR_RETURN(std::string mode, String(*m, "database.mode"));
      if (mode == "embedded") {
        db->mode = DatabaseConfig::Mode::kEmbedded;
      } else if (mode == "server") {
        db->mode = DatabaseConfig::Mode::kServer;
      } else if (mode == "none") {
        db->mode = DatabaseConfig::Mode::kNone;
      } else {
        return Error(*m, "database.mode", absl::StrCat("expected \"embedded\", \"server\" or \"none\", got \"",
                                                       mode, "\""));
      }
    }
    if (const toml::node* u = t->get("url")) {
      TS_ASSIGN_OR_RETURN(db->url, String(*u, "database.url"));
      if (!db->url.empty()) {
        absl::Status parsed = pg::ParseConnection(db->url).status();
        if (!parsed.ok()) return Error(*u, "database.url", ToStd(parsed.message()));
      }
    }
    if (db->mode == DatabaseConfig::Mode::kServer && db->url.empty() && !t->get("url")) {
      return Error(n, "database.url", "mode = \"server\" needs the server's admin URL");
    }
    if (const toml::node* r = t->get("role")) { TS_ASSIGN_OR_RETURN(db->role, String(*r, "database.role")); }
    if (const toml::node* e = t->get("env")) {
      TS_ASSIGN_OR_RETURN(db->env, StringMap(*e, "database.env"));
      for (const auto& [name, tmpl] : db->env) {
        absl::Status valid = pg::ValidateTemplate(tmpl);
        if (!valid.ok()) return Error(*e->as_table()->get(name), "database.env." + name, ToStd(valid.message()));
      }
    }
    if (const toml::node* s = t->get("setup")) {
      const toml::array* a = s->as_array();
      if (!a) return Error(*s, "database.setup", "expected an array of argv lists");
      for (size_t i = 0; i < a->size(); ++i) {
        TS_ASSIGN_OR_RETURN(auto argv, Argv((*a)[i], absl::StrCat("database.setup[", i, "]")));
        db->setup.push_back(std::move(argv));
      }
    }
    if (const toml::node* g = t->get("template_inputs")) {
      TS_ASSIGN_OR_RETURN(db->template_inputs, StringList(*g, "database.template_inputs"));
    }
    if (const toml::node* d = t->get("setup_timeout")) {
      TS_ASSIGN_OR_RETURN(db->setup_timeout, Duration(*d, "database.setup_timeout"));
      if (db->setup_timeout == absl::ZeroDuration()) return Error(*d, "database.setup_timeout", "must be positive");
    }
    if (const toml::node* r = t->get("reset")) {
      TS_ASSIGN_OR_RETURN(db->reset, String(*r, "database.reset"));
      TS_RETURN_IF_ERROR(Reset(*r, "database.reset", db->reset));
    }
    if (const toml::node* p = t->get("pool_size")) {
      TS_ASSIGN_OR_RETURN(int64_t v, Int(*p, "database.pool_size", 0));
      if (v > 64) return Error(*p, "database.pool_size", "at most 64 ready clones per agent");
      db->pool_size = static_cast<int>(v);
    }
    if (const toml::node* k = t->get("keep_templates")) {
      TS_ASSIGN_OR_RETURN(int64_t v, Int(*k, "database.keep_templates", 1));
      db->keep_templates = static_cast<int>(std::min<int64_t>(v, 1000));
    }
    if (const toml::node* c = t->get("clone_strategy")) {
      TS_ASSIGN_OR_RETURN(db->clone_strategy, String(*c, "database.clone_strategy"));
      if (db->clone_strategy != "auto" && db->clone_strategy != "file_copy" && db->clone_strategy != "wal_log") {
        return Error(*c, "database.clone_strategy",
                     absl::StrCat("expected \"auto\", \"file_copy\" or \"wal_log\", got \"", db->clone_strategy, "\""));
      }
    }
    if (const toml::node* s = t->get("settings")) {
      TS_ASSIGN_OR_RETURN(db->settings, StringMap(*s, "database.settings"));
      for (const auto& [name, value] : db->settings) {
        bool plain = !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.';
        });
        if (!plain) {
          return Error(*s->as_table()->get(name), "database.settings." + name,
                       "a setting name is letters, digits, '_' and '.' (such as timezone or app.tenant_mode)");
        }
      }
    }
    if (const toml::node* g = t->get("grants")) {
      TS_ASSIGN_OR_RETURN(db->grants, StringMap(*g, "database.grants"));
      for (auto& [role, privileges] : db->grants) {
        std::string normal;
        for (absl::string_view p : absl::StrSplit(privileges, ',')) {
          std::string word(absl::StripAsciiWhitespace(p));
          for (char& c : word) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
          if (word != "CONNECT" && word != "TEMPORARY" && word != "TEMP" && word != "CREATE" && word != "ALL" &&
              word != "ALL PRIVILEGES") {
            return Error(*g->as_table()->get(role), "database.grants." + role,
                         absl::StrCat("expected database privileges (CONNECT, TEMPORARY, CREATE, ALL), got \"",
                                      privileges, "\""));
          }
          absl::StrAppend(&normal, normal.empty() ? "" : ", ", word);
        }
        privileges = normal;
      }
    }
    if (const toml::node* b = t->get("bin_dir")) { TS_ASSIGN_OR_RETURN(db->bin_dir, String(*b, "database.bin_dir")); }
    if (const toml::node* d = t->get("data_dir")) {
      TS_ASSIGN_OR_RETURN(db->data_dir, String(*d, "database.data_dir"));
    }
    if (const toml::node* b = t->get("tcp")) { TS_ASSIGN_OR_RETURN(db->tcp, Bool(*b, "database.tcp")); }
    if (const toml::node* r = t->get("reuse_templates")) {
      TS_ASSIGN_OR_RETURN(db->reuse_templates, Bool(*r, "database.reuse_templates"));
    }
    if (const toml::node* m = t->get("max_connections")) {
      TS_ASSIGN_OR_RETURN(int64_t v, Int(*m, "database.max_connections", 10));
      db->max_connections = static_cast<int>(std::min<int64_t>(v, 10000));
    }
    TS_RETURN_IF_ERROR(Handoff(*t, db));
    if (db->mode != DatabaseConfig::Mode::kNone && db->env.empty()) {
      return Error(n, "database.env",
                   "name at least one env var to receive the database, e.g. env = { DATABASE_URL = \"{url}\" }");
    }
    return absl::OkStatus();
  }

  absl::Status Reset(const toml::node& n, std::string_view key, const std::string& value) const {
    if (value == "agent" || value == "stage" || value == "shard") return absl::OkStatus();
    return Error(n, key, absl::StrCat("expected \"agent\" (one database per agent), \"stage\" (a fresh one per "
                                      "stage) or \"shard\" (a fresh one per shard), got \"", value, "\""));
  }

  // Picks one of `names` for a string key; `values[i]` is what names[i] means.
  template <typename T>
  absl::Status Choice(const toml::node& n, std::string_view key, const std::vector<std::pair<std::string, T>>& options,
                      T* out) const {
    TS_ASSIGN_OR_RETURN(std::string value, String(n, key));
    std::vector<std::string> quoted;
    for (const auto& [name, v] : options) {
      if (value == name) {
        *out = v;
        return absl::OkStatus();
      }
      quoted.push_back("\"" + name + "\"");
    }
    return Error(n, key, absl::StrCat("expected ", absl::StrJoin(quoted, ", "), ", got \"", value, "\""));
  }

  // The keys that decide how the database reaches the tests, and what is checked about it.
  absl::Status Handoff(const toml::table& t, DatabaseConfig* db) const {
    using T = DatabaseConfig::Transport;
    using D = DatabaseConfig::DjangoTestDb;
    using H = DatabaseConfig::HandoffCheck;
    if (const toml::node* n = t.get("transport")) {
      TS_RETURN_IF_ERROR(Choice<T>(*n, "database.transport", {{"socket", T::kSocket}, {"tcp", T::kTcp}},
                                   &db->transport));
      // A named server is reached the way its URL says; a transport that contradicts it is a mistake.
      if (db->mode == DatabaseConfig::Mode::kServer && !db->url.empty()) {
        auto url = pg::ParseConnection(db->url);
        if (url.ok() && url->is_socket() != (db->transport == T::kSocket)) {
          return Error(*n, "database.transport",
                       absl::StrCat("\"", ToAbsl(TransportName(db->transport)),
                                    "\" but database.url reaches the server ",
                                    url->is_socket() ? "over the unix socket in " : "over TCP at ", url->host,
                                    "; give a URL of that form, or drop the key"));
        }
      }
    }
    if (const toml::node* n = t.get("django_test_db")) {
      TS_RETURN_IF_ERROR(Choice<D>(*n, "database.django_test_db", {{"create", D::kCreate}, {"reuse", D::kReuse}},
                                   &db->django_test_db));
    }
    if (const toml::node* n = t.get("handoff_check")) {
      TS_RETURN_IF_ERROR(Choice<H>(*n, "database.handoff_check",
                                   {{"fail", H::kFail}, {"warn", H::kWarn}, {"off", H::kOff}}, &db->handoff_check));
    }
    return absl::OkStatus();
  }

  absl::Status Stage(const toml::node& n, size_t index, StageConfig* stage) const {
    std::string key = absl::StrCat("stages[", index, "]");
    const toml::table* t = n.as_table();
    if (!t) return Error(n, key, absl::StrCat("expected a table, got ", TypeName(n)));
    TS_RETURN_IF_ERROR(OnlyKeys(*t, key + ".",
                                {"name", "markers", "maxfail", "timeout", "test_timeout", "branches",
                                 "continue_on_failure", "retries", "reset", "granularity", "group_marker"}));
    const toml::node* name = t->get("name");
    if (!name) return Error(n, key + ".name", "every stage needs a name");
    TS_ASSIGN_OR_RETURN(stage->name, String(*name, key + ".name"));
    if (stage->name.empty()) return Error(*name, key + ".name", "must not be empty");
    for (char c : stage->name) {
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) {
        return Error(*name, key + ".name", "use letters, digits, '-', '_' and '.' only");
      }
    }
    if (const toml::node* m = t->get("markers")) {
      TS_ASSIGN_OR_RETURN(stage->markers, String(*m, key + ".markers"));
      absl::Status valid = ValidateMarkerExpression(stage->markers);
      if (!valid.ok()) return Error(*m, key + ".markers", ToStd(valid.message()));
    }
    if (const toml::node* m = t->get("maxfail")) {
      TS_ASSIGN_OR_RETURN(int64_t v, Int(*m, key + ".maxfail", 0));
      stage->maxfail = static_cast<int>(v);
    }
    if (const toml::node* m = t->get("retries")) {
      TS_ASSIGN_OR_RETURN(int64_t v, Int(*m, key + ".retries", 0));
      if (v > 10) return Error(*m, key + ".retries", "at most 10");
      stage->retries = static_cast<int>(v);
    }
    if (const toml::node* m = t->get("timeout")) { TS_ASSIGN_OR_RETURN(stage->timeout, Duration(*m, key + ".timeout")); }
    if (const toml::node* m = t->get("test_timeout")) {
      TS_ASSIGN_OR_RETURN(stage->test_timeout, Duration(*m, key + ".test_timeout"));
    }
    if (const toml::node* m = t->get("branches")) {
      TS_ASSIGN_OR_RETURN(stage->branches, StringList(*m, key + ".branches"));
    }
    if (const toml::node* m = t->get("continue_on_failure")) {
      TS_ASSIGN_OR_RETURN(stage->continue_on_failure, Bool(*m, key + ".continue_on_failure"));
    }
    if (const toml::node* m = t->get("reset")) {
      TS_ASSIGN_OR_RETURN(stage->reset, String(*m, key + ".reset"));
      TS_RETURN_IF_ERROR(Reset(*m, key + ".reset", stage->reset));
    }
    if (const toml::node* m = t->get("granularity")) {
      TS_ASSIGN_OR_RETURN(stage->granularity, String(*m, key + ".granularity"));
      if (stage->granularity != "test" && stage->granularity != "class" && stage->granularity != "module") {
        return Error(*m, key + ".granularity", "expected \"test\", \"class\" or \"module\"");
      }
    }
    if (const toml::node* m = t->get("group_marker")) {
      TS_ASSIGN_OR_RETURN(stage->group_marker, String(*m, key + ".group_marker"));
      const std::string& g = stage->group_marker;
      bool identifier = !g.empty() && !std::isdigit(static_cast<unsigned char>(g[0]));
      for (char c : g) identifier &= std::isalnum(static_cast<unsigned char>(c)) || c == '_';
      if (!identifier) return Error(*m, key + ".group_marker", "expected a marker name such as \"serial_group\"");
    }
    return absl::OkStatus();
  }

  absl::Status Coverage(const toml::node& n, CoverageConfig* cov) const {
    const toml::table* t = n.as_table();
    if (!t) return Error(n, "coverage", absl::StrCat("expected a table, got ", TypeName(n)));
    TS_RETURN_IF_ERROR(
        OnlyKeys(*t, "coverage.", {"enabled", "source", "branch", "cobertura", "lcov", "upload_timeout"}));
    cov->enabled = true;
    if (const toml::node* m = t->get("enabled")) { TS_ASSIGN_OR_RETURN(cov->enabled, Bool(*m, "coverage.enabled")); }
    if (const toml::node* m = t->get("source")) {
      TS_ASSIGN_OR_RETURN(cov->source, StringList(*m, "coverage.source"));
      for (const std::string& s : cov->source) {
        // Passed as --cov=SOURCE in every agent's checkout: an absolute path would name one machine's files.
        if (s.empty() || fs::path(s).is_absolute() || s.find('\0') != std::string::npos) {
          return Error(*m, "coverage.source",
                       absl::StrCat("expected package names or paths relative to workdir, got \"", s, "\""));
        }
      }
    }
    if (const toml::node* m = t->get("branch")) { TS_ASSIGN_OR_RETURN(cov->branch, Bool(*m, "coverage.branch")); }
    for (auto [key, out] : {std::pair{"cobertura", &cov->cobertura}, std::pair{"lcov", &cov->lcov}}) {
      const toml::node* m = t->get(key);
      if (!m) continue;
      std::string name = absl::StrCat("coverage.", key);
      TS_ASSIGN_OR_RETURN(*out, String(*m, name));
      if (out->empty()) return Error(*m, name, "expected a file name, e.g. \"coverage.xml\"");
    }
    if (const toml::node* m = t->get("upload_timeout")) {
      TS_ASSIGN_OR_RETURN(cov->upload_timeout, Duration(*m, "coverage.upload_timeout"));
    }
    if (cov->cobertura.empty() && cov->lcov.empty()) cov->cobertura = "coverage.xml";
    return absl::OkStatus();
  }

  absl::Status Root(const toml::table& t, const toml::node& where, Config* c) const {
    TS_RETURN_IF_ERROR(OnlyKeys(t, "",
                                {"project", "command", "workdir", "agents", "runner", "warm", "env", "database",
                                 "coverage", "stages", "history"}));
    if (const toml::node* n = t.get("project")) { TS_ASSIGN_OR_RETURN(c->project, String(*n, "project")); }
    if (const toml::node* n = t.get("history")) {
      TS_ASSIGN_OR_RETURN(c->history, String(*n, "history"));
      const std::string& h = c->history;
      bool known = false;
      for (std::string_view scheme : {"file:", "redis://", "redis+unix://", "unix:", "postgresql:", "postgres://"}) {
        known |= h.size() > scheme.size() && h.compare(0, scheme.size(), scheme) == 0;
      }
      if (!known) {
        return Error(*n, "history",
                     "expected file:DIR, redis://HOST[:PORT][/DB], unix:/PATH/redis.sock or postgresql://...");
      }
    }
    const toml::node* command = t.get("command");
    if (!command) return Error(where, "command", "missing: the test runner's argv, e.g. [\"/usr/bin/python3\", \"-m\", \"pytest\"]");
    TS_ASSIGN_OR_RETURN(c->command, Argv(*command, "command"));
    if (const toml::node* n = t.get("workdir")) { TS_ASSIGN_OR_RETURN(c->workdir, String(*n, "workdir")); }
    if (const toml::node* n = t.get("agents")) {
      TS_ASSIGN_OR_RETURN(int64_t v, Int(*n, "agents", 0));
      if (v > 4096) return Error(*n, "agents", "at most 4096");
      c->agents = static_cast<int>(v);
    }
    if (const toml::node* n = t.get("runner")) {
      TS_ASSIGN_OR_RETURN(c->runner, String(*n, "runner"));
      if (c->runner != "pytest") return Error(*n, "runner", "only \"pytest\" is supported so far");
    }
    if (const toml::node* n = t.get("env")) { TS_ASSIGN_OR_RETURN(c->env, StringMap(*n, "env")); }
    if (const toml::node* n = t.get("warm")) { TS_ASSIGN_OR_RETURN(c->warm, Bool(*n, "warm")); }
    if (const toml::node* n = t.get("database")) TS_RETURN_IF_ERROR(Database(*n, &c->database));
    if (const toml::node* n = t.get("coverage")) TS_RETURN_IF_ERROR(Coverage(*n, &c->coverage));
    const toml::node* stages = t.get("stages");
    if (!stages) return Error(where, "stages", "missing: at least one [[stages]] table with a name and markers");
    const toml::array* a = stages->as_array();
    if (!a || a->empty()) return Error(*stages, "stages", "expected one or more [[stages]] tables");
    std::set<std::string> names;
    for (size_t i = 0; i < a->size(); ++i) {
      StageConfig s;
      TS_RETURN_IF_ERROR(Stage((*a)[i], i, &s));
      if (!names.insert(s.name).second) {
        return Error(*(*a)[i].as_table()->get("name"), absl::StrCat("stages[", i, "].name"),
                     absl::StrCat("duplicate stage \"", s.name, "\""));
      }
      c->stages.push_back(std::move(s));
    }
    return absl::OkStatus();
  }

 private:
  std::string file_;
};

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read config ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool IsPyproject(const std::string& path) { return fs::path(path).filename() == "pyproject.toml"; }

}  // namespace

std::string_view TransportName(DatabaseConfig::Transport t) {
  switch (t) {
    case DatabaseConfig::Transport::kAuto: return "";
    case DatabaseConfig::Transport::kSocket: return "socket";
    case DatabaseConfig::Transport::kTcp: return "tcp";
  }
  return "";
}

std::string_view DjangoTestDbName(DatabaseConfig::DjangoTestDb d) {
  switch (d) {
    case DatabaseConfig::DjangoTestDb::kNone: return "";
    case DatabaseConfig::DjangoTestDb::kCreate: return "create";
    case DatabaseConfig::DjangoTestDb::kReuse: return "reuse";
  }
  return "";
}

std::string_view HandoffCheckName(DatabaseConfig::HandoffCheck c) {
  switch (c) {
    case DatabaseConfig::HandoffCheck::kFail: return "fail";
    case DatabaseConfig::HandoffCheck::kWarn: return "warn";
    case DatabaseConfig::HandoffCheck::kOff: return "off";
  }
  return "";
}

absl::StatusOr<Config> ParseConfig(std::string_view text, const std::string& path) {
  toml::table doc;
  try {
    doc = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ":", e.source().begin.line, ": ", ToAbsl(e.description())));
  }
  Reader reader(path);
  const toml::table* root = &doc;
  if (IsPyproject(path)) {
    const toml::node* tool = doc.get("tool");
    const toml::node* ts = tool && tool->as_table() ? tool->as_table()->get("testshard") : nullptr;
    if (!ts) return absl::InvalidArgumentError(absl::StrCat(path, ": no [tool.testshard] table"));
    if (!ts->as_table()) return reader.Error(*ts, "tool.testshard", "expected a table");
    root = ts->as_table();
  }
  Config c;
  c.path = path;
  TS_RETURN_IF_ERROR(reader.Root(*root, *root, &c));
  fs::path dir = fs::absolute(fs::path(path)).parent_path();
  c.workdir = (dir / (c.workdir.empty() ? "." : c.workdir)).lexically_normal().string();
  if (c.workdir.size() > 1 && c.workdir.back() == '/') c.workdir.pop_back();
  if (c.project.empty()) c.project = dir.filename().string();
  for (std::string* out : {&c.coverage.cobertura, &c.coverage.lcov}) {
    if (!out->empty()) *out = (dir / *out).lexically_normal().string();
  }
  return c;
}

std::string HistoryStoreSpec(const Config& config) {
  const fs::path dir = fs::absolute(fs::path(config.path)).parent_path();
  if (config.history.empty()) return "file:" + (dir / ".testshard").lexically_normal().string();
  if (config.history.rfind("file:", 0) == 0) {
    fs::path p(config.history.substr(5));
    return "file:" + (p.is_absolute() ? p : (dir / p).lexically_normal()).string();
  }
  return config.history;
}

absl::StatusOr<Config> LoadConfig(const std::string& path) {
  TS_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseConfig(text, path);
}

absl::StatusOr<std::string> FindConfig(const std::string& dir) {
  fs::path d(dir);
  if (fs::exists(d / "testshard.toml")) return (d / "testshard.toml").string();
  fs::path py = d / "pyproject.toml";
  if (fs::exists(py)) {
    auto text = ReadFile(py.string());
    if (text.ok() && text->find("[tool.testshard") != std::string::npos) return py.string();
  }
  return absl::NotFoundError(
      absl::StrCat("no testshard.toml, and no pyproject.toml with [tool.testshard], in ", dir,
                   " (pass --config PATH)"));
}

absl::Status ValidateMarkerExpression(std::string_view expr) {
  // Grammar as pytest's mark/expression.py: expr := and ('or' and)*; and := not ('and' not)*;
  // not := 'not' not | '(' expr ')' | ident. Identifiers are runs of anything but whitespace and parentheses.
  std::vector<std::pair<std::string, size_t>> tokens;
  for (size_t i = 0; i < expr.size();) {
    char c = expr[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
    } else if (c == '(' || c == ')') {
      tokens.emplace_back(std::string(1, c), i++);
    } else {
      size_t start = i;
      while (i < expr.size() && !std::isspace(static_cast<unsigned char>(expr[i])) && expr[i] != '(' &&
             expr[i] != ')') {
        ++i;
      }
      tokens.emplace_back(std::string(expr.substr(start, i - start)), start);
    }
  }
  if (tokens.empty()) return absl::OkStatus();
  size_t pos = 0;
  auto error = [&](std::string_view what) {
    size_t column = pos < tokens.size() ? tokens[pos].second + 1 : expr.size() + 1;
    return absl::InvalidArgumentError(
        absl::StrCat("bad marker expression \"", ToAbsl(expr), "\": ", ToAbsl(what), " at column ", column));
  };
  auto is = [&](std::string_view t) { return pos < tokens.size() && tokens[pos].first == t; };
  std::function<absl::Status()> parse_or, parse_and, parse_not;
  parse_not = [&]() -> absl::Status {
    if (is("not")) {
      ++pos;
      return parse_not();
    }
    if (is("(")) {
      ++pos;
      TS_RETURN_IF_ERROR(parse_or());
      if (!is(")")) return error("expected ')'");
      ++pos;
      return absl::OkStatus();
    }
    if (pos >= tokens.size()) return error("expected a marker name");
    const std::string& t = tokens[pos].first;
    if (t == "and" || t == "or" || t == ")") return error(absl::StrCat("expected a marker name, got '", t, "'"));
    ++pos;
    return absl::OkStatus();
  };
  parse_and = [&]() -> absl::Status {
    TS_RETURN_IF_ERROR(parse_not());
    while (is("and")) {
      ++pos;
      TS_RETURN_IF_ERROR(parse_not());
    }
    return absl::OkStatus();
  };
  parse_or = [&]() -> absl::Status {
    TS_RETURN_IF_ERROR(parse_and());
    while (is("or")) {
      ++pos;
      TS_RETURN_IF_ERROR(parse_and());
    }
    return absl::OkStatus();
  };
  TS_RETURN_IF_ERROR(parse_or());
  if (pos != tokens.size()) return error(absl::StrCat("unexpected '", tokens[pos].first, "'"));
  return absl::OkStatus();
}

}  // namespace testshard
