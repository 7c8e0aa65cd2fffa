#include "agent/database.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace testshard::agent {

std::string_view ResetPolicyName(ResetPolicy p) {
  switch (p) {
    case ResetPolicy::kAgent:
      return "agent";
    case ResetPolicy::kStage:
      return "stage";
    case ResetPolicy::kShard:
      return "shard";
  }
  return "agent";
}

absl::StatusOr<ResetPolicy> ParseResetPolicy(std::string_view name) {
  if (name == "agent" || name.empty()) return ResetPolicy::kAgent;
  if (name == "stage") return ResetPolicy::kStage;
  if (name == "shard") return ResetPolicy::kShard;
  return absl::InvalidArgumentError(
      absl::StrCat("expected \"agent\", \"stage\" or \"shard\", got \"", ToAbsl(name), "\""));
}

absl::StatusOr<std::map<std::string, std::string>> RenderEnv(const std::map<std::string, std::string>& templates,
                                                             const pg::Connection& c) {
  std::map<std::string, std::string> env;
  for (const auto& [name, tmpl] : templates) {
    auto v = pg::RenderTemplate(tmpl, c);
    if (!v.ok()) return Annotate(v.status(), absl::StrCat("database.env.", name));
    env[name] = *v;
  }
  return env;
}

}  // namespace testshard::agent
