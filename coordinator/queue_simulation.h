// An event-driven simulation of agents pulling batches from a StageQueue, for the planner's tests and benchmark:
// what a stage's wall time would be, given what the tests really take and how fast each agent really is.
#ifndef TESTSHARD_COORDINATOR_QUEUE_SIMULATION_H_
#define TESTSHARD_COORDINATOR_QUEUE_SIMULATION_H_

#include <functional>
#include <string>
#include <vector>

#include "coordinator/planner.h"

namespace testshard::coordinator {

struct SimAgent {
  std::string id;
  double speed = 1;       // 0.5: takes twice as long as `actual` says
  double startup_s = 0;   // paid by every batch, before its first test
  double join_at_s = 0;   // when the agent first asks for work
};

struct SimResult {
  double makespan_s = 0;  // when the last batch finished
  int batches = 0;
  double startup_total_s = 0;
  double busy_s = 0;      // sum over agents of time spent running batches, start-ups included
};

// Each agent asks for a batch when it joins and whenever its batch finishes (reporting it through Completed
// first, as the coordinator does); an agent that gets nothing is done. A batch takes
// startup_s + sum(actual(test)) / speed. Deterministic: ties go to the earlier agent in `agents`.
SimResult SimulateQueue(StageQueue& queue, const std::vector<SimAgent>& agents,
                        const std::function<double(const std::string&)>& actual);

}  // namespace testshard::coordinator

#endif  // TESTSHARD_COORDINATOR_QUEUE_SIMULATION_H_
