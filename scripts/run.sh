#!/usr/bin/env bash
# make run: the main job on a fresh machine. Builds integrity, creates a
# System on the embedded chain if this data directory has none, and starts
# the agent in the background.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/integrity}
DATA_DIR=${INTEGRITY_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/integrity}
export PATH="$PWD/.cache/bin:$PATH"

run() { "$BIN" --data-dir "$DATA_DIR" "$@"; }

if ! run chain status >/dev/null 2>&1; then
  echo "run.sh: cannot open $DATA_DIR" >&2
  run chain status
fi
if [ ! -S "$DATA_DIR/agent.sock" ]; then
  nohup "$BIN" --data-dir "$DATA_DIR" --log-level info agent >>"$DATA_DIR/agent.log" 2>&1 &
  for _ in $(seq 1 100); do [ -S "$DATA_DIR/agent.sock" ] && break; sleep 0.1; done
fi
run chain status
