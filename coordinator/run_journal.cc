#include "coordinator/run_journal.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"

namespace testshard::coordinator {
namespace {

using nlohmann::json;

json AttemptJson(const TestAttempt& a) {
  return {{"o", static_cast<int>(a.outcome)}, {"t", a.time_s},      {"m", a.message},   {"y", a.type},
          {"d", a.details},                   {"so", a.system_out}, {"se", a.system_err}};
}

TestAttempt AttemptFrom(const json& j) {
  TestAttempt a;
  a.outcome = static_cast<Outcome>(j.value("o", static_cast<int>(Outcome::kError)));
  a.time_s = j.value("t", 0.0);
  a.message = j.value("m", "");
  a.type = j.value("y", "");
  a.details = j.value("d", "");
  a.system_out = j.value("so", "");
  a.system_err = j.value("se", "");
  return a;
}

json ToJson(const JournalEvent& e) {
  json j = {{"k", static_cast<int>(e.kind)}, {"s", e.stage}};
  switch (e.kind) {
    case JournalEvent::kCollected:
      j["ids"] = e.ids;
      if (!e.groups.empty()) j["g"] = e.groups;
      break;
    case JournalEvent::kAttempt:
      j["id"] = e.result.id;
      j["cn"] = e.result.classname;
      j["n"] = e.result.name;
      j["p"] = e.result.properties;
      j["r"] = AttemptJson(e.result.result);
      j["a"] = e.agent;
      j["f"] = e.final;
      break;
    case JournalEvent::kStageEnd:
      j["st"] = e.status;
      j["note"] = e.note;
      break;
  }
  return j;
}

JournalEvent FromJson(const json& j) {
  JournalEvent e;
  e.kind = static_cast<JournalEvent::Kind>(j.at("k").get<int>());
  e.stage = j.at("s").get<std::string>();
  switch (e.kind) {
    case JournalEvent::kCollected:
      e.ids = j.at("ids").get<std::vector<std::string>>();
      e.groups = j.value("g", std::vector<std::string>{});
      break;
    case JournalEvent::kAttempt:
      e.result.id = j.at("id").get<std::string>();
      e.result.classname = j.value("cn", "");
      e.result.name = j.value("n", "");
      e.result.properties = j.value("p", std::vector<std::pair<std::string, std::string>>{});
      e.result.result = AttemptFrom(j.at("r"));
      e.agent = j.value("a", "");
      e.final = j.value("f", false);
      break;
    case JournalEvent::kStageEnd:
      e.status = j.at("st").get<int>();
      e.note = j.value("note", "");
      break;
  }
  return e;
}

}  // namespace

std::string EncodeJournalEvent(const JournalEvent& event) {
  return ToJson(event).dump(-1, ' ', false, json::error_handler_t::replace);
}

absl::StatusOr<JournalEvent> DecodeJournalEvent(std::string_view line) {
  json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return absl::DataLossError("unreadable journal line");
  try {
    return FromJson(j);
  } catch (const json::exception& e) {
    return absl::DataLossError(e.what());
  }
}

absl::StatusOr<std::unique_ptr<FileRunJournal>> FileRunJournal::Open(const std::string& path) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return absl::FailedPreconditionError(absl::StrCat("cannot open ", path, ": ", strerror(errno)));
  return std::unique_ptr<FileRunJournal>(new FileRunJournal(fd));
}

FileRunJournal::~FileRunJournal() { close(fd_); }

void FileRunJournal::Append(const JournalEvent& event) {
  std::string line = EncodeJournalEvent(event) + "\n";
  absl::MutexLock l(&mu_);
  // One write per line: with O_APPEND a line is never interleaved with another, and a kill leaves at most the
  // last line torn.
  ssize_t n = write(fd_, line.data(), line.size());
  if (n != static_cast<ssize_t>(line.size())) spdlog::error("run journal: short write ({})", strerror(errno));
}

absl::StatusOr<std::vector<JournalEvent>> FileRunJournal::Read(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("no run journal at ", path));
  std::vector<JournalEvent> events;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
      if (in.peek() == EOF) break;  // a torn last line from a kill mid-write
      return absl::DataLossError(absl::StrCat(path, ":", line_no, ": unreadable journal line"));
    }
    try {
      events.push_back(FromJson(j));
    } catch (const json::exception& e) {
      return absl::DataLossError(absl::StrCat(path, ":", line_no, ": ", e.what()));
    }
  }
  return events;
}

}  // namespace testshard::coordinator
