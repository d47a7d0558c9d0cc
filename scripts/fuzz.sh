#!/usr/bin/env bash
# Runs every fuzz target of the module for FUZZTIME (default 8s) each, on top
# of its checked-in seed corpus. A crasher fails the run and is written to
# the package's testdata/fuzz/ for `go test` to replay.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-8s}
n=0
while IFS= read -r file; do
  dir=$(dirname "$file")
  for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)' "$file" | awk '{print $2}'); do
    echo "fuzz: ./$dir $target for $FUZZTIME"
    # new inputs are minimised for at most 1s, so that the short run fuzzes
    "$GO" test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 1s "./$dir"
    n=$((n + 1))
  done
done < <(git ls-files '*_test.go' | xargs grep -l '^func Fuzz' | sort)
echo "fuzz: $n targets ran for $FUZZTIME each"
