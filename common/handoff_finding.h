// What an agent's hand-off check reports to the coordinator: evidence that a suite does not keep to the database
// testshard handed its tests (see agent/handoff_check.h for how it is gathered, coordinator/handoff_report.h for
// how the run reports it).
#ifndef TESTSHARD_COMMON_HANDOFF_FINDING_H_
#define TESTSHARD_COMMON_HANDOFF_FINDING_H_

#include <string>

namespace testshard {

struct HandoffFinding {
  enum class Kind {
    kForeignDatabase,  // the agent's tests had sessions on a database that is not theirs
    kLeftoverTables,   // tests failed on a database still holding tables an earlier shard left behind
    kNote,             // advice that does not make the run fail
  };
  Kind kind = Kind::kNote;
  std::string agent;         // the agent's name
  std::string database;      // kForeignDatabase: the database the tests used
  std::string own_database;  // the database the agent handed its tests
  std::string stage;
  std::string first_test;    // a test that was running when it was first seen, if known
  int sessions = 0;          // distinct server sessions seen
  std::string message;       // a paragraph for the user: what was seen, and what to do about it
};

}  // namespace testshard

#endif  // TESTSHARD_COMMON_HANDOFF_FINDING_H_
