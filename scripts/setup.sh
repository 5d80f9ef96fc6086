#!/usr/bin/env bash
# setup.sh — install everything Strata's build, tests, demo and benchmarks need on a
# fresh Debian 12 machine (as root). Idempotent and quiet when all is there already:
# it installs only what is missing and prints one line per thing it installs.
#
#   scripts/setup.sh            # everything
#   STRATA_SETUP_VERBOSE=1 …    # show apt's output
set -euo pipefail

me=setup.sh
say() { echo "$me: $*" >&2; }

# Real components the tests and benchmarks run against (see README.md):
#   containerd + runc       the container runtime Strata plugs into (ctr included)
#   docker-registry         CNCF distribution 2.8, a real registry on loopback
#   erofs-utils             mkfs.erofs / fsck.erofs, the EROFS reference
#   fuse3                   fusermount3 and the FUSE userspace reference
#   stargz-snapshotter      ctr-remote, the eStargz reference
#   umoci                   `umoci unpack`, the reference for a layer stack's file tree
#   iproute2, python3, curl network namespaces (benches/slow-link.sh), the bench image builder, probes
#   skopeo                  `skopeo copy` of a model artifact, a baseline of `strata-bench model`
#   golang-go, golang-github-containerd-stargz-snapshotter-dev
#                           Go + stargz-snapshotter's sources, to build the reference
#                           daemon benches/reference/stargz-grpc (hello-bench,
#                           tests/stargz_lazy_interop.rs)
#   protobuf-compiler, libprotobuf-dev
#                           protoc and the google/protobuf/*.proto it imports, to build
#                           proto/ (apt's protoc finds them only in libprotobuf-dev)
APT_PACKAGES=(
    ca-certificates curl python3 iproute2 xz-utils protobuf-compiler libprotobuf-dev
    containerd runc docker-registry erofs-utils fuse3 stargz-snapshotter umoci skopeo
    golang-go golang-github-containerd-stargz-snapshotter-dev golang-github-containerd-containerd-dev
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { say "run as root to install: ${missing[*]}"; exit 1; }
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    APT=(apt-get -o DPkg::Lock::Timeout=600 -q -y --no-install-recommends)
    out=/dev/null
    [ -n "${STRATA_SETUP_VERBOSE:-}" ] && out=/dev/stderr
    # Package lists may be missing or stale on a fresh machine: refresh once on failure.
    if ! "${APT[@]}" install "${missing[@]}" >"$out" 2>&1; then
        apt-get -o DPkg::Lock::Timeout=600 -q update >"$out" 2>&1
        "${APT[@]}" install "${missing[@]}" >"$out" 2>&1 || {
            say "apt-get install failed; rerun with STRATA_SETUP_VERBOSE=1 to see why"; exit 1; }
    fi
    # Debian's containerd unit may start a system-wide daemon; Strata's tests run their own.
fi

# The Rust toolchain comes with the machine; cargo-nextest runs the test suite.
command -v cargo >/dev/null || { say "cargo not found: install Rust (rustup) first"; exit 1; }
# `make lint` (part of `make test`) needs rustfmt and clippy.
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        command -v rustup >/dev/null || { say "cargo $component not found and no rustup to add it"; exit 1; }
        say "adding the $component component"
        rustup component add "$component" >/dev/null
    fi
done
if ! command -v cargo-nextest >/dev/null && ! cargo nextest --version >/dev/null 2>&1; then
    say "installing cargo-nextest"
    cargo install --locked --quiet cargo-nextest
fi
exit 0
