#!/usr/bin/env bash
# warm-read.sh [--size 1GiB] [--runs 3] — sequential read throughput of one large file
# through a lazy mount whose chunks are all cached ("warm"), against the same file on this
# host's disk. The page cache is dropped before every timed read, so both read from disk:
#   host         the generated file itself
#   passthrough  `strata mount --lazy --passthrough`: the kernel reads the cache's backing
#                file directly (FUSE passthrough)
#   fuse         `strata mount --lazy`: every read goes through Strata's FUSE server and
#                its chunk cache (for context)
# The image (one layer holding the file, converted to eStargz with 4 MiB chunks) is served
# by a loopback registry; each mount reads the whole file once untimed to fill the cache.
# Needs root; builds strata and strata-testdata (release) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=1GiB
RUNS=3
while [ $# -gt 0 ]; do
    case $1 in
        --size) SIZE=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "warm-read: unknown argument $1" >&2; exit 2 ;;
    esac
done
STRATA=$PWD/target/release/strata
GEN=$PWD/target/release/strata-testdata
[ -x "$STRATA" ] && [ -x "$GEN" ] || cargo build --release --locked --workspace --bins
W=$(mktemp -d /tmp/warm-read.XXXXXX)
PIDS=()
cleanup() {
    set +e
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    { grep -o " $W[^ ]*" /proc/self/mounts || true; } | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf "$W"
}
trap cleanup EXIT
log() { echo "warm-read: $*" >&2; }

log "generating a $SIZE file and its image"
mkdir -p "$W/rootfs/data"
"$GEN" random "$W/rootfs/data/big.bin" --size "$SIZE" --seed 11 --no-digest >/dev/null
/usr/bin/python3 - "$W" <<'PY'
import hashlib, json, os, sys, tarfile
w = sys.argv[1]
layout = os.path.join(w, "layout"); blobs = os.path.join(layout, "blobs", "sha256")
os.makedirs(blobs)
tar_path = os.path.join(w, "layer.tar")
with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as t:
    t.add(os.path.join(w, "rootfs", "data"), arcname="data")
def blob(path=None, data=None):
    h = hashlib.sha256()
    if data is None:
        with open(path, "rb") as f:
            for b in iter(lambda: f.read(1 << 20), b""): h.update(b)
        size = os.path.getsize(path); d = h.hexdigest(); os.rename(path, os.path.join(blobs, d))
    else:
        h.update(data); size = len(data); d = h.hexdigest()
        open(os.path.join(blobs, d), "wb").write(data)
    return "sha256:" + d, size
layer, lsize = blob(tar_path)
config = {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer]}, "config": {}}
cdig, csize = blob(data=json.dumps(config).encode())
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdig, "size": csize},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": lsize}]}
mdig, msize = blob(data=json.dumps(manifest).encode())
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdig, "size": msize,
           "annotations": {"org.opencontainers.image.ref.name": "docker.io/library/warm:1"}}]}, open(os.path.join(layout, "index.json"), "w"))
json.dump({"imageLayoutVersion": "1.0.0"}, open(os.path.join(layout, "oci-layout"), "w"))
PY
"$STRATA" --root "$W/store" image import "$W/layout" >/dev/null
"$STRATA" --root "$W/store" convert docker.io/library/warm:1 docker.io/library/warm:esgz >/dev/null
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
printf 'version: 0.1\nlog: {level: warn}\nstorage: {filesystem: {rootdirectory: %s}}\nhttp: {addr: 127.0.0.1:%s}\n' "$W/registry" "$PORT" >"$W/registry.yml"
docker-registry serve "$W/registry.yml" >"$W/registry.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done
"$STRATA" --root "$W/store" push --plain-http "127.0.0.1:$PORT/warm:esgz" docker.io/library/warm:esgz >/dev/null

# Seconds to read FILE from disk (page cache dropped first).
read_secs() {
    sync; echo 3 >/proc/sys/vm/drop_caches
    local t0 t1; t0=$(date +%s.%N); dd if="$1" of=/dev/null bs=1M status=none; t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc
}
mount_lazy() { # NAME [--passthrough]
    mkdir -p "$W/$1"
    "$STRATA" --root "$W/root" mount --lazy --plain-http --cache-max-size $((4 << 30)) ${2:-} "127.0.0.1:$PORT/warm:esgz" "$W/$1" 2>"$W/$1.log" &
    PIDS+=($!)
    for _ in $(seq 600); do mountpoint -q "$W/$1" && return 0; sleep 0.05; done
    log "no mount: $(cat "$W/$1.log")"; exit 1
}
mount_lazy fuse
mount_lazy passthrough --passthrough
log "filling the chunk cache (one untimed read)"
dd if="$W/fuse/data/big.bin" of=/dev/null bs=1M status=none
# The first open with every chunk cached assembles the passthrough backing file.
head -c 1 "$W/passthrough/data/big.bin" >/dev/null
cmp "$W/passthrough/data/big.bin" "$W/rootfs/data/big.bin" && log "contents equal"
: >"$W/results"
for i in $(seq "$RUNS"); do
    for way in host passthrough fuse; do
        case $way in host) f=$W/rootfs/data/big.bin ;; *) f=$W/$way/data/big.bin ;; esac
        s=$(read_secs "$f")
        echo "$way $s" >>"$W/results"
        log "run $i $way: $s s"
    done
done
BYTES=$(stat -c %s "$W/rootfs/data/big.bin")
/usr/bin/python3 - "$W/results" "$BYTES" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
size = int(sys.argv[2])
med = {}
print(f"\nwarm sequential read of a {size / 2**30:.2f} GiB file, page cache dropped before each read\n")
print("| read | median | min–max | throughput |")
print("|---|---|---|---|")
for way in ("host", "passthrough", "fuse"):
    t = [float(r[1]) for r in rows if r[0] == way]
    med[way] = statistics.median(t)
    print(f"| {way} | {med[way]:.2f} s | {min(t):.2f}–{max(t):.2f} s | {size / med[way] / 1e6:.0f} MB/s |")
print(f"\npassthrough / host throughput: {med['host'] / med['passthrough']:.2f}x; fuse / host: {med['host'] / med['fuse']:.2f}x")
PY
