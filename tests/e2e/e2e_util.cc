#include "tests/e2e/e2e_util.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "pugixml.hpp"

namespace testshard::e2e {

namespace fs = std::filesystem;

const char kPytestIni[] = R"([pytest]
addopts = --strict-markers
markers =
    unit
    db
    fail
    crash
    weird
)";

std::map<std::string, int> Report::Appearances() const {
  std::map<std::string, int> seen;
  for (const ReportedCase& c : cases) ++seen[c.classname + "::" + c.name];
  return seen;
}

int Report::Count(Outcome o) const {
  int n = 0;
  for (const ReportedCase& c : cases) n += c.outcome == o;
  return n;
}

Report ReadReport(const std::string& path) {
  Report r;
  pugi::xml_document doc;
  pugi::xml_parse_result parsed = doc.load_file(path.c_str());
  if (!parsed) {
    r.error = parsed.description();
    return r;
  }
  r.parsed = true;
  for (pugi::xml_node suite : doc.child("testsuites").children("testsuite")) {
    for (pugi::xml_node tc : suite.children("testcase")) {
      ReportedCase c;
      c.suite = suite.attribute("name").value();
      c.classname = tc.attribute("classname").value();
      c.name = tc.attribute("name").value();
      if (auto f = tc.child("failure")) {
        c.outcome = Outcome::kFailed;
        c.message = f.attribute("message").value();
      } else if (auto e = tc.child("error")) {
        c.outcome = Outcome::kError;
        c.message = e.attribute("message").value();
      } else if (auto s = tc.child("skipped")) {
        c.message = s.attribute("message").value();
        c.outcome = std::string(s.attribute("type").value()) == "testshard.NotRun" ? Outcome::kNotRun : Outcome::kSkipped;
      }
      for (pugi::xml_node p : tc.child("properties").children("property")) {
        c.properties[p.attribute("name").value()] = p.attribute("value").value();
      }
      r.cases.push_back(std::move(c));
    }
  }
  return r;
}

std::string RunIdFromOutput(const std::string& output) {
  size_t at = output.find("testshard: run ");
  if (at == std::string::npos) return "";
  at += 15;
  return output.substr(at, output.find(',', at) - at);
}

std::vector<AgentSession> ReadAgentSessions(const std::string& project_dir, const std::string& run_id) {
  std::vector<AgentSession> out;
  fs::path run = fs::path(project_dir) / ".testshard" / "runs" / run_id;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(run, ec)) {
    fs::path log = e.path() / "handoff-sessions.jsonl";
    if (!e.is_directory() || !fs::exists(log)) continue;
    std::ifstream in(log);
    std::string line;
    while (std::getline(in, line)) {
      nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (j.is_discarded()) continue;
      AgentSession s;
      s.agent_dir = e.path().filename().string();
      s.database = j.value("database", "");
      s.user = j.value("user", "");
      s.application_name = j.value("application_name", "");
      s.query = j.value("query", "");
      s.tagged = j.value("tagged", false);
      s.own = j.value("own", false);
      out.push_back(std::move(s));
    }
  }
  return out;
}

Project::Project() {
  char tmpl[] = "/tmp/ts-e2e-XXXXXX";
  dir_ = mkdtemp(tmpl);
  fs::permissions(dir_, fs::perms::all);
  Write("pytest.ini", kPytestIni);
}

Project::~Project() {
  std::error_code ec;
  fs::remove_all(dir_, ec);
}

void Project::Write(const std::string& relative, const std::string& text) const {
  fs::path p = fs::path(dir_) / relative;
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

std::string Project::Read(const std::string& relative) const {
  std::ifstream in(fs::path(dir_) / relative);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

Subprocess Project::Start(const std::vector<std::string>& args, const std::string& log,
                          std::map<std::string, std::string> env, absl::Duration timeout) const {
  ProcessSpec spec;
  spec.argv = {TESTSHARD_BIN};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  spec.cwd = dir_;
  spec.env = std::move(env);
  spec.env.try_emplace("TESTSHARD_BRANCH", "main");
  spec.stdout_path = spec.stderr_path = dir_ + "/" + log;
  spec.timeout = timeout;
  auto p = Subprocess::Start(spec);
  EXPECT_TRUE(p.ok()) << p.status();
  return std::move(*p);
}

Project::Result Project::Testshard(const std::vector<std::string>& args, const std::map<std::string, std::string>& env,
                                   absl::Duration timeout) const {
  ProcessSpec spec;
  spec.argv = {TESTSHARD_BIN};
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  spec.cwd = dir_;
  spec.env = env;
  spec.env.try_emplace("TESTSHARD_BRANCH", "main");
  spec.stdout_path = spec.stderr_path = dir_ + "/testshard.out";
  spec.timeout = timeout;
  PosixProcessRunner runner;
  auto r = runner.Run(spec, nullptr);
  EXPECT_TRUE(r.ok()) << r.status();
  Result result;
  if (r.ok()) result.process = *r;
  result.output = Read("testshard.out");
  return result;
}

}  // namespace testshard::e2e
