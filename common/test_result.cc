#include "common/test_result.h"

namespace testshard {

std::string_view OutcomeName(Outcome o) {
  switch (o) {
    case Outcome::kPassed: return "passed";
    case Outcome::kFailed: return "failed";
    case Outcome::kError: return "error";
    case Outcome::kSkipped: return "skipped";
    case Outcome::kNotRun: return "not run";
  }
  return "unknown";
}

int OutcomeSeverity(Outcome o) {
  switch (o) {
    case Outcome::kPassed: return 0;
    case Outcome::kSkipped: return 1;
    case Outcome::kNotRun: return 2;
    case Outcome::kFailed: return 3;
    case Outcome::kError: return 4;
  }
  return 0;
}

void PytestJunitNames(std::string_view node_id, std::string* classname, std::string* name) {
  // pytest: path, "[", params = address.partition("["); names = path.split("::");
  // names[0] = names[0].replace("/", ".") minus a trailing ".py"; names[-1] += "[" + params.
  size_t bracket = node_id.find('[');
  std::string_view path = node_id.substr(0, bracket);
  std::string_view params = bracket == std::string_view::npos ? std::string_view() : node_id.substr(bracket);
  std::vector<std::string> names;
  size_t start = 0;
  while (true) {
    size_t sep = path.find("::", start);
    names.emplace_back(path.substr(start, sep == std::string_view::npos ? std::string_view::npos : sep - start));
    if (sep == std::string_view::npos) break;
    start = sep + 2;
  }
  std::string& first = names.front();
  for (char& c : first) {
    if (c == '/') c = '.';
  }
  if (first.size() >= 3 && first.compare(first.size() - 3, 3, ".py") == 0) first.resize(first.size() - 3);
  names.back() += params;
  name->assign(names.back());
  classname->clear();
  for (size_t i = 0; i + 1 < names.size(); ++i) {
    if (i) classname->push_back('.');
    *classname += names[i];
  }
}

}  // namespace testshard
