#!/usr/bin/env bash
# Runs PtLab's default test suite (the command the README gives) and prints one summary line.
set -uo pipefail
cd "$(dirname "$0")"
log=$(mktemp)
# A test that runs 20 minutes without finishing is taken as hung: the test host is stopped and the
# log names the test, rather than the run waiting until an outer time limit kills it silently.
dotnet test PtLab.sln -c Release --nologo --blame-hang-timeout 20m --blame-hang-dump-type none "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
passed=$(grep -Eo 'Passed: +[0-9]+' "$log" | awk '{s+=$2} END {print s+0}')
failed=$(grep -Eo 'Failed: +[0-9]+' "$log" | awk '{s+=$2} END {print s+0}')
rm -f "$log"
echo "tests: $passed passed, $failed failed"
exit "$rc"
