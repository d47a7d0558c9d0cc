#!/usr/bin/env bash
# Runs every fuzz target of the module for FUZZTIME each (an execution count
# such as 300000x, the default, or a duration such as 30s), on top of its
# checked-in seed corpus. A crasher fails the run and is written to the
# package's testdata/fuzz/ for `go test` to replay.
#
# Counts are the default because Go 1.26's fuzz coordinator can report
# "context deadline exceeded" with no crasher when a duration runs out while
# a starved worker is still busy (go.dev/issue/75804, fixed in Go 1.27); a
# count has no deadline to race. Minimisation is bounded by a count too.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-300000x}
MINIMIZE=${FUZZMINIMIZETIME:-2000x}
n=0
while IFS= read -r file; do
  dir=$(dirname "$file")
  for target in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)' "$file" | awk '{print $2}'); do
    echo "fuzz: ./$dir $target, budget $FUZZTIME"
    # new inputs are minimised briefly, so that the short run fuzzes
    "$GO" test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$MINIMIZE" "./$dir"
    n=$((n + 1))
  done
done < <(git ls-files '*_test.go' | xargs grep -l '^func Fuzz' | sort)
echo "fuzz: $n targets, $FUZZTIME each"
