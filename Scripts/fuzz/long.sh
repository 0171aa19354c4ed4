#!/usr/bin/env bash
# The long fuzzing run: every target explores for 10 minutes (FUZZ_SECONDS), two at a time
# (FUZZ_JOBS), and what adds coverage is merged into Tests/fuzz/corpus/TARGET (commit it: the
# test command replays the whole corpus on every run). About 35 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
export FUZZ_SECONDS="${FUZZ_SECONDS:-600}" FUZZ_JOBS="${FUZZ_JOBS:-2}" FUZZ_MERGE=1
exec Scripts/fuzz/run.sh
