// testshard: the binary users run. `merge` runs here; every other subcommand is handed, by exec, to
// testshard-core beside this file, which has them all (merge included).
//
// Why two binaries: testshard-core links gRPC, libpq and their dependencies, 84 shared libraries that take the
// dynamic loader ~40 ms to map and relocate before main. That is nothing for a run of minutes, but a quarter of a
// 100,000-test JUnit merge, which CI merge jobs run on every build. This binary links abseil and expat only.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "CLI/CLI.hpp"
#include "coordinator/main/commands.h"

namespace {

// testshard-core in this executable's own directory (symlinks to this binary resolved by /proc/self/exe).
std::string CorePath() {
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return "testshard-core";
  std::string path(self, static_cast<size_t>(n));
  size_t slash = path.rfind('/');
  return path.substr(0, slash + 1) + "testshard-core";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string_view(argv[1]) == "merge") {
    CLI::App app{"testshard merge"};
    app.require_subcommand(1);
    int exit_code = 0;
    testshard::AddMergeCommand(app, &exit_code);
    return testshard::RunApp(app, argc, argv, exit_code);
  }
  // argv is passed on unchanged, so help and errors name `testshard` and the process keeps its pid.
  std::string core = CorePath();
  execv(core.c_str(), argv);
  std::fprintf(stderr, "testshard: cannot run %s: %s\n", core.c_str(), std::strerror(errno));
  return 127;
}
