#!/usr/bin/env bash
# build-stargz-grpc.sh [OUTDIR] — builds the reference stargz snapshotter daemon
# (stargz-grpc/main.go next to this script: stargz-snapshotter 0.12 as a containerd proxy
# plugin) into OUTDIR/stargz-grpc and prints the binary's absolute path as the last line
# on stdout (progress on stderr):
#
#   STARGZ_GRPC=$(benches/reference/build-stargz-grpc.sh | tail -1)
#
# OUTDIR defaults to target/reference/ of this checkout. Go and the sources come from
# Debian 12's packages (golang-go, golang-github-containerd-stargz-snapshotter-dev and
# golang-github-containerd-containerd-dev; installed with apt-get when missing, as
# scripts/setup.sh does): GOPATH mode against /usr/share/gocode, no module downloads.
# Rebuilds only when main.go, this script, the Go toolchain or those packages changed
# (a stamp next to the binary records them); ~30 s cold on 2 cores, instant when current.
set -euo pipefail

me=build-stargz-grpc.sh
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
SRC=$HERE/stargz-grpc
OUTDIR=${1:-$REPO/target/reference}
GO=/usr/bin/go
GOPATH_DEB=/usr/share/gocode
PKGS=(golang-go golang-github-containerd-stargz-snapshotter-dev golang-github-containerd-containerd-dev)

say() { echo "$me: $*" >&2; }
die() { say "$*"; exit 1; }

[ -f "$SRC/main.go" ] || die "$SRC/main.go not found"
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
missing=()
for p in "${PKGS[@]}"; do installed "$p" || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing ${missing[*]}: run scripts/setup.sh as root"
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt_install() { apt-get -o DPkg::Lock::Timeout=600 -q -y --no-install-recommends install "${missing[@]}" >&2; }
    apt_install || { apt-get -o DPkg::Lock::Timeout=600 -q update >&2; apt_install; }
fi
[ -x "$GO" ] || die "$GO missing (golang-go)"
[ -d "$GOPATH_DEB/src/github.com/containerd/stargz-snapshotter/fs" ] ||
    die "$GOPATH_DEB lacks stargz-snapshotter's sources (golang-github-containerd-stargz-snapshotter-dev)"

mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
BIN=$OUTDIR/stargz-grpc
# What the binary is built from: our sources, the toolchain, the Go packages' versions.
stamp=$({
    sha256sum "$SRC/main.go" "${BASH_SOURCE[0]}" | cut -d' ' -f1
    "$GO" version
    dpkg-query -W -f='${Package} ${Version}\n' "${PKGS[@]}"
} | sha256sum | cut -d' ' -f1)
if [ -x "$BIN" ] && [ "$(cat "$BIN.stamp" 2>/dev/null)" = "$stamp" ]; then
    echo "$BIN"
    exit 0
fi

# Go's build cache: the user's, else one under OUTDIR (HOME may be unset under test runners).
if [ -z "${GOCACHE:-}" ] && [ -z "${HOME:-}" ] && [ -z "${XDG_CACHE_HOME:-}" ]; then
    export GOCACHE=$OUTDIR/go-build-cache
fi
t0=$SECONDS
say "building $BIN ($("$GO" version | awk '{print $3}'), GOPATH=$GOPATH_DEB)"
tmp=$BIN.tmp.$$
trap 'rm -f "$tmp"' EXIT
(cd "$SRC" && GO111MODULE=off GOFLAGS= GOPATH=$GOPATH_DEB GOPROXY=off CGO_ENABLED=0 \
    "$GO" build -trimpath -o "$tmp" .)
mv -f "$tmp" "$BIN"
echo "$stamp" >"$BIN.stamp"
say "built in $((SECONDS - t0)) s"
echo "$BIN"
