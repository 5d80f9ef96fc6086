#!/usr/bin/env bash
# hello-bench.sh — lazy pulls side by side: time from pull start to a workload's exit in a
# container, cold, for three snapshotters, over a set of images, workloads and links.
# Needs root (run scripts/setup.sh once). Everything it uses is in this repository or
# installed by scripts/setup.sh.
#
# usage: benches/hello-bench.sh [options]
#   --runs N              cold runs per cell (default 3)
#   --link L              loopback | slow | both (default both); slow = benches/slow-link.sh
#                         (20 ms each way, 100 Mbit/s, the registry in a network namespace)
#   --tools LIST          comma list of (default all):
#                           containerd  `ctr image pull` (full pull into overlayfs) + `ctr run`
#                           stargz      the reference stargz-snapshotter 0.12 daemon
#                                       (benches/reference/, upstream defaults) with
#                                       `ctr-remote image rpull` + `ctr run --snapshotter stargz`
#                           strata      `strata serve` ([snapshotters] strata = "stargz") with
#                                       `ctr-remote image rpull` + `ctr run --snapshotter strata`
#                           strata-run  the same daemon, no containerd in the path:
#                                       `strata run --rm --snapshotter strata` (the CLI resolves
#                                       the image, the daemon mounts its layers lazily, runc runs)
#   --image LIST          comma list of (default all), all converted from the one OCI layout
#                         benches/hello/build_image.py builds from this host's packages:
#                           strata                `strata convert --prioritize-from` what
#                                                 python-print reads (Strata's layer annotations)
#                           ctr-remote            `ctr-remote image convert --estargz --oci`
#                           ctr-remote-optimized  `ctr-remote image optimize --oci`, profiled
#                                                 with python-print (prefetch landmarks)
#   --workload LIST       comma list of (default all):
#                           python-print    python3 -c 'print("hello")'
#                           python-imports  python3 importing 14 stdlib modules (sqlite3,
#                                           decimal, email, http.client, zipfile...) and using them
#                           shell-tools     sh -c: ls, find, grep, sed, sort, uniq, wc, md5sum,
#                                           sha1sum, xargs, date, id, stat, rev... over the image
#                           large-read      sha256sum of /opt/bench/bulk.bin (16 MiB, only
#                                           this workload reads it)
#   -h, --help            this text
#
# Each run starts every daemon on empty roots after dropping the page cache; tools
# alternate within each round (for each image and workload, every tool once). A workload's
# output must equal what it prints in a chroot of the unpacked layout, or the run fails.
# Recorded per run: seconds from pull start to the workload's exit; the registry's blob GETs,
# all its requests and the bytes it sent by then (its access log); the snapshotter daemon's
# peak RSS (VmHWM; strata: serve + fd-holder). Prints medians (min–max) per image ×
# workload × link × tool and strata/stargz ratios.
#
# Environment: KEEP_LOGS=DIR keeps each run's logs (and the daemon's smaps);
# STRATA_LOG=debug sets strata's log level; STRATA_WRAP="heaptrack -o FILE" runs
# `strata serve` under a profiler; STRATA_STARGZ='key = value' adds to strata's [stargz]
# config. Builds the release binaries (cargo build --release --locked) and the reference
# daemon first, every time (nothing to do when current).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

ALL_TOOLS="containerd stargz strata strata-run"
ALL_IMAGES="strata ctr-remote ctr-remote-optimized"
ALL_WORKLOADS="python-print python-imports shell-tools large-read"
RUNS=3
LINKS=both
TOOLS=$ALL_TOOLS
IMAGES=$ALL_IMAGES
WORKLOADS=$ALL_WORKLOADS

log() { echo "hello-bench: $*" >&2; }
die() { log "$*"; exit 2; }
usage() { sed -n '/^# usage:/,/^#   -h, --help/p' "$0" | sed 's/^# \{0,1\}//'; }
# pick LIST ALLOWED: the comma list's names, each checked against the allowed ones
pick() {
    local out=() n
    for n in ${1//,/ }; do
        case " $2 " in *" $n "*) out+=("$n") ;; *) die "unknown name '$n' (one of: $2)" ;; esac
    done
    [ ${#out[@]} -gt 0 ] || die "empty list (one of: $2)"
    echo "${out[*]}"
}
while [ $# -gt 0 ]; do
    case $1 in
        --runs) [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || die "--runs N"; RUNS=$2; shift 2 ;;
        --link) LINKS=${2:-}; shift 2 ;;
        --tools) TOOLS=$(pick "${2:-}" "$ALL_TOOLS"); shift 2 ;;
        --image | --images) IMAGES=$(pick "${2:-}" "$ALL_IMAGES"); shift 2 ;;
        --workload | --workloads) WORKLOADS=$(pick "${2:-}" "$ALL_WORKLOADS"); shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument $1" ;;
    esac
done
case $LINKS in loopback | slow | both) ;; *) die "--link loopback|slow|both" ;; esac
[ "$(id -u)" = 0 ] || die "needs root (FUSE, overlay mounts, network namespaces, containerd)"
has() { case " $1 " in *" $2 "*) return 0 ;; esac; return 1; }

# One invocation at a time: two would share the slow link and disturb each other's timings.
exec 9>/run/strata-hello-bench.lock
flock -n 9 || die "another hello-bench is running"

log "building the release binaries"
cargo build --release --locked -p strata -p strata-benches --bin strata --bin strata-bench >&2
STRATA=$REPO/target/release/strata
export STRATA_BENCH=$REPO/target/release/strata-bench
STARGZ=
if has "$TOOLS" stargz; then STARGZ=$(benches/reference/build-stargz-grpc.sh | tail -1); fi
REVISION=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if ! git diff --quiet HEAD -- src formats fuse snapshotters proto Cargo.toml Cargo.lock 2>/dev/null ||
    [ -n "$(git ls-files --others --exclude-standard -- src formats fuse snapshotters proto 2>/dev/null)" ]; then
    REVISION="$REVISION + uncommitted changes"
fi
log "strata at $REVISION"

W=$(mktemp -d /tmp/hello-bench.XXXXXX)
PIDS=()
SLOW_UP=
# The slow link's settings (benches/slow-link.sh reads them from the environment).
export NS=strata-slowlink BACKEND_PORT=5001

stop_pid() {
    kill -TERM "$1" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$1" 2>/dev/null || true
}
forget_pid() { local p keep=(); for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done; PIDS=("${keep[@]}"); }
unmount_under() { { grep -o " $1[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done; }
# Processes started for a run directory that outlive their parent: strata's fd holders,
# containerd's shims (and so their containers).
kill_leftovers() {
    local p
    for p in $(pgrep -f "fd-holder --socket $1" || true) $(pgrep -f "containerd-shim-runc-v2 .*-address $1" || true); do
        kill -KILL "$p" 2>/dev/null || true
    done
}
cleanup() {
    set +e
    local i
    # Newest first: a run's containerd before its snapshotter daemon, the registries last.
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${PIDS[i]}"; done
    kill_leftovers "$W"
    unmount_under "$W"
    [ -n "$SLOW_UP" ] && benches/slow-link.sh down >/dev/null 2>&1
    rm -rf --one-file-system "$W"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
wait_for() { for _ in $(seq 600); do [ -S "$1" ] && return 0; sleep 0.05; done; log "no socket $1"; return 1; }

# --- Workloads: the command run in the container (WL) and the output expected of it. ---
PY_IMPORTS='import argparse, csv, datetime, decimal, email.message, hashlib, http.client, io, json, logging, sqlite3, subprocess, uuid, zipfile
db = sqlite3.connect(":memory:")
db.execute("create table t (k text, v real)")
db.executemany("insert into t values (?, ?)", [("a", 1.5), ("b", 2.25)])
out = io.StringIO()
csv.writer(out).writerow(["x", decimal.Decimal("1.10") + decimal.Decimal("2.20")])
z = io.BytesIO()
with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as f:
    f.writestr("a.txt", "hello " * 100)
m = email.message.EmailMessage()
m["Subject"] = "hi"
argparse.ArgumentParser(prog="x").parse_args([])
print(json.dumps({"sum": db.execute("select sum(v) from t").fetchone()[0], "csv": out.getvalue().strip(),
                  "zip": zipfile.ZipFile(z).read("a.txt").count(b"hello"), "uuid": str(uuid.uuid5(uuid.NAMESPACE_DNS, "strata")),
                  "day": datetime.date(2024, 2, 29).isoformat(), "subject": m["Subject"], "sha": hashlib.sha256(b"strata").hexdigest()[:12],
                  "status": http.client.responses[200], "level": logging.getLevelName(logging.WARNING), "run": subprocess.__name__},
                 sort_keys=True))'
SHELL_TOOLS='cd /usr/lib/python3.11 &&
echo "modules $(ls | wc -l)" &&
echo "zoneinfo $(find /usr/share/zoneinfo -type f | wc -l)" &&
echo "import-os $(grep -l "^import os" *.py | sort | head -n 4 | tr "\n" " ")" &&
echo "os-id $(sed -n "s/^ID=//p" /usr/lib/os-release)" &&
echo "bins $(ls /usr/bin | sort | uniq | wc -l)" &&
echo "md5 $(md5sum /usr/bin/ls /usr/bin/grep /usr/bin/sed | cut -c1-8 | tr "\n" " ")" &&
echo "sha1 $(sha1sum /usr/lib/os-release | cut -c1-12)" &&
echo "words $(tr -cs A-Za-z "\n" <this.py | tr A-Z a-z | sort | uniq -c | sort -k1,1nr -k2 | head -n 3 | tr -s " " | tr "\n" " ")" &&
echo "email $(find email -name "*.py" | sort | head -n 4 | xargs wc -l | tail -n 1)" &&
echo "misc $(date -u -d @86400 +%F) uid=$(id -u) $(expr 6 \* 7) $(stat -c %s /usr/bin/env) $(basename /usr/lib/x86_64-linux-gnu/libc.so.6) $(printf %s abc | rev)"'
workload() { # NAME: sets WL to the command
    case $1 in
        python-print) WL=(python3 -c 'print("hello")') ;;
        python-imports) WL=(python3 -c "$PY_IMPORTS") ;;
        shell-tools) WL=(sh -c "$SHELL_TOOLS") ;;
        large-read) WL=(sha256sum /opt/bench/bulk.bin) ;;
    esac
}

# --- The layout, and what each workload prints in a chroot of it. ---
log "building the image from this host's packages"
/usr/bin/python3 benches/hello/build_image.py "$W/layout" "$W/prio.txt" docker.io/library/hello-python:1
mkdir -p "$W/rootfs" "$W/expect"
for blob in $(/usr/bin/python3 -c '
import json, sys
d = sys.argv[1]
index = json.load(open(d + "/index.json"))
manifest = json.load(open(d + "/blobs/sha256/" + index["manifests"][0]["digest"][7:]))
print(" ".join(l["digest"][7:] for l in manifest["layers"]))' "$W/layout"); do
    tar -xzpf "$W/layout/blobs/sha256/$blob" -C "$W/rootfs" --numeric-owner
done
mkdir -p "$W/rootfs/dev" "$W/rootfs/proc"
mount --bind /dev "$W/rootfs/dev"
mount -t proc proc "$W/rootfs/proc"
for wl in $WORKLOADS; do
    workload "$wl"
    chroot "$W/rootfs" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin "${WL[@]}" >"$W/expect/$wl" ||
        die "$wl fails in a chroot of the layout"
    [ -s "$W/expect/$wl" ] || die "$wl prints nothing in a chroot of the layout"
done
umount "$W/rootfs/proc" "$W/rootfs/dev"
rm -rf --one-file-system "$W/rootfs"

# --- A loopback registry with the images; the slow link's registry serves the same storage. ---
registry_config() { # FILE ADDR
    cat >"$1" <<YML
version: 0.1
log: {level: info, formatter: text}
storage: {filesystem: {rootdirectory: $W/registry-data}, delete: {enabled: true}}
http: {addr: $2}
YML
}
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
registry_config "$W/registry.yml" "127.0.0.1:$PORT"
docker-registry serve "$W/registry.yml" >"$W/registry-loopback.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done
LOCAL=127.0.0.1:$PORT/hello/python

if has "$IMAGES" strata; then
    log "image strata: strata convert --prioritize-from (python-print's files)"
    { "$STRATA" --root "$W/store" image import "$W/layout" &&
        "$STRATA" --root "$W/store" convert --prioritize-from "$W/prio.txt" docker.io/library/hello-python:1 hello-python:strata &&
        "$STRATA" --root "$W/store" push --plain-http "$LOCAL:strata" hello-python:strata; } >"$W/strata-image.log" 2>&1 ||
        { tail -5 "$W/strata-image.log" >&2; die "strata image: convert or push failed"; }
    rm -rf "$W/store"
fi
if has "$IMAGES" ctr-remote || has "$IMAGES" ctr-remote-optimized; then
    # ctr-remote converts inside a containerd content store: a private containerd, the
    # layout imported, converted (both at once: each is one gzip stream per layer), pushed.
    c=$W/convert
    mkdir -p "$c"
    cat >"$c/containerd.toml" <<TOML
version = 2
root = "$c/root"
state = "$c/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$c/containerd.sock"
[ttrpc]
  address = "$c/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$c/opt"
TOML
    containerd --config "$c/containerd.toml" >"$c/containerd.log" 2>&1 &
    cpid=$!
    PIDS+=($cpid)
    wait_for "$c/containerd.sock"
    CTR=(ctr -a "$c/containerd.sock" -n convert)
    tar -C "$W/layout" -cf "$c/layout.tar" .
    "${CTR[@]}" image import "$c/layout.tar" >"$c/import.log" 2>&1 || { cat "$c/import.log" >&2; die "ctr image import failed"; }
    jobs_=()
    if has "$IMAGES" ctr-remote; then
        log "image ctr-remote: ctr-remote image convert --estargz --oci"
        ctr-remote -a "$c/containerd.sock" -n convert image convert --estargz --oci \
            docker.io/library/hello-python:1 "$LOCAL:ctr-remote" >"$c/ctr-remote.log" 2>&1 &
        jobs_+=("$!:ctr-remote")
    fi
    if has "$IMAGES" ctr-remote-optimized; then
        log "image ctr-remote-optimized: ctr-remote image optimize --oci, profiling python-print"
        ctr-remote -a "$c/containerd.sock" -n convert image optimize --oci --period 10 \
            --entrypoint '["python3"]' --args '["-c", "print(\"hello\")"]' \
            docker.io/library/hello-python:1 "$LOCAL:ctr-remote-optimized" >"$c/ctr-remote-optimized.log" 2>&1 &
        jobs_+=("$!:ctr-remote-optimized")
    fi
    for j in "${jobs_[@]}"; do
        wait "${j%%:*}" || { tail -5 "$c/${j#*:}.log" >&2; die "ctr-remote for image ${j#*:} failed"; }
        "${CTR[@]}" image push --plain-http "$LOCAL:${j#*:}" >"$c/push.log" 2>&1 || { tail -5 "$c/push.log" >&2; die "push of ${j#*:} failed"; }
    done
    stop_pid "$cpid"
    forget_pid "$cpid"
    kill_leftovers "$c"
    unmount_under "$c"
    rm -rf --one-file-system "$c"
fi
# What each image is: its layers' compressed sizes, and whether Strata's hints are in it.
for image in $IMAGES; do
    curl -fs -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://127.0.0.1:$PORT/v2/hello/python/manifests/$image" |
        /usr/bin/python3 -c '
import json, sys
m = json.load(sys.stdin)
hints = sum(1 for l in m["layers"] for k in l.get("annotations", {}) if k.startswith("containerd.io/snapshot/strata/"))
sizes = "+".join("%.1f" % (l["size"] / 1e6) for l in m["layers"])
print("hello-bench: image %s: %d layers, %s MB, %d Strata annotations" % (sys.argv[1], len(m["layers"]), sizes, hints), file=sys.stderr)
if (hints > 0) != (sys.argv[1] == "strata"):
    sys.exit(f"hello-bench: image {sys.argv[1]}: unexpected Strata annotations ({hints})")' "$image"
done

SLOW_ADDR=
if [ "$LINKS" != loopback ]; then
    SLOW_UP=1
    SLOW_ADDR=$(benches/slow-link.sh up)
    registry_config "$W/registry-ns.yml" "127.0.0.1:$BACKEND_PORT"
    ip netns exec "$NS" docker-registry serve "$W/registry-ns.yml" >"$W/registry-slow.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do curl -fs "http://$SLOW_ADDR/v2/" >/dev/null && break; sleep 0.1; done
    log "slow link up: $SLOW_ADDR"
fi

# Requests and bytes in a registry log excerpt: "BLOB_GETS REQUESTS BYTES".
registry_counts() {
    awk '/msg="response completed"/ {
        n++
        if ($0 ~ /http\.request\.method=GET/ && $0 ~ /http\.request\.uri="[^"]*\/blobs\//) b++
        if (match($0, /http\.response\.written=[0-9]+/)) w += substr($0, RSTART + 22, RLENGTH - 22)
    } END { printf "%d %d %d\n", b, n, w }'
}

# One cold run: TOOL IMAGE WORKLOAD LINK ADDR REGISTRY_LOG; appends a line to results.
run_one() {
    local tool=$1 image=$2 wl=$3 link=$4 addr=$5 reglog=$6 r=$W/run
    unmount_under "$r"
    rm -rf --one-file-system "$r"
    mkdir -p "$r/hosts/$addr"
    local ref="$addr/hello/python:$image" sock=$r/containerd.sock daemon= snap=overlayfs
    cat >"$r/stargz.toml" <<TOML
[[resolver.host."$addr".mirrors]]
host = "$addr"
insecure = true
TOML
    printf 'server = "http://%s"\n[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$addr" "$addr" >"$r/hosts/$addr/hosts.toml"
    cat >"$r/strata.toml" <<TOML
root = "$r/strata"
socket = "$r/strata.sock"
config_path = "$r/hosts"
[snapshotters]
strata = "stargz"
[stargz]
${STRATA_STARGZ:-}
TOML
    cat >"$r/containerd.toml" <<TOML
version = 2
root = "$r/containerd/root"
state = "$r/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$r/containerd/opt"
[proxy_plugins]
  [proxy_plugins.stargz]
    type = "snapshot"
    address = "$r/stargz.sock"
  [proxy_plugins.strata]
    type = "snapshot"
    address = "$r/strata.sock"
TOML
    workload "$wl"
    sync
    echo 3 >/proc/sys/vm/drop_caches
    case $tool in
        stargz)
            "$STARGZ" -root "$r/stargz" -address "$r/stargz.sock" -config "$r/stargz.toml" -log-level warn >"$r/daemon.log" 2>&1 &
            daemon=$!
            PIDS+=("$daemon")
            wait_for "$r/stargz.sock"
            snap=stargz ;;
        strata | strata-run)
            # shellcheck disable=SC2086
            ${STRATA_WRAP:-} "$STRATA" serve --config "$r/strata.toml" --log-level "${STRATA_LOG:-warn}" >"$r/daemon.log" 2>&1 &
            daemon=$!
            PIDS+=("$daemon")
            wait_for "$r/strata.sock"
            snap=strata ;;
    esac
    containerd --config "$r/containerd.toml" >"$r/containerd.log" 2>&1 &
    local ctrd=$!
    PIDS+=("$ctrd")
    wait_for "$sock"
    local mark0 mark1 t0 t1 ok=1 why=
    : >"$r/out"
    mark0=$(stat -c %s "$reglog")
    t0=$(date +%s.%N)
    case $tool in
        containerd) timeout 300 ctr -a "$sock" -n bench image pull --plain-http "$ref" >"$r/pull.out" 2>"$r/pull.err" || why="pull exit $?" ;;
        strata-run) ;;
        *) timeout 300 ctr-remote -a "$sock" -n bench image rpull --plain-http --snapshotter "$snap" "$ref" >"$r/pull.out" 2>"$r/pull.err" || why="rpull exit $?" ;;
    esac
    if [ -z "$why" ] && [ "$tool" = strata-run ]; then
        timeout 300 "$STRATA" --root "$r/strata-cli" run --rm --plain-http --snapshotter strata \
            --config "$r/strata.toml" --socket "$r/strata.sock" "$ref" "${WL[@]}" \
            >"$r/out" 2>"$r/run.err" || why="strata run exit $?"
    elif [ -z "$why" ]; then
        timeout 300 ctr -a "$sock" -n bench run --rm --snapshotter "$snap" "$ref" "hello-$RANDOM" "${WL[@]}" \
            >"$r/out" 2>"$r/run.err" || why="run exit $?"
    fi
    t1=$(date +%s.%N)
    mark1=$(stat -c %s "$reglog")
    [ -n "$why" ] || cmp -s "$r/out" "$W/expect/$wl" || why="unexpected output"
    [ -z "$why" ] || ok=0
    local counts
    counts=$(tail -c +"$((mark0 + 1))" "$reglog" | head -c "$((mark1 - mark0))" | registry_counts)
    local rss=0 p
    if [ -n "$daemon" ]; then
        rss=$(awk '/VmHWM/ {print $2}' "/proc/$daemon/status" 2>/dev/null || echo 0)
        if [ "$tool" = strata ] || [ "$tool" = strata-run ]; then
            for p in $(pgrep -f "fd-holder --socket $r" || true); do
                rss=$((rss + $(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
            done
        fi
        [ -n "${KEEP_LOGS:-}" ] && cp "/proc/$daemon/smaps" "$r/daemon.smaps.log" 2>/dev/null
    fi
    stop_pid "$ctrd"
    forget_pid "$ctrd"
    if [ -n "$daemon" ]; then stop_pid "$daemon"; forget_pid "$daemon"; fi
    kill_leftovers "$r"
    unmount_under "$r"
    local secs
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
    if [ -n "${KEEP_LOGS:-}" ]; then
        local keep=$KEEP_LOGS/$image-$wl-$link-$tool-$(date +%s%N)
        mkdir -p "$keep"
        cp "$r"/*.log "$r"/*.err "$r"/*.out "$r/out" "$keep/" 2>/dev/null || true
        tail -c +"$((mark0 + 1))" "$reglog" >"$keep/registry.log"
        echo "$t0" >"$keep/start"
    fi
    if [ $ok = 1 ]; then
        echo "$image $wl $link $tool $secs $counts $rss" >>"$W/results"
        log "$image $wl $link $tool: ${secs}s, blob GETs/requests/bytes $counts, rss ${rss} kB"
        # The daemons log at warn level: anything they say is worth a look.
        if [ -s "$r/daemon.log" ]; then
            log "  daemon log: $(grep -c . "$r/daemon.log") lines, the first: $(head -n 1 "$r/daemon.log" | cut -c1-300)"
        fi
    else
        echo "$image $wl $link $tool FAILED 0 0 0 0" >>"$W/results"
        log "$image $wl $link $tool: FAILED ($why) after ${secs}s"
        local f
        for f in out pull.err run.err daemon.log; do
            [ -s "$r/$f" ] || continue
            log "  $f (tail):"
            tail -n 5 "$r/$f" | cut -c1-300 | sed 's/^/    /' >&2
        done
        [ "$why" != "unexpected output" ] || diff "$W/expect/$wl" "$r/out" | head -n 10 | sed 's/^/    /' >&2 || true
    fi
}

: >"$W/results"
start=$SECONDS
for link in loopback slow; do
    [ "$LINKS" = both ] || [ "$LINKS" = "$link" ] || continue
    if [ $link = loopback ]; then addr=127.0.0.1:$PORT reglog=$W/registry-loopback.log; else addr=$SLOW_ADDR reglog=$W/registry-slow.log; fi
    for i in $(seq "$RUNS"); do
        log "$link: round $i of $RUNS"
        for image in $IMAGES; do
            for wl in $WORKLOADS; do
                for tool in $TOOLS; do run_one "$tool" "$image" "$wl" $link "$addr" "$reglog"; done
            done
        done
    done
done
log "runs took $((SECONDS - start)) s"

/usr/bin/python3 - "$W/results" "$RUNS" "$REVISION" "$IMAGES" "$WORKLOADS" "$TOOLS" <<'PY'
import math, statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
runs, revision = sys.argv[2], sys.argv[3]
images, workloads, tools = (a.split() for a in sys.argv[4:7])
links = [l for l in ("loopback", "slow") if any(r[2] == l for r in rows)]
print(f"\nhello-bench: strata at {revision}; {runs} runs per cell; medians (min–max)\n")
print("| image | workload | link | tool | time to exit | blob GETs | requests | MB sent by exit | daemon peak RSS | failed |")
print("|---|---|---|---|---|---|---|---|---|---|")
med = {}
def fmt(xs, f, unit=""):
    if min(xs) == max(xs):
        return f(xs[0]) + unit
    return f"{f(statistics.median(xs))}{unit} ({f(min(xs))}–{f(max(xs))})"
failed_total = 0
for image in images:
    for wl in workloads:
        for link in links:
            for tool in tools:
                cell = [r for r in rows if r[:4] == [image, wl, link, tool]]
                ok = [r for r in cell if r[4] != "FAILED"]
                bad = len(cell) - len(ok)
                failed_total += bad
                if not cell:
                    continue
                if not ok:
                    print(f"| {image} | {wl} | {link} | {tool} | – | – | – | – | – | {bad} |")
                    continue
                t = [float(r[4]) for r in ok]
                g = [int(r[5]) for r in ok]
                n = [int(r[6]) for r in ok]
                b = [int(r[7]) / 1e6 for r in ok]
                m = [int(r[8]) / 1024 for r in ok]
                med[(image, wl, link, tool)] = [statistics.median(x) for x in (t, g, n, b, m)]
                rss = f"{statistics.median(m):.0f} MB" if tool != "containerd" else "–"
                print(f"| {image} | {wl} | {link} | {tool} | {fmt(t, lambda x: f'{x:.2f}', ' s')} | {fmt(g, lambda x: f'{x:g}')} "
                      f"| {fmt(n, lambda x: f'{x:g}')} | {fmt(b, lambda x: f'{x:.1f}')} | {rss} | {bad} |")
ratios = {link: [] for link in links}
lines = []
for image in images:
    for wl in workloads:
        for link in links:
            s, g = med.get((image, wl, link, "strata")), med.get((image, wl, link, "stargz"))
            if not (s and g):
                continue
            r = [a / b if b else float("nan") for a, b in zip(s, g)]
            ratios[link].append(r[0])
            c = med.get((image, wl, link, "containerd"))
            full = f"{s[0] / c[0]:.2f}×" if c else "–"
            sr = med.get((image, wl, link, "strata-run"))
            direct = f"{sr[0] / g[0]:.2f}× ({sr[0] / s[0]:.2f}×)" if sr else "–"
            lines.append(f"| {image} | {wl} | {link} | **{r[0]:.2f}×** | {r[1]:.2f}× | {r[2]:.2f}× | {r[3]:.2f}× | {r[4]:.2f}× | {full} | {direct} |")
if lines:
    print("\nstrata / stargz (medians), strata / containerd's full pull (time), and strata run / stargz (strata run / strata)\n")
    print("| image | workload | link | time | blob GETs | requests | bytes | RSS | time vs full pull | strata run vs stargz (vs strata) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(lines))
    print()
    for link, rs in ratios.items():
        if rs:
            print(f"{link}: geometric mean of strata/stargz time over {len(rs)} image × workload cells: "
                  f"{math.exp(sum(math.log(x) for x in rs) / len(rs)):.2f}×")
if failed_total:
    print(f"\n{failed_total} runs FAILED (see the log above)")
    sys.exit(1)
PY
