//! Generates the tonic client and server for containerd's snapshots.v1 API from the
//! `.proto` files under `proto/`, with the system `protoc` (Debian's protobuf-compiler;
//! `PROTOC` overrides the path). Well-known types map to `prost-types`.

use std::error::Error;

const ROOT: &str = "proto";
const FILES: [&str; 2] = [
    "proto/containerd/types/mount.proto",
    "proto/containerd/services/snapshots/v1/snapshots.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={ROOT}");
    println!("cargo:rerun-if-env-changed=PROTOC");
    tonic_prost_build::configure()
        // One file that nests every package as Rust modules, so cross-package
        // references (snapshots -> types) resolve.
        .include_file("containerd.rs")
        .compile_protos(&FILES, &[ROOT])
        .map_err(|e| {
            format!(
                "compiling containerd's snapshots.v1 protos: {e} \
                 (needs protoc and google/protobuf/*.proto: apt-get install protobuf-compiler \
                 libprotobuf-dev, or scripts/setup.sh)"
            )
        })?;
    Ok(())
}
