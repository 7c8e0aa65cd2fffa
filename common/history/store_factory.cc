// OpenHistoryStore: the one place a store spec becomes a backend.
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/history/file_history_store.h"
#include "common/history/history_store.h"
#include "common/history/postgres_history_store.h"
#include "common/history/redis_history_store.h"
#include "common/status.h"

namespace testshard::history {

absl::StatusOr<StoreSpec> ParseStoreSpec(std::string_view spec) {
  auto starts_with = [&](std::string_view prefix) { return spec.substr(0, prefix.size()) == prefix; };
  if (starts_with("file:")) {
    std::string dir(spec.substr(5));
    if (dir.empty()) return absl::InvalidArgumentError("store 'file:' needs a directory, e.g. file:.testshard");
    return StoreSpec{StoreSpec::kFile, std::move(dir)};
  }
  if (starts_with("redis://") || starts_with("redis+unix://") || starts_with("unix:")) {
    return StoreSpec{StoreSpec::kRedis, std::string(spec)};
  }
  if (starts_with("postgresql://") || starts_with("postgres://")) {
    return StoreSpec{StoreSpec::kPostgres, std::string(spec)};
  }
  if (starts_with("postgresql:")) {  // postgresql:host=... dbname=... (libpq key=value)
    return StoreSpec{StoreSpec::kPostgres, std::string(spec.substr(11))};
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown history store '", ToAbsl(spec),
      "': expected file:DIR, redis://HOST[:PORT][/DB], unix:/PATH/redis.sock or postgresql://..."));
}

absl::StatusOr<std::unique_ptr<HistoryStore>> OpenHistoryStore(std::string_view spec, const HistoryOptions& options) {
  TS_ASSIGN_OR_RETURN(StoreSpec parsed, ParseStoreSpec(spec));
  switch (parsed.kind) {
    case StoreSpec::kFile:
      return std::make_unique<FileHistoryStore>(std::move(parsed.target), options);
    case StoreSpec::kRedis: {
      TS_ASSIGN_OR_RETURN(RedisAddress address, ParseRedisUrl(parsed.target));
      TS_ASSIGN_OR_RETURN(std::unique_ptr<RedisHistoryStore> store, RedisHistoryStore::Connect(address, options));
      return std::unique_ptr<HistoryStore>(std::move(store));
    }
    case StoreSpec::kPostgres: {
      TS_ASSIGN_OR_RETURN(auto store, PostgresHistoryStore::Connect(std::move(parsed.target), options));
      return std::unique_ptr<HistoryStore>(std::move(store));
    }
  }
  return absl::InternalError("unreachable");
}

}  // namespace testshard::history
