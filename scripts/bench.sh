#!/usr/bin/env bash
# make bench: integrity's benchmarks, side by side with gocryptfs and tmpfs
# where a workload has a filesystem counterpart. Prints each figure (median
# of COUNT runs) and writes the raw go-bench output to .cache/bench/.
#
#   COUNT=3 scripts/bench.sh            all sections
#   SECTIONS="chain" scripts/bench.sh   only some (chain keys fs images vm)
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-3}
SECTIONS=${SECTIONS:-chain}
OUT=.cache/bench
mkdir -p "$OUT"
export PATH="$PWD/.cache/bin:$PATH"

median() { sort -n | awk '{a[NR]=$1} END {if (NR==0) {print "n/a"} else if (NR%2) {print a[(NR+1)/2]} else {print (a[NR/2]+a[NR/2+1])/2}}'; }

# metric FILE BENCH UNIT: the median of a custom metric over the runs.
metric() {
  awk -v b="$2" -v u="$3" '$1 ~ "^"b"(-[0-9]+)?$" { for (i=2;i<=NF;i++) if ($i==u) print $(i-1) }' "$1" | median
}

section_chain() {
  echo "== chain: commits with a 1 KB payload, signed, validated by btcd and mined"
  local f=$OUT/chain-embedded.txt
  go test -run '^$' -bench '^BenchmarkCommits$' -benchtime 20000x -count "$COUNT" ./chainfs/chain/embedded/ >"$f.commits" 2>&1 || { cat "$f.commits"; return 1; }
  go test -run '^$' -bench '^BenchmarkBlockConnect$' -benchtime 3x -count "$COUNT" ./chainfs/chain/embedded/ >"$f.block" 2>&1 || { cat "$f.block"; return 1; }
  printf '  embedded  commit-rate    %8s commits/s\n' "$(metric "$f.commits" BenchmarkCommits commits/s)"
  printf '  embedded  block-connect  %8s ms per block of %s commits\n' "$(metric "$f.block" BenchmarkBlockConnect ms/block)" "$(metric "$f.block" BenchmarkBlockConnect commits/block)"
  if [ -d chainfs/chain/btcdrpc ] && command -v btcd >/dev/null; then
    local g=$OUT/chain-btcd.txt
    go test -run '^$' -bench '^BenchmarkCommits$' -benchtime 4000x -count "$COUNT" ./chainfs/chain/btcdrpc/ >"$g" 2>&1 || { cat "$g"; return 1; }
    printf '  btcd RPC  commit-rate    %8s commits/s\n' "$(metric "$g" BenchmarkCommits commits/s)"
  fi
}

for s in $SECTIONS; do
  "section_$s"
done
