//! Generates the tonic client and server for containerd's snapshots.v1 API, and the client
//! for the Kubernetes CRI (runtime.v1), from the `.proto` files under `proto/`, with the
//! system `protoc` (Debian's protobuf-compiler; `PROTOC` overrides the path). Well-known
//! types map to `prost-types`.

use std::error::Error;

const ROOT: &str = "proto";
const CONTAINERD: [&str; 2] = [
    "proto/containerd/types/mount.proto",
    "proto/containerd/services/snapshots/v1/snapshots.proto",
];
const CRI: [&str; 1] = ["proto/cri/runtime/v1/api.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={ROOT}");
    println!("cargo:rerun-if-env-changed=PROTOC");
    let hint = "(needs protoc and google/protobuf/*.proto: apt-get install protobuf-compiler \
                libprotobuf-dev, or scripts/setup.sh)";
    tonic_prost_build::configure()
        // One file that nests every package as Rust modules, so cross-package
        // references (snapshots -> types) resolve.
        .include_file("containerd.rs")
        .compile_protos(&CONTAINERD, &[ROOT])
        .map_err(|e| format!("compiling containerd's snapshots.v1 protos: {e} {hint}"))?;
    // Strata is a CRI client (tests, benchmarks), never a CRI server.
    tonic_prost_build::configure()
        .build_server(false)
        .include_file("cri.rs")
        .compile_protos(&CRI, &[ROOT])
        .map_err(|e| format!("compiling the CRI runtime.v1 proto: {e} {hint}"))?;
    Ok(())
}
