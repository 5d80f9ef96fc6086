//! Tests of the registry harness against the real registry: each test
//! starts its own `docker-registry` (about 0.1 s) and its own proxies.

mod faults;
mod gateway;
mod server;
mod upstream;

use std::net::SocketAddr;

use super::{RawClient, RegistryServer};
use crate::layout::RefSummary;
use crate::sample_image;

/// The `Accept` header a client sends for manifests and indexes.
const ACCEPT_MANIFESTS: &str =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

/// A registry holding `sample_image(1)` as `test/sample:1.0`.
fn registry_with_sample() -> (RegistryServer, RefSummary) {
    let registry = RegistryServer::start().unwrap();
    let pushed = registry
        .push_layout("test/sample", "1.0", &sample_image(1).into())
        .unwrap();
    (registry, pushed)
}

/// `GET /v2/test/sample/blobs/<digest>` through `addr`; returns status and body.
fn get_blob(addr: SocketAddr, digest: &str, headers: &[(&str, &str)]) -> (u16, Vec<u8>) {
    let response = RawClient::new(addr)
        .get(&format!("/v2/test/sample/blobs/{digest}"), headers)
        .unwrap();
    (response.status, response.body)
}

/// Whether process `pid` is still alive (and not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')))
}
