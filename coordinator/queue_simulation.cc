#include "coordinator/queue_simulation.h"

#include <algorithm>
#include <queue>
#include <tuple>

namespace testshard::coordinator {

SimResult SimulateQueue(StageQueue& queue, const std::vector<SimAgent>& agents,
                        const std::function<double(const std::string&)>& actual) {
  SimResult result;
  using Event = std::tuple<double, size_t>;  // time the agent frees up, agent index
  std::priority_queue<Event, std::vector<Event>, std::greater<>> events;
  for (size_t i = 0; i < agents.size(); ++i) events.emplace(agents[i].join_at_s, i);
  struct Running {
    bool busy = false;
    double predicted_s = 0;
    double wall_s = 0;
  };
  std::vector<Running> running(agents.size());
  while (!events.empty()) {
    auto [now, i] = events.top();
    events.pop();
    const SimAgent& agent = agents[i];
    if (running[i].busy) {
      queue.Completed(agent.id, running[i].predicted_s, running[i].wall_s);
      running[i].busy = false;
    }
    std::optional<Batch> batch = queue.Next(agent.id);
    if (!batch) continue;
    double work = 0;
    for (const std::string& id : batch->test_ids) work += actual(id);
    const double wall = agent.startup_s + work / agent.speed;
    running[i] = Running{true, batch->predicted_s, wall};
    ++result.batches;
    result.startup_total_s += agent.startup_s;
    result.busy_s += wall;
    result.makespan_s = std::max(result.makespan_s, now + wall);
    events.emplace(now + wall, i);
  }
  return result;
}

}  // namespace testshard::coordinator
