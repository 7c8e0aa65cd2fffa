#!/usr/bin/env bash
# The body of a Bazel test target with shard_count = N: runs this shard of a testshard stage.
#
# Bazel sets TEST_TOTAL_SHARDS and TEST_SHARD_INDEX (which shard), TEST_SHARD_STATUS_FILE (touched to say the test
# shards: Bazel 7+ fails a sharded test that does not) and XML_OUTPUT_FILE (pytest's --junitxml). testshard split
# reads all four, so this script only says which stage and where the config and history are. Every shard plans
# the same split from the same inputs, so the shards are disjoint and together run the whole stage.
#
# Usage (as the test's args): testshard_shard.sh --stage STAGE [more `testshard split` flags]
set -euo pipefail
# The test runs in the runfiles tree: testshard.toml, the tests and .testshard/history are data of the target.
# Reading history never writes, so the read-only tree is fine; without history every shard uses the same default.
exec "${TESTSHARD:-testshard}" split --config testshard.toml --store file:.testshard "$@"
