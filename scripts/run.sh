#!/usr/bin/env bash
# make run: the main job on a fresh machine. Builds integrity, creates a
# System on the embedded chain if this data directory has none (asking for
# a password, showing the backup key), and mounts it at ~/integrity.
#
#   INTEGRITY_DATA_DIR   data directory (default ~/.local/share/integrity)
#   INTEGRITY_MOUNT      mount point (default ~/integrity)
#   INTEGRITY_USER       user id at the local secret server (default $USER)
#   INTEGRITY_PASSWORD_FILE, INTEGRITY_BACKUP_KEY_OUT   for unattended runs
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin/integrity}
DATA_DIR=${INTEGRITY_DATA_DIR:-${XDG_DATA_HOME:-$HOME/.local/share}/integrity}
MNT=${INTEGRITY_MOUNT:-$HOME/integrity}
USER_ID=${INTEGRITY_USER:-${USER:-$(id -un)}@localhost}
export PATH="$PWD/.cache/bin:$PATH"

run() { "$BIN" --data-dir "$DATA_DIR" "$@"; }

if ! run whoami >/dev/null 2>&1; then
  echo "No System in $DATA_DIR yet: creating one on the embedded chain."
  args=(init --user "$USER_ID")
  [ -n "${INTEGRITY_PASSWORD_FILE:-}" ] && args+=(--password-file "$INTEGRITY_PASSWORD_FILE")
  [ -n "${INTEGRITY_BACKUP_KEY_OUT:-}" ] && args+=(--backup-key-out "$INTEGRITY_BACKUP_KEY_OUT")
  run "${args[@]}"
fi
run mount "$MNT"
run status
echo
echo "Your System is at $MNT. Earlier versions of every file: $MNT/.history/<path>/<revision>."
echo "Stop with: $BIN --data-dir $DATA_DIR unmount"
