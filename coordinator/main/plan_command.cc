// testshard plan: the shards a static split would make, with predicted times and how far they are from the bound.
#include <cstdio>

#include "CLI/CLI.hpp"
#include "absl/strings/str_format.h"
#include "coordinator/lpt_planner.h"
#include "coordinator/main/commands.h"
#include "coordinator/main/plan_inputs.h"
#include "nlohmann/json.hpp"

namespace testshard {

void AddPlanCommand(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("plan", "Print the shards of a stage with predicted durations and the lower bound");
  auto flags = std::make_shared<PlanInputFlags>();
  auto agents = std::make_shared<int>(0);
  auto format = std::make_shared<std::string>("text");
  AddPlanInputFlags(cmd, flags.get());
  cmd->add_option("--agents", *agents, "Number of shards")->required()->check(CLI::Range(1, 100000));
  cmd->add_option("--format", *format, "text or json")->check(CLI::IsMember({"text", "json"}))->capture_default_str();
  cmd->callback([flags, agents, format, exit_code] {
    auto inputs = LoadPlanInputs(*flags);
    if (!inputs.ok()) {
      *exit_code = ReportFailure(inputs.status());
      return;
    }
    inputs->request.agents = *agents;
    coordinator::StaticPlan plan = coordinator::PlanStatic(inputs->request);
    std::map<std::string, int> sources;
    for (const std::string& id : inputs->request.test_ids) {
      ++sources[std::string(coordinator::EstimateSourceName(inputs->estimator->Get(id).source))];
    }
    const double ratio = plan.lower_bound_s > 0 ? plan.makespan_s / plan.lower_bound_s : 1;
    if (*format == "json") {
      nlohmann::ordered_json j;
      j["stage"] = flags->stage;
      j["agents"] = *agents;
      j["tests"] = inputs->request.test_ids.size();
      j["granularity"] = flags->granularity;
      j["startup_s"] = plan.startup_s;
      j["total_s"] = plan.total_s;
      j["longest_unit_s"] = plan.longest_unit_s;
      j["lower_bound_s"] = plan.lower_bound_s;
      j["makespan_s"] = plan.makespan_s;
      j["makespan_over_bound"] = ratio;
      j["estimate_sources"] = sources;
      j["shards"] = nlohmann::ordered_json::array();
      for (size_t i = 0; i < plan.shards.size(); ++i) {
        j["shards"].push_back({{"index", i},
                               {"predicted_s", plan.shards[i].predicted_s + plan.startup_s},
                               {"tests", plan.shards[i].test_ids}});
      }
      std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
      std::printf("stage %s: %zu tests, %d shards, granularity %s, start-up %.1f s per shard\n",
                  flags->stage.empty() ? "(from --tests-from)" : flags->stage.c_str(),
                  inputs->request.test_ids.size(), *agents, flags->granularity.c_str(), plan.startup_s);
      for (size_t i = 0; i < plan.shards.size(); ++i) {
        const auto& s = plan.shards[i];
        std::printf("shard %zu: %zu tests, predicted %.1f s\n", i, s.test_ids.size(), s.predicted_s + plan.startup_s);
        for (const std::string& id : s.test_ids) std::printf("  %s\n", id.c_str());
      }
      std::printf("total %.1f s; lower bound max(total / agents, longest unit) + start-up = max(%.1f, %.1f) + %.1f "
                  "= %.1f s\n",
                  plan.total_s, plan.total_s / *agents, plan.longest_unit_s, plan.startup_s, plan.lower_bound_s);
      std::printf("predicted makespan %.1f s = %.3f x lower bound\n", plan.makespan_s, ratio);
      std::string s;
      for (const auto& [name, n] : sources) s += absl::StrFormat("%s%d from %s", s.empty() ? "" : ", ", n, name);
      std::printf("estimates: %s\n", s.c_str());
    }
    *exit_code = 0;
  });
}

}  // namespace testshard
