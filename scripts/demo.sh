#!/usr/bin/env bash
# demo.sh BIN_DIR — Strata's showcase on an embedded default: generate a small
# multi-platform OCI image and a docker-save archive, import both into a fresh store
# under a temp root, show the store's contents, verify every blob, then remove an image
# and let garbage collection sweep exactly its content; push the image to a loopback
# registry and pull it back into a fresh store, which unpacks it into overlayfs snapshots;
# mount its rootfs read-write, write into it, and unmount; convert it to eStargz and mount
# it lazily from the registry, printing the bytes fetched; then run a python3 container
# through containerd and `strata serve` lazily, timed against containerd's full pull
# (one loopback round of benches/hello-bench.sh).
set -euo pipefail
BIN=${1:-target/release}
STRATA=$BIN/strata
GEN=$BIN/strata-testdata
[ -x "$STRATA" ] && [ -x "$GEN" ] || { echo "demo.sh: build first (make build)" >&2; exit 1; }

work=$(mktemp -d /tmp/strata-demo.XXXXXX)
reg_pid=
cleanup() { [ -n "${lazy_pid:-}" ] && kill -TERM "$lazy_pid" 2>/dev/null && wait "$lazy_pid" 2>/dev/null; umount -R "$work/rootfs" 2>/dev/null || true; [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
root=$work/root
s() { echo "+ strata $*" >&2; "$STRATA" --root "$root" "$@"; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. Generate a small multi-platform OCI image layout and a docker-save archive"
"$GEN" oci-layout "$work/sample-oci" --multi-platform --name docker.io/library/sample:1.0 | tail -1
"$GEN" docker-save "$work/tools.tar" --tag tools:2.1 --seed 7 | sed -n 1,2p

step "2. Import both into a fresh store at $root (every blob verified on the way in)"
s image import "$work/sample-oci"
s image import "$work/tools.tar"

step "3. The store: images and blobs"
s image ls
s content ls

step "4. Verify every blob: re-hash each and compare with its digest"
s content verify

step "5. Resumable ingest: a 512 MiB file, interrupted with SIGKILL, then resumed"
"$GEN" random "$work/big.bin" --size 512MiB --seed 3 --no-digest >/dev/null
"$STRATA" --root "$root" content ingest "$work/big.bin" >/dev/null & pid=$!
# Kill it as soon as some data has landed in its ingest directory.
for _ in $(seq 2000); do
    [ -n "$(find "$root/content/ingest" -name data -size +8M 2>/dev/null)" ] && break
    sleep 0.001
done
kill -KILL $pid 2>/dev/null || true; wait $pid 2>/dev/null || true
echo "killed the ingest (SIGKILL); what it left:"
s content active
s --log-level info content ingest "$work/big.bin"
echo "sha256sum says: sha256:$(sha256sum "$work/big.bin" | cut -d' ' -f1)"

step "6. Push to a registry (Debian's distribution, on loopback) and pull into a fresh store"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/registry.yml" <<YML
version: 0.1
log: {level: error}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 & reg_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.05; done
s push --plain-http "127.0.0.1:$port/demo/sample:1.0" docker.io/library/sample:1.0
"$STRATA" --root "$work/root2" pull --plain-http "127.0.0.1:$port/demo/sample:1.0"
"$STRATA" --root "$work/root2" image ls
"$STRATA" --root "$work/root2" content verify | tail -1

step "7. Remove the docker-save image and collect garbage: only its blobs go"
s image rm docker.io/library/tools:2.1
s content gc --ingest-grace 0s
s content ls -q | wc -l | sed 's/^/blobs left: /'
s content verify >/dev/null && echo "all remaining blobs verify"

step "8. The pulled image was unpacked into overlayfs snapshots; mount its rootfs read-write"
"$STRATA" --root "$work/root2" snapshot ls
mkdir -p "$work/rootfs"
"$STRATA" --root "$work/root2" mount "127.0.0.1:$port/demo/sample:1.0" "$work/rootfs"
ls "$work/rootfs"
echo "written in the mount, not in the image" >"$work/rootfs/etc/demo-note"
"$STRATA" --root "$work/root2" snapshot usage | tail -n +2 | sort -k2 -h | tail -3
"$STRATA" --root "$work/root2" umount "$work/rootfs"
"$STRATA" --root "$work/root2" snapshot ls --filter kind==active | tail -n +2 | wc -l | sed 's/^/active snapshots left: /'

step "9. Convert to eStargz, push, and mount it lazily from the registry (nothing downloaded up front)"
"$STRATA" --root "$work/root2" convert --plain-http --push "127.0.0.1:$port/demo/sample:1.0" "127.0.0.1:$port/demo/sample:1.0-esgz" >/dev/null
mkdir -p "$work/lazy"
"$STRATA" --root "$work/root3" mount --lazy --plain-http "127.0.0.1:$port/demo/sample:1.0-esgz" "$work/lazy" 2>"$work/lazy.log" & lazy_pid=$!
for _ in $(seq 200); do mountpoint -q "$work/lazy" && break; sleep 0.05; done
cat "$work/lazy.log"
echo "reading /etc/os-release through the lazy mount:"
cat "$work/lazy/etc/os-release" | sed -n 1,2p
kill -TERM $lazy_pid; wait $lazy_pid || true
lazy_pid=
cat "$work/lazy.log" | tail -2

step "10. Run a container lazily: containerd + strata serve (the stargz snapshotter) vs a full pull"
echo "A python3 image built from this host's Debian packages (~50 MB), converted to eStargz, on a loopback"
echo "registry; time from pull start to python3 -c 'print(\"hello\")' having exited, and bytes the registry sent:"
"$(dirname "$0")/../benches/hello-bench.sh" --runs 1 --link loopback --tools containerd,strata 2>&1 \
    | grep -v '^layer \|^blob \|^manifest \|^pushed \|^imported \|^converted \|^build-stargz' || true
