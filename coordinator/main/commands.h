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

// Parses and runs the chosen subcommand; returns its exit code, or 4 (pytest's code) for usage errors.
inline int RunApp(CLI::App& app, int argc, char** argv, const int& exit_code) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 4;
  }
  return exit_code;
}

}  // namespace testshard

#endif  // TESTSHARD_COORDINATOR_MAIN_COMMANDS_H_
