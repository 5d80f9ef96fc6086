//! The OCI distribution client: resolve, fetch, and push against registries, with
//! containerd's host configuration (`hosts.toml` mirrors) and docker's credentials.
//!
//! - [`Reference`]: image references, parsed and normalised as docker does
//!   (`alpine` → `docker.io/library/alpine:latest`).
//! - [`hosts`]: which hosts serve a registry (mirrors, then the server), read from
//!   containerd's `hosts.toml` layout, and ctr's `--plain-http`.
//! - [`credentials`]: credentials from docker's `config.json` and credential helpers.
//! - [`auth`]: `WWW-Authenticate` challenges, the Bearer token flow and Basic, with a
//!   token cache that refreshes expired or rejected tokens.
//! - [`RegistryClient`]: the HTTP core (host fallback, TLS clients and connection reuse,
//!   authentication, retries with backoff, redirects that keep `Range`), and the
//!   operations: [`resolve`](RegistryClient::resolve),
//!   [`fetch_manifest`](RegistryClient::fetch_manifest),
//!   [`fetch_blob`](RegistryClient::fetch_blob), [`blob_size`](RegistryClient::blob_size),
//!   [`mount_blob`](RegistryClient::mount_blob), [`push_blob`](RegistryClient::push_blob),
//!   [`push_manifest`](RegistryClient::push_manifest), and OCI referrers:
//!   [`referrers`](RegistryClient::referrers), [`push_referrer`](RegistryClient::push_referrer)
//!   (the referrers API, or the tag-schema fallback where a registry lacks it).
//! - [`RegistryError`]: the module's typed error, with [`RegistryError::kind`].
//!
//! The client is async (tokio); everything else here is synchronous.

pub mod auth;
mod challenge;
mod client;
pub mod credentials;
mod error;
mod fetch;
pub mod hosts;
pub mod range;
mod reference;
mod referrers;
mod response;
mod upload;

pub use auth::{Challenge, Scope, parse_challenges};
pub use client::{ClientOptions, RegistryClient};
pub use credentials::{Credential, DockerConfig};
pub use error::RegistryError;
pub(crate) use fetch::sniff_media_type;
pub use fetch::{
    ContentRange, MANIFEST_ACCEPT, MAX_MANIFEST_SIZE, check_range, is_partial, parse_content_range,
};
pub use hosts::{Capabilities, Capability, HostsConfig, RegistryHost};
pub use range::{
    HttpRangeFetcher, RangeError, RangeFetcher, RangeHosts, RangeOptions, RangePolicy, RangeReader,
    RangeStats, ReaderOptions,
};
pub use reference::{DEFAULT_TAG, DOCKER_HUB, DOCKER_HUB_API_HOST, Reference, api_host};
pub use referrers::{ReferrerPush, ReferrersSource, fallback_tag};
