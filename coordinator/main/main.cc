// testshard: one binary, git-style subcommands.
#include <cstdio>

#include "CLI/CLI.hpp"
#include "coordinator/main/commands.h"

namespace testshard {

void AddVersionCommand(CLI::App& app, int* exit_code) {
  auto* cmd = app.add_subcommand("version", "Print the version");
  cmd->callback([exit_code] {
    std::printf("testshard 0.1.0\n");
    *exit_code = 0;
  });
}

}  // namespace testshard

int main(int argc, char** argv) {
  CLI::App app{"testshard: shard pytest marker stages across agents, each with its own PostgreSQL database"};
  app.require_subcommand(1);
  int exit_code = 0;
  testshard::AddRunCommands(app, &exit_code);
  testshard::AddAgentCommand(app, &exit_code);
  testshard::AddPlanCommand(app, &exit_code);
  testshard::AddSplitCommand(app, &exit_code);
  testshard::AddHistoryCommand(app, &exit_code);
  testshard::AddVersionCommand(app, &exit_code);
  testshard::AddMergeCommand(app, &exit_code);
  return testshard::RunApp(app, argc, argv, exit_code);
}
