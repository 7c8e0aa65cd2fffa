"""The body of a py_test with shard_count = N: runs this shard of a testshard stage (see testshard_shard.sh).

testshard split reads Bazel's TEST_TOTAL_SHARDS, TEST_SHARD_INDEX, TEST_SHARD_STATUS_FILE and XML_OUTPUT_FILE
itself; this only replaces the Python process with it, so the shard's exit code is the test's.
"""
import os
import sys

testshard = os.environ.get("TESTSHARD", "testshard")
os.execvp(testshard, [testshard, "split", "--config", "testshard.toml", "--store", "file:.testshard"] + sys.argv[1:])
