#!/usr/bin/env bash
# hello-bench.sh [--runs N] [--link loopback|slow|both] [--tools containerd,stargz,strata]
# — time from pull start to
# `python3 -c 'print("hello")'` having exited, cold, for three ways of getting the image:
#   containerd  `ctr image pull` (full pull, containerd's overlayfs) + `ctr run`
#   stargz      the reference stargz-snapshotter daemon (../shared/reference) with
#               `ctr-remote image rpull --snapshotter stargz` + `ctr run --snapshotter stargz`
#   strata      `strata serve` ([snapshotters] strata = "stargz") with
#               `ctr-remote image rpull --snapshotter strata` + `ctr run --snapshotter strata`
# Same eStargz image (a python3 image built from this host's Debian packages by
# benches/hello/build_image.py, converted by `strata convert` with the files the command
# reads prioritized), same registry, over loopback and over ../shared/reference/slow-link.sh
# (20 ms each way, 100 Mbit). Each run starts every daemon on empty roots, after dropping
# the page cache; tools alternate within each round. Reports medians (min–max), MB the
# registry sent by the time the container exited (its access log), and peak RSS (VmHWM)
# of the snapshotter daemon (strata: serve + fd-holder). Needs root; installs nothing but
# builds strata (release) and the reference daemon if missing. Debugging: KEEP_LOGS=DIR
# keeps each run's logs and the daemon's smaps, STRATA_LOG=debug sets strata's log level,
# STRATA_WRAP="heaptrack -o FILE" runs `strata serve` under a profiler, STRATA_STARGZ='key = value'
# adds to its [stargz] config.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=5
LINKS=both
TOOLS="containerd stargz strata"
while [ $# -gt 0 ]; do
    case $1 in
        --runs) RUNS=$2; shift 2 ;;
        --link) LINKS=$2; shift 2 ;;
        --tools) TOOLS=${2//,/ }; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "hello-bench: unknown argument $1" >&2; exit 2 ;;
    esac
done
case $LINKS in loopback|slow|both) ;; *) echo "hello-bench: --link loopback|slow|both" >&2; exit 2 ;; esac
REFERENCE=$(cd ../shared/reference && pwd)
STRATA=$PWD/target/release/strata
[ -x "$STRATA" ] || cargo build --release --locked --bin strata
STARGZ=
case " $TOOLS " in *" stargz "*) STARGZ=$("$REFERENCE/build-stargz-grpc.sh" | tail -1) ;; esac
W=$(mktemp -d /tmp/hello-bench.XXXXXX)
NS=slowlink
PIDS=()

log() { echo "hello-bench: $*" >&2; }
stop_pid() { kill -TERM "$1" 2>/dev/null || return 0; for _ in $(seq 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done; kill -KILL "$1" 2>/dev/null || true; }
unmount_under() { { grep -o " $1[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done; }
kill_holders() { for p in $(pgrep -f "fd-holder --socket $1" || true); do kill -KILL "$p" 2>/dev/null || true; done; }
cleanup() {
    set +e
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    kill_holders "$W"
    unmount_under "$W"
    if [ "$LINKS" != loopback ]; then "$REFERENCE/slow-link.sh" down >/dev/null 2>&1; fi
    rm -rf "$W"
}
trap cleanup EXIT
wait_for() { for _ in $(seq 300); do [ -S "$1" ] && return 0; sleep 0.05; done; log "no socket $1"; return 1; }

# The image: built, converted with the hello command's files first, pushed to a loopback
# registry whose storage the namespace's registry serves too.
log "building the image from this host's packages"
/usr/bin/python3 benches/hello/build_image.py "$W/layout" "$W/prio.txt" docker.io/library/hello-python:1
"$STRATA" --root "$W/store" image import "$W/layout" >/dev/null
"$STRATA" --root "$W/store" convert --prioritize-from "$W/prio.txt" docker.io/library/hello-python:1 docker.io/library/hello-python:esgz >/dev/null
registry_config() { # FILE ADDR LOG
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
"$STRATA" --root "$W/store" push --plain-http "127.0.0.1:$PORT/hello/python:esgz" docker.io/library/hello-python:esgz >/dev/null
IMAGE_MB=$(du -sm "$W/registry-data" | cut -f1)
log "image pushed (~${IMAGE_MB} MB in the registry)"

SLOW_ADDR=
if [ "$LINKS" != loopback ]; then
    SLOW_ADDR=$("$REFERENCE/slow-link.sh" up)
    registry_config "$W/registry-ns.yml" "127.0.0.1:5001"
    ip netns exec "$NS" docker-registry serve "$W/registry-ns.yml" >"$W/registry-slow.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 100); do curl -fs "http://$SLOW_ADDR/v2/" >/dev/null && break; sleep 0.1; done
    log "slow link up: $SLOW_ADDR"
fi

# One cold run: TOOL LINK ADDR REGISTRY_LOG; appends "tool link seconds bytes rss" to results.
run_one() {
    local tool=$1 link=$2 addr=$3 reglog=$4 r=$W/run
    unmount_under "$r"; rm -rf "$r"; mkdir -p "$r/hosts/$addr"
    local image="$addr/hello/python:esgz" sock=$r/containerd.sock daemon= snap=overlayfs
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
    sync; echo 3 >/proc/sys/vm/drop_caches
    case $tool in
        stargz) "$STARGZ" -root "$r/stargz" -address "$r/stargz.sock" -config "$r/stargz.toml" -log-level warn >"$r/daemon.log" 2>&1 & daemon=$!; wait_for "$r/stargz.sock"; snap=stargz ;;
        strata) ${STRATA_WRAP:-} "$STRATA" serve --config "$r/strata.toml" --log-level "${STRATA_LOG:-warn}" >"$r/daemon.log" 2>&1 & daemon=$!; wait_for "$r/strata.sock"; snap=strata ;;
    esac
    containerd --config "$r/containerd.toml" >"$r/containerd.log" 2>&1 &
    local ctrd=$!
    wait_for "$sock"
    local mark; mark=$(wc -l <"$reglog")
    local t0 t1 out ok=1
    t0=$(date +%s.%N)
    case $tool in
        containerd) ctr -a "$sock" -n bench image pull --plain-http "$image" >/dev/null || ok=0 ;;
        *) ctr-remote -a "$sock" -n bench image rpull --plain-http --snapshotter "$snap" "$image" >/dev/null || ok=0 ;;
    esac
    out=$(ctr -a "$sock" -n bench run --rm --snapshotter "$snap" "$image" "hello-$RANDOM" python3 -c 'print("hello")' 2>"$r/run.err") || ok=0
    t1=$(date +%s.%N)
    [ "$out" = hello ] || ok=0
    local bytes; bytes=$(tail -n +"$((mark + 1))" "$reglog" | grep -o 'http.response.written=[0-9]*' | cut -d= -f2 | paste -sd+ | bc 2>/dev/null || echo 0)
    local rss=0
    if [ -n "$daemon" ]; then
        rss=$(awk '/VmHWM/ {print $2}' "/proc/$daemon/status" 2>/dev/null || echo 0)
        if [ "$tool" = strata ]; then
            for p in $(pgrep -f "fd-holder --socket $r" || true); do rss=$((rss + $(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0))); done
        fi
    fi
    [ -n "${KEEP_LOGS:-}" ] && [ -n "$daemon" ] && cp "/proc/$daemon/smaps" "$r/daemon.smaps.log" 2>/dev/null
    stop_pid "$ctrd"
    [ -n "$daemon" ] && stop_pid "$daemon"
    kill_holders "$r"
    unmount_under "$r"
    # KEEP_LOGS=DIR keeps each run's daemon, containerd and registry logs.
    if [ -n "${KEEP_LOGS:-}" ]; then
        local keep=$KEEP_LOGS/$link-$tool-$(date +%s%N)
        mkdir -p "$keep"
        cp "$r"/*.log "$keep/" 2>/dev/null || true
        tail -n +"$((mark + 1))" "$reglog" >"$keep/registry.log"
        echo "$t0" >"$keep/start"
    fi
    if [ $ok = 1 ]; then
        echo "$tool $link $(echo "$t1 - $t0" | bc) ${bytes:-0} $rss" >>"$W/results"
        log "$link $tool: $(echo "$t1 - $t0" | bc) s, ${bytes:-0} bytes, rss ${rss} kB"
    else
        log "$link $tool: FAILED (output '$out'); daemon log tail:"; tail -5 "$r/daemon.log" >&2 || true; tail -3 "$r/run.err" >&2 || true
        echo "$tool $link FAILED 0 0" >>"$W/results"
    fi
}

: >"$W/results"
for link in loopback slow; do
    [ "$LINKS" = both ] || [ "$LINKS" = "$link" ] || continue
    if [ $link = loopback ]; then addr=127.0.0.1:$PORT; reglog=$W/registry-loopback.log; else addr=$SLOW_ADDR; reglog=$W/registry-slow.log; fi
    for i in $(seq "$RUNS"); do
        for tool in $TOOLS; do run_one "$tool" $link "$addr" "$reglog"; done
    done
done

/usr/bin/python3 - "$W/results" "$RUNS" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
print(f"\nhello-bench, {sys.argv[2]} runs per tool and link (medians, min–max)\n")
print("| link | tool | time to hello exit | MB fetched by exit | daemon peak RSS | failed |")
print("|---|---|---|---|---|---|")
med = {}
for link in ("loopback", "slow"):
    for tool in ("containerd", "stargz", "strata"):
        ok = [r for r in rows if r[0] == tool and r[1] == link and r[2] != "FAILED"]
        bad = sum(1 for r in rows if r[0] == tool and r[1] == link and r[2] == "FAILED")
        if not ok and not bad:
            continue
        if not ok:
            print(f"| {link} | {tool} | – | – | – | {bad} |"); continue
        t = [float(r[2]) for r in ok]; b = [int(r[3]) / 1e6 for r in ok]; m = [int(r[4]) / 1024 for r in ok]
        med[(link, tool)] = (statistics.median(t), statistics.median(b), statistics.median(m))
        rss = f"{statistics.median(m):.0f} MB" if tool != "containerd" else "–"
        print(f"| {link} | {tool} | {statistics.median(t):.2f} s ({min(t):.2f}–{max(t):.2f}) | {statistics.median(b):.1f} ({min(b):.1f}–{max(b):.1f}) | {rss} | {bad} |")
print()
for link in ("loopback", "slow"):
    s, g = med.get((link, "strata")), med.get((link, "stargz"))
    if s and g:
        print(f"{link}: strata/stargz time {s[0]/g[0]:.2f}x, bytes {s[1]/g[1]:.2f}x, RSS {s[2]/g[2]:.2f}x")
    c = med.get((link, "containerd"))
    if s and c:
        print(f"{link}: strata/containerd-full-pull time {s[0]/c[0]:.2f}x")
PY
