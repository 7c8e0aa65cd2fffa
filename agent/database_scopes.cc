#include "agent/database_scopes.h"

#include "absl/strings/str_cat.h"
#include "common/status.h"

namespace testshard::agent {

absl::StatusOr<Database> DatabaseScopes::ForLease(std::string_view lease_id, std::string_view stage,
                                                  ResetPolicy reset) {
  switch (reset) {
    case ResetPolicy::kAgent:
      if (agent_) {
        TS_RETURN_IF_ERROR(provisioner_->CheckHealth());
        return *agent_;
      } else {
        TS_ASSIGN_OR_RETURN(agent_, provisioner_->Acquire("agent"));
        return *agent_;
      }
    case ResetPolicy::kStage:
      if (stage_db_ && stage_ == stage) {
        TS_RETURN_IF_ERROR(provisioner_->CheckHealth());
        return *stage_db_;
      }
      if (stage_db_) {
        provisioner_->Release(*stage_db_);
        stage_db_.reset();
      }
      {
        TS_ASSIGN_OR_RETURN(Database db, provisioner_->Acquire(stage));
        stage_db_ = db;
      }
      stage_ = std::string(stage);
      return *stage_db_;
    case ResetPolicy::kShard: {
      TS_ASSIGN_OR_RETURN(Database db, provisioner_->Acquire(lease_id));
      per_lease_.emplace(std::string(lease_id), db);
      return db;
    }
  }
  return absl::InternalError("unknown reset policy");
}

void DatabaseScopes::Done(std::string_view lease_id) {
  auto it = per_lease_.find(lease_id);
  if (it == per_lease_.end()) return;
  provisioner_->Release(it->second);
  per_lease_.erase(it);
}

void DatabaseScopes::ReleaseAll() {
  for (auto& [lease, db] : per_lease_) provisioner_->Release(db);
  per_lease_.clear();
  if (stage_db_) provisioner_->Release(*stage_db_);
  stage_db_.reset();
  if (agent_) provisioner_->Release(*agent_);
  agent_.reset();
}

}  // namespace testshard::agent
