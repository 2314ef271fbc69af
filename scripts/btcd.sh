#!/usr/bin/env bash
# btcd.sh — start or stop a real btcd node on loopback for tests and demos.
#
#   scripts/btcd.sh [start] [options] [-- extra btcd flags]
#   scripts/btcd.sh stop [--datadir DIR]
#   scripts/btcd.sh url  [--datadir DIR]      # print the running node's URL
#
# Options (environment variable in brackets):
#   --datadir DIR    node directory: chain, logs, pid, credentials
#                    [BTCD_DATADIR, default ./.cache/btcd-<net>]
#   --net NET        simnet (default), regtest, testnet3   [BTCD_NET]
#                    btcd --regtest wipes its database at every start;
#                    simnet keeps its chain, so it is the default.
#   --rpcport PORT   RPC port on 127.0.0.1   [BTCD_RPCPORT, default 18556]
#   --p2pport PORT   P2P port on 127.0.0.1   [BTCD_P2PPORT, default 18555]
#   --rpcuser USER   [BTCD_RPCUSER, default integrity]
#   --rpcpass PASS   [BTCD_RPCPASS, default: random, kept in DIR/rpcpass]
#   --peer HOST:PORT connect to another node (repeatable)
#                    [BTCD_PEERS, comma-separated]
#   --tls            serve RPC over TLS (cert in DIR/rpc.cert) [BTCD_TLS=1]
#   --watch-pid PID  stop the node when process PID exits (for tests that
#                    might die before their cleanup runs) [BTCD_WATCH_PID]
#   --wait SECONDS   how long to wait for RPC to answer [BTCD_WAIT, 30]
#
# The node runs with --txindex --addrindex (integrity's btcd backend needs
# both), accepts non-standard transactions (data carriers beyond 80 bytes)
# and refuses replace-by-fee, so concurrent commits collide. On success it
# prints, for `eval`:
#   BTCD_PID=<pid>
#   BTCD_URL=btcd://user:pass@127.0.0.1:<rpcport>?net=<net>[&tls=1&cert=...]
#
# btcd is found in $BTCD, else ./.cache/bin/btcd, else on PATH
# (`make tools` installs it into ./.cache/bin).
set -euo pipefail

die() { echo "btcd.sh: $*" >&2; exit 1; }

cmd=start
case "${1:-}" in
start|stop|url) cmd=$1; shift ;;
esac

datadir=${BTCD_DATADIR:-}
net=${BTCD_NET:-simnet}
rpcport=${BTCD_RPCPORT:-18556}
p2pport=${BTCD_P2PPORT:-18555}
rpcuser=${BTCD_RPCUSER:-integrity}
rpcpass=${BTCD_RPCPASS:-}
peers=${BTCD_PEERS:-}
tls=${BTCD_TLS:-0}
watchpid=${BTCD_WATCH_PID:-}
wait_s=${BTCD_WAIT:-30}
extra=()

while [ $# -gt 0 ]; do
	case "$1" in
	--datadir) datadir=${2:?--datadir needs a value}; shift 2 ;;
	--net) net=${2:?--net needs a value}; shift 2 ;;
	--rpcport) rpcport=${2:?--rpcport needs a value}; shift 2 ;;
	--p2pport) p2pport=${2:?--p2pport needs a value}; shift 2 ;;
	--rpcuser) rpcuser=${2:?--rpcuser needs a value}; shift 2 ;;
	--rpcpass) rpcpass=${2:?--rpcpass needs a value}; shift 2 ;;
	--peer) peers="${peers:+$peers,}${2:?--peer needs a value}"; shift 2 ;;
	--tls) tls=1; shift ;;
	--watch-pid) watchpid=${2:?--watch-pid needs a value}; shift 2 ;;
	--wait) wait_s=${2:?--wait needs a value}; shift 2 ;;
	--) shift; extra=("$@"); break ;;
	-h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown option $1 (see --help)" ;;
	esac
done

case "$net" in
simnet|regtest|testnet3) ;;
*) die "--net $net: want simnet, regtest or testnet3" ;;
esac
datadir=${datadir:-./.cache/btcd-$net}
case "$rpcport$p2pport" in *[!0-9]*) die "ports must be numbers" ;; esac
case "$rpcuser$rpcpass" in *[@:/?#%\ ]*) die "rpc user/pass must not contain @ : / ? # % or spaces" ;; esac

pidfile=$datadir/btcd.pid

# alive PID: is PID a running btcd? (guards against a recycled pid)
alive() {
	kill -0 "$1" 2>/dev/null || return 1
	[ -r "/proc/$1/comm" ] || return 0
	case "$(cat "/proc/$1/comm")" in btcd*) return 0 ;; *) return 1 ;; esac
}

print_url() {
	local q="net=$net"
	[ "$tls" = 1 ] && q="$q&tls=1&cert=$datadir/rpc.cert"
	echo "BTCD_URL=btcd://$rpcuser:$rpcpass@127.0.0.1:$rpcport?$q"
}

if [ "$cmd" = stop ]; then
	[ -f "$pidfile" ] || { echo "btcd.sh: no node running in $datadir"; exit 0; }
	pid=$(cat "$pidfile")
	if alive "$pid"; then
		kill -TERM "$pid"
		# btcd flushes its UTXO cache on shutdown; give it time.
		for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
		if alive "$pid"; then
			echo "btcd.sh: btcd $pid did not stop in 10s; killing it" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	rm -f "$pidfile"
	exit 0
fi

if [ "$cmd" = url ]; then
	[ -f "$datadir/node.env" ] || die "no node was started in $datadir"
	# shellcheck disable=SC1091
	. "$datadir/node.env"
	rpcpass=$(cat "$datadir/rpcpass")
	datadir=$(cd "$datadir" && pwd)
	print_url
	exit 0
fi

mkdir -p "$datadir"
datadir=$(cd "$datadir" && pwd)
pidfile=$datadir/btcd.pid
if [ -f "$pidfile" ] && alive "$(cat "$pidfile")"; then
	die "a btcd is already running in $datadir (pid $(cat "$pidfile")); stop it first"
fi

if [ -z "$rpcpass" ] && [ -s "$datadir/rpcpass" ]; then
	rpcpass=$(cat "$datadir/rpcpass")
fi
if [ -z "$rpcpass" ]; then
	rpcpass=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
fi
# Remember how the node was started so `url` can print it again.
(
	umask 077
	printf '%s' "$rpcpass" >"$datadir/rpcpass"
	printf 'net=%s\nrpcport=%s\nrpcuser=%s\ntls=%s\n' "$net" "$rpcport" "$rpcuser" "$tls" >"$datadir/node.env"
)

btcd=${BTCD:-}
if [ -z "$btcd" ]; then
	if [ -x ./.cache/bin/btcd ]; then
		btcd=./.cache/bin/btcd
	else
		btcd=$(command -v btcd || true)
	fi
fi
[ -n "$btcd" ] && [ -x "$btcd" ] || die "btcd not found: set BTCD, run 'make tools' (installs ./.cache/bin/btcd), or put btcd on PATH"

args=(
	"--$net"
	--datadir="$datadir/data"
	--logdir="$datadir/logs"
	--rpccert="$datadir/rpc.cert"
	--rpckey="$datadir/rpc.key"
	--rpcuser="$rpcuser"
	--rpcpass="$rpcpass"
	--rpclisten="127.0.0.1:$rpcport"
	--listen="127.0.0.1:$p2pport"
	--txindex
	--addrindex
	--nocfilters
	--rejectreplacement
	--nodnsseed
	--norelaypriority
	# Relay to peers at once, not every 10 s: nodes share one machine.
	--trickleinterval=50ms
	# Blocks as large as consensus allows, less room for our coinbase.
	--blockmaxsize=975000
	--blockmaxweight=3900000
	# The default 250 MiB UTXO cache is pre-allocated; test nodes are small.
	--utxocachemaxsize=32
)
if [ "$net" != testnet3 ]; then
	args+=(--relaynonstd) # OP_RETURN data carriers above 80 bytes
fi
[ "$tls" = 1 ] || args+=(--notls)
if [ -n "$peers" ]; then
	IFS=, read -r -a plist <<<"$peers"
	for p in "${plist[@]}"; do args+=(--addpeer="$p"); done
fi

# setsid: the node outlives this script (and the caller's terminal).
# (btcd still creates an empty ~/.btcd, its home, whatever the flags.)
setsid "$btcd" "${args[@]}" "${extra[@]}" >/dev/null 2>"$datadir/btcd.stderr" </dev/null &
pid=$!
echo "$pid" >"$pidfile"

if [ -n "$watchpid" ]; then
	# Stop the node once the watched process is gone.
	(
		while kill -0 "$watchpid" 2>/dev/null && kill -0 "$pid" 2>/dev/null; do sleep 1; done
		kill -TERM "$pid" 2>/dev/null || true
	) >/dev/null 2>&1 </dev/null &
	disown $! 2>/dev/null || true
fi

# Wait until RPC answers an authenticated request.
scheme=http
curlopts=(-s -o /dev/null -w '%{http_code}' --max-time 2)
if [ "$tls" = 1 ]; then
	scheme=https
	curlopts+=(--cacert "$datadir/rpc.cert")
fi
probe() {
	if command -v curl >/dev/null 2>&1; then
		[ "$(curl "${curlopts[@]}" -u "$rpcuser:$rpcpass" -H 'Content-Type: application/json' \
			-d '{"jsonrpc":"1.0","id":1,"method":"getbestblock","params":[]}' \
			"$scheme://127.0.0.1:$rpcport/" 2>/dev/null)" = 200 ]
	else
		# No curl: a plain HTTP request over bash's /dev/tcp (no TLS).
		local auth body req line
		auth=$(printf '%s:%s' "$rpcuser" "$rpcpass" | base64 | tr -d '\n')
		body='{"jsonrpc":"1.0","id":1,"method":"getbestblock","params":[]}'
		req="POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic $auth\r\nContent-Type: application/json\r\nContent-Length: ${#body}\r\nConnection: close\r\n\r\n$body"
		{ exec 3<>"/dev/tcp/127.0.0.1/$rpcport"; } 2>/dev/null || return 1
		printf '%b' "$req" >&3
		IFS= read -r -t 2 line <&3 || line=
		exec 3>&-
		case "$line" in *" 200 "*) return 0 ;; *) return 1 ;; esac
	fi
}
deadline=$(( $(date +%s) + wait_s ))
until probe; do
	# Our own child: kill -0 suffices (its comm may still read "bash"
	# or "setsid" until exec).
	if ! kill -0 "$pid" 2>/dev/null; then
		echo "btcd.sh: btcd exited during startup; last log lines:" >&2
		tail -n 20 "$datadir/btcd.stderr" "$datadir/logs/$net/btcd.log" >&2 2>/dev/null || true
		rm -f "$pidfile"
		exit 1
	fi
	if [ "$(date +%s)" -ge "$deadline" ]; then
		echo "btcd.sh: btcd (pid $pid) did not answer RPC on 127.0.0.1:$rpcport within ${wait_s}s; stopping it" >&2
		kill -TERM "$pid" 2>/dev/null || true
		rm -f "$pidfile"
		exit 1
	fi
	sleep 0.1
done

echo "BTCD_PID=$pid"
print_url
