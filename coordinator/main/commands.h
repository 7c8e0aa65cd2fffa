// Each subcommand of the `testshard` binary registers itself on the CLI11 app. The subcommands' files are the only
// places where flags are defined and objects are wired together.
#ifndef TESTSHARD_COORDINATOR_MAIN_COMMANDS_H_
#define TESTSHARD_COORDINATOR_MAIN_COMMANDS_H_

#include "CLI/CLI.hpp"

namespace testshard {

// Adds a subcommand whose body runs after parsing; `*exit_code` receives its result.
void AddVersionCommand(CLI::App& app, int* exit_code);
void AddRunCommands(CLI::App& app, int* exit_code);  // run, coordinator
void AddAgentCommand(CLI::App& app, int* exit_code);
void AddMergeCommand(CLI::App& app, int* exit_code);
void AddHistoryCommand(CLI::App& app, int* exit_code);  // history show|import|export
void AddPlanCommand(CLI::App& app, int* exit_code);
void AddSplitCommand(CLI::App& app, int* exit_code);

}  // namespace testshard

#endif  // TESTSHARD_COORDINATOR_MAIN_COMMANDS_H_
