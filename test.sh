#!/usr/bin/env bash
# Runs PtLab's default test suite (the command the README gives) and prints one summary line.
set -uo pipefail
cd "$(dirname "$0")"
log=$(mktemp)
dotnet test PtLab.sln -c Release --nologo "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
passed=$(grep -Eo 'Passed: +[0-9]+' "$log" | awk '{s+=$2} END {print s+0}')
failed=$(grep -Eo 'Failed: +[0-9]+' "$log" | awk '{s+=$2} END {print s+0}')
rm -f "$log"
echo "tests: $passed passed, $failed failed"
exit "$rc"
