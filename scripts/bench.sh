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
SECTIONS=${SECTIONS:-chain keys tree fs images vm}
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

# now_ms: wall clock in milliseconds.
now_ms() { date +%s%3N; }

section_keys() {
  echo "== keys: password KDF (one offline guess), init and login end to end"
  local f=$OUT/keys-kdf.txt
  go test -run '^$' -bench 'DeriveDefault|DerivePBKDF2' -count "$COUNT" ./keyring/ >"$f" 2>&1 || { cat "$f"; return 1; }
  local argon pbkdf
  argon=$(awk '$1 ~ /^BenchmarkDeriveDefault/ {print $3/1e6}' "$f" | median)
  pbkdf=$(awk '$1 ~ /^BenchmarkDerivePBKDF2/ {print $3/1e6}' "$f" | median)
  printf '  kdf         argon2id t=3 m=64MiB p=4  %8s ms per guess\n' "$argon"
  printf '  kdf         pbkdf2-sha256 600k        %8s ms per guess\n' "$pbkdf"
  local tmp; tmp=$(mktemp -d)
  local port=$((20000 + RANDOM % 20000))
  bin/integrity secret-server --listen 127.0.0.1:$port --data "$tmp/ss" --code-file "$tmp/codes" \
    --code-resend-interval 1ms --rate 1000 --burst 1000 >"$tmp/ss.log" 2>&1 &
  local sspid=$!
  sleep 1
  echo "bench password" >"$tmp/pw"
  local inits=() logins=()
  for i in $(seq 1 "$COUNT"); do
    local d="$tmp/dev$i" t0 t1
    t0=$(now_ms)
    bin/integrity --data-dir "$d" init --no-os --user "bench$i" --destination "bench$i" --secret-server http://127.0.0.1:$port \
      --code-file "$tmp/codes" --password-file "$tmp/pw" --backup-key-out "$tmp/bk$i" >/dev/null 2>&1
    t1=$(now_ms); inits+=($((t1 - t0)))
    bin/integrity --data-dir "$d" logout >/dev/null
    t0=$(now_ms)
    bin/integrity --data-dir "$d" login --user "bench$i" --secret-server http://127.0.0.1:$port \
      --code-file "$tmp/codes" --password-file "$tmp/pw" >/dev/null
    t1=$(now_ms); logins+=($((t1 - t0)))
  done
  kill $sspid 2>/dev/null || true
  rm -rf "$tmp"
  printf '  init        embedded chain, 1 secret server  %6s ms (of which KDF %s ms; --no-os)\n' "$(printf '%s\n' "${inits[@]}" | median)" "$argon"
  printf '  login       embedded chain, 1 secret server  %6s ms (of which KDF %s ms)\n' "$(printf '%s\n' "${logins[@]}" | median)" "$argon"
}

section_tree() {
  echo "== tree: bytes stored per byte, 1-byte edit, rebuild on a new device, put latency (embedded chain)"
  local f=$OUT/tree.txt
  go test -run '^$' -bench 'Storage|Rebuild|PutLatency' -benchtime 1x -count "$COUNT" -timeout 30m ./chainfs/ >"$f" 2>&1 || { cat "$f"; return 1; }
  go test -run '^$' -bench 'PutLatency' -benchtime 200x -count "$COUNT" ./chainfs/ >"$f.put" 2>&1 || { cat "$f.put"; return 1; }
  printf '  1 MiB file       %8s bytes stored per byte of content (chain + blobs)\n' "$(metric "$f" BenchmarkStorage/file-1MiB stored/byte)"
  printf '  4 MiB file       %8s bytes stored per byte (content in a blob)\n' "$(metric "$f" BenchmarkStorage/file-4MiB stored/byte)"
  printf '  1-byte edit      %8s chain bytes (1 MiB file)\n' "$(metric "$f" BenchmarkStorage/file-1MiB chain-bytes/1-byte-edit)"
  printf '  1-byte edit      %8s chain bytes (4 MiB file)\n' "$(metric "$f" BenchmarkStorage/file-4MiB chain-bytes/1-byte-edit)"
  printf '  1 KiB files      %8s bytes stored per byte (200 files in a folder)\n' "$(metric "$f" BenchmarkStorage/tree-of-1KiB-files stored/byte)"
  printf '  rebuild          %8s s for 1,000 nodes\n' "$(metric "$f" BenchmarkRebuild/nodes-1000 s/rebuild)"
  printf '  rebuild          %8s s for 10,000 nodes\n' "$(metric "$f" BenchmarkRebuild/nodes-10000 s/rebuild)"
  printf '  put latency      %8s ms from write to commit accepted by the chain\n' "$(awk '$1 ~ /^BenchmarkPutLatency/ {print $3/1e6}' "$f.put" | median)"
}

# fs_target NAME DIR: run the BENCH.md filesystem workloads in DIR and
# append "NAME workload value" lines to $FSOUT.
fs_target() {
  local name=$1 dir=$2 j
  mkdir -p "$dir/fio"
  j=$(fio --name=w --rw=write --bs=128k --size=256m --end_fsync=1 --directory="$dir/fio" --output-format=json 2>/dev/null)
  echo "$name seq-write $(echo "$j" | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["write"]["bw"]/1024)')" >>"$FSOUT"
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  j=$(fio --name=w --rw=read --bs=128k --size=256m --directory="$dir/fio" --output-format=json 2>/dev/null)
  echo "$name seq-read $(echo "$j" | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["read"]["bw"]/1024)')" >>"$FSOUT"
  j=$(fio --name=w --rw=randread --bs=4k --size=256m --directory="$dir/fio" --output-format=json 2>/dev/null)
  echo "$name rand-read $(echo "$j" | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["read"]["bw"]/1024)')" >>"$FSOUT"
  rm -rf "$dir/fio"
  mkdir -p "$dir/small"
  local t0 t1
  t0=$(now_ms); python3 scripts/smallfiles.py "$dir/small" 50 100; t1=$(now_ms)
  echo "$name create $(( t1 - t0 ))" >>"$FSOUT"
  t0=$(now_ms); ls -lR "$dir/small" >/dev/null; t1=$(now_ms)
  echo "$name list $(( t1 - t0 ))" >>"$FSOUT"
  t0=$(now_ms); rm -rf "$dir/small"; t1=$(now_ms)
  echo "$name delete $(( t1 - t0 ))" >>"$FSOUT"
}

# unmount_retry DIR: unmount, retrying while busy, lazily as a last resort.
unmount_retry() {
  local i
  for i in 1 2 3 4 5 6 7 8 9 10; do
    fusermount3 -u "$1" 2>/dev/null && return 0
    umount "$1" 2>/dev/null && return 0
    sleep 0.5
  done
  umount -l "$1"
}

section_fs() {
  echo "== fs: BENCH.md workloads on tmpfs, gocryptfs and integrity (medians of $COUNT runs; ratio = integrity / gocryptfs)"
  command -v fio >/dev/null || { echo "  fio is not installed (apt-get install fio)"; return 1; }
  command -v gocryptfs >/dev/null || { echo "  gocryptfs is not installed (apt-get install gocryptfs)"; return 1; }
  local tmp; tmp=$(mktemp -d)
  FSOUT=$tmp/results.txt
  : >"$FSOUT"
  local port=$((20000 + RANDOM % 20000))
  bin/integrity secret-server --listen 127.0.0.1:$port --data "$tmp/ss" --code-file "$tmp/codes" \
    --code-resend-interval 1ms --rate 1000 --burst 1000 >"$tmp/ss.log" 2>&1 &
  local sspid=$!
  sleep 1
  echo "bench password" >"$tmp/pw"
  # Like gocryptfs's ciphertext, integrity's data directory (chain, blobs,
  # journal) lives on a tmpfs, so both compare the filesystem, not the disk.
  mkdir -p "$tmp/idata"; mount -t tmpfs tmpfs "$tmp/idata"
  bin/integrity --data-dir "$tmp/idata" init --no-os --user fsbench --destination fsbench --secret-server http://127.0.0.1:$port \
    --code-file "$tmp/codes" --password-file "$tmp/pw" --backup-key-out "$tmp/bk" >/dev/null 2>&1
  for i in $(seq 1 "$COUNT"); do
    mkdir -p "$tmp/tmpfs"; mount -t tmpfs tmpfs "$tmp/tmpfs"
    fs_target tmpfs "$tmp/tmpfs"
    unmount_retry "$tmp/tmpfs"

    mkdir -p "$tmp/gb" "$tmp/gp"; mount -t tmpfs tmpfs "$tmp/gb"; mkdir "$tmp/gb/cipher"
    gocryptfs -q -init -extpass 'echo pw' -scryptn 10 "$tmp/gb/cipher" >/dev/null 2>&1
    gocryptfs -q -nosyslog -extpass 'echo pw' "$tmp/gb/cipher" "$tmp/gp"
    fs_target gocryptfs "$tmp/gp"
    unmount_retry "$tmp/gp"; unmount_retry "$tmp/gb"

    bin/integrity --data-dir "$tmp/idata" mount "$tmp/imnt" >/dev/null 2>&1
    mkdir -p "$tmp/imnt/run$i"
    fs_target integrity "$tmp/imnt/run$i"
    bin/integrity --data-dir "$tmp/idata" unmount >/dev/null 2>&1
  done
  kill $sspid 2>/dev/null || true
  unmount_retry "$tmp/idata"
  printf '  %-10s %12s %12s %12s %9s %9s\n' workload tmpfs gocryptfs integrity ratio target
  local w unit
  for w in seq-write seq-read rand-read create list delete; do
    unit="MiB/s"; case $w in create|list|delete) unit="ms";; esac
    local t g i
    t=$(awk -v w=$w '$1=="tmpfs" && $2==w {print $3}' "$FSOUT" | median)
    g=$(awk -v w=$w '$1=="gocryptfs" && $2==w {print $3}' "$FSOUT" | median)
    i=$(awk -v w=$w '$1=="integrity" && $2==w {print $3}' "$FSOUT" | median)
    local target=""
    case $w in seq-read) target=">= 0.9";; list) target="<= 1.5";; create) target="<= 5";; esac
    printf '  %-10s %8.1f %-5s %8.1f %-5s %8.1f %-5s %7.2fx %9s\n' $w "$t" "$unit" "$g" "$unit" "$i" "$unit" "$(python3 -c "print($i/$g if $g else 0)")" "$target"
  done
  rm -rf "$tmp"
}

# section_images: BENCH-style image workload: IMAGES_MB (default 500) of
# photo-sized files (2-5 MiB of random bytes). Anchors: tar into a
# gocryptfs folder (for create) and tar out of it after drop_caches (for
# mount + read). integrity: image create (pack, upload to a free image
# server on loopback, mount) and mount + read every file back through the
# FUSE mount by range from the server. Everything on tmpfs.
section_images() {
  local mb=${IMAGES_MB:-500}
  echo "== images: $mb MB of photo-sized files (medians of $COUNT runs; ratio = gocryptfs time / integrity time: >1 is faster)"
  command -v gocryptfs >/dev/null || { echo "  gocryptfs is not installed (apt-get install gocryptfs)"; return 1; }
  local tmp; tmp=$(mktemp -d)
  mkdir -p "$tmp/t"; mount -t tmpfs tmpfs "$tmp/t"
  mkdir -p "$tmp/t/src"
  local total=0 i=0
  while [ $total -lt $((mb * 1024 * 1024)) ]; do
    local sz=$(( (2 + RANDOM % 4) * 1024 * 1024 ))
    head -c $sz /dev/urandom >"$tmp/t/src/photo$(printf %04d $i).jpg"
    total=$((total + sz)); i=$((i + 1))
  done
  local files=$i
  local port=$((20000 + RANDOM % 20000))
  bin/integrity image-server --listen 127.0.0.1:$port --data "$tmp/t/server" --policy price=0,max-size=2GiB \
    --rate 100000 --burst 100000 >"$tmp/server.log" 2>&1 &
  local srvpid=$!
  local sport=$((20000 + RANDOM % 20000))
  bin/integrity secret-server --listen 127.0.0.1:$sport --data "$tmp/ss" --code-file "$tmp/codes" \
    --code-resend-interval 1ms --rate 1000 --burst 1000 >"$tmp/ss.log" 2>&1 &
  local sspid=$!
  sleep 1
  echo "bench password" >"$tmp/pw"
  local out=$OUT/images.txt
  : >"$out"
  for r in $(seq 1 "$COUNT"); do
    # Anchor: tar into gocryptfs.
    mkdir -p "$tmp/t/gb$r/cipher" "$tmp/gp$r"
    gocryptfs -q -init -extpass 'echo pw' -scryptn 10 "$tmp/t/gb$r/cipher" >/dev/null 2>&1
    gocryptfs -q -nosyslog -extpass 'echo pw' "$tmp/t/gb$r/cipher" "$tmp/gp$r"
    local t0 t1
    t0=$(now_ms); tar -C "$tmp/t/src" -cf - . | tar -C "$tmp/gp$r" -xf -; sync; t1=$(now_ms)
    echo "gocryptfs tar $((t1 - t0))" >>"$out"
    sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
    t0=$(now_ms); tar -C "$tmp/gp$r" -cf - . | cat >/dev/null; t1=$(now_ms)
    echo "gocryptfs read $((t1 - t0))" >>"$out"
    unmount_retry "$tmp/gp$r"; rm -rf "$tmp/t/gb$r"
    # integrity: create (pack + upload + mount), then mount and read back.
    local d="$tmp/t/dev$r"
    bin/integrity --data-dir "$d" init --no-os --user "img$r" --destination "img$r" --secret-server http://127.0.0.1:$sport \
      --code-file "$tmp/codes" --password-file "$tmp/pw" --backup-key-out "$tmp/bk$r" >/dev/null 2>&1
    t0=$(now_ms)
    local res; res=$(bin/integrity --data-dir "$d" image create "$tmp/t/src" /photos --server http://127.0.0.1:$port)
    t1=$(now_ms)
    echo "integrity create $((t1 - t0))" >>"$out"
    local ref; ref=$(echo "$res" | awk '/^reference:/ {print $2}')
    bin/integrity --data-dir "$d" image unmount /photos >/dev/null
    bin/integrity --data-dir "$d" mount "$tmp/m$r" >/dev/null 2>&1
    t0=$(now_ms)
    bin/integrity --data-dir "$d" image mount "$ref" /photos --server http://127.0.0.1:$port >/dev/null
    tar -C "$tmp/m$r/photos" -cf - . | cat >/dev/null
    t1=$(now_ms)
    echo "integrity mount-read $((t1 - t0))" >>"$out"
    bin/integrity --data-dir "$d" unmount >/dev/null 2>&1
    rm -rf "$d"
  done
  kill $srvpid $sspid 2>/dev/null || true
  wait $srvpid 2>/dev/null || true
  local g gr c m
  g=$(awk '$1=="gocryptfs" && $2=="tar" {print $3}' "$out" | median)
  gr=$(awk '$1=="gocryptfs" && $2=="read" {print $3}' "$out" | median)
  c=$(awk '$2=="create" {print $3}' "$out" | median)
  m=$(awk '$2=="mount-read" {print $3}' "$out" | median)
  printf '  %-34s %8s ms  %7.0f MB/s\n' "tar into gocryptfs (anchor)" "$g" "$(python3 -c "print($mb*1.048576/($g/1000))")"
  printf '  %-34s %8s ms  %7.0f MB/s  %5.2fx\n' "image create (pack+upload+mount)" "$c" "$(python3 -c "print($mb*1.048576/($c/1000))")" "$(python3 -c "print($g/$c)")"
  printf '  %-34s %8s ms  %7.0f MB/s\n' "tar out of gocryptfs (anchor)" "$gr" "$(python3 -c "print($mb*1.048576/($gr/1000))")"
  printf '  %-34s %8s ms  %7.0f MB/s  %5.2fx\n' "image mount + read all by range" "$m" "$(python3 -c "print($mb*1.048576/($m/1000))")" "$(python3 -c "print($gr/$m)")"
  echo "  ($files files)"
  unmount_retry "$tmp/t"
  rm -rf "$tmp"
}

section_vm() {
  echo "== vm: System VM boot, host calls, guest writes (sample OS and test guests on a chainfs tree, embedded chain)"
  local f=$OUT/vm.txt
  go test -run '^$' -bench . -benchtime 3x -count "$COUNT" ./vm/hostdev/ >"$f" 2>&1 || { cat "$f"; return 1; }
  printf '  boot, cold     %8s ms (compiling the OS)\n' "$(metric "$f" BenchmarkBootCold ms/boot)"
  printf '  boot, warm     %8s ms (compiled code cached)\n' "$(metric "$f" BenchmarkBootWarm ms/boot)"
  printf '  host call      %8s ns bare, %s ns for a chain query\n' "$(metric "$f" BenchmarkHostCall ns/call)" "$(metric "$f" BenchmarkHostCall ns/chain-call)"
  printf '  guest write    %8s MiB/s (32 MiB file through WASI into the tree)\n' "$(metric "$f" BenchmarkGuestWrite MiB/s)"
  printf '  mount write    %8s MiB/s (the same file through the FUSE mount)\n' "$(metric "$f" BenchmarkMountWrite MiB/s)"
}

for s in $SECTIONS; do
  "section_$s"
done
