//! Test support for registry clients: a real registry, a token-auth gateway
//! in front of it, and a fault-injecting proxy — all synchronous, std-only,
//! and listening on 127.0.0.1 only.
//!
//! * [`RegistryServer`] runs Debian's CNCF distribution registry
//!   (`/usr/bin/docker-registry`, 2.8) on a free loopback port with its
//!   storage in a temp dir, optionally behind htpasswd Basic auth, and can
//!   push images built by this crate ([`RegistryServer::push_layout`])
//!   without any client under test being involved.
//! * [`TokenAuthGateway`] puts the Docker/OCI Bearer token flow in front of
//!   a registry: 401 challenges with `WWW-Authenticate: Bearer realm=…`, a
//!   token endpoint on its own listener, expiring and revocable tokens.
//! * [`FaultProxy`] forwards to any upstream and injects faults by rule
//!   ([`FaultRule`]: error statuses, resets and truncation mid-body, flipped
//!   bytes, slow or delayed responses, ignored `Range`), logging every
//!   request ([`RequestRecord`]) so tests can count retries and refetches.
//! * [`ReferrersGateway`] adds the OCI referrers API, which distribution 2.8
//!   lacks, listing the manifests the registry stored by their `subject`.
//! * [`RawClient`] is a minimal HTTP/1.1 client to look at the wire directly.
//!
//! A typical stack for a client test is client → `FaultProxy` →
//! `TokenAuthGateway` → `RegistryServer`:
//!
//! ```no_run
//! use strata_testdata::registry::{
//!     Fault, FaultProxy, FaultRule, GatewayConfig, RegistryServer, TokenAuthGateway,
//! };
//! let registry = RegistryServer::start().unwrap();
//! let pushed = registry
//!     .push_layout("library/sample", "1.0", &strata_testdata::sample_image(1).into())
//!     .unwrap();
//! let gateway = TokenAuthGateway::start(registry.addr(), GatewayConfig::default()).unwrap();
//! let proxy = FaultProxy::start(gateway.addr()).unwrap();
//! let layer = &pushed.images[0].layers[0].digest;
//! proxy.set_faults(vec![FaultRule::new(Fault::Status(503)).path(layer).first(2)]);
//! // … point the client at proxy.host(), pull, then:
//! assert_eq!(proxy.requests().iter().filter(|r| r.status == 503).count(), 2);
//! ```
//!
//! Everything shuts down on drop: the registry process is killed and
//! waited for, proxy threads are joined. A server kept in a `static` is never
//! dropped, so its registry process would outlive the test binary; give each
//! test (or test module) its own.

mod client;
mod fault;
mod gateway;
mod http;
mod proxy;
mod push;
mod referrers;
mod server;

#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub use client::{RawClient, RawResponse, basic_auth, origin_form};
pub use fault::{Fault, FaultProxy, FaultRule, RequestRecord, Trigger};
pub use gateway::{AnonymousAccess, GatewayConfig, TokenAuthGateway, TokenRequest};
pub use referrers::ReferrersGateway;
pub use server::{DOCKER_REGISTRY, RegistryServer};

/// Errors of the registry harness.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The registry binary is not installed.
    #[error("{} not found: run scripts/setup.sh to install Debian's docker-registry", path.display())]
    RegistryMissing {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The registry did not answer `GET /v2/` in time.
    #[error("registry on {addr} did not answer GET /v2/ within {timeout:?}; log tail:\n{log_tail}")]
    StartTimeout {
        /// The address it should listen on.
        addr: String,
        /// How long we waited.
        timeout: Duration,
        /// The last lines of its log.
        log_tail: String,
    },
    /// The registry process exited while starting.
    #[error("registry exited while starting ({status}); log tail:\n{log_tail}")]
    Exited {
        /// Its exit status.
        status: String,
        /// The last lines of its log.
        log_tail: String,
    },
    /// An I/O operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The registry answered a harness request with an unexpected status.
    #[error("{method} {target} answered {status}: {body}")]
    Status {
        /// Request method.
        method: String,
        /// Request target.
        target: String,
        /// Status received.
        status: u16,
        /// Response body (lossy UTF-8).
        body: String,
    },
    /// The registry answered without a header the protocol requires.
    #[error("{0}")]
    Protocol(String),
    /// Building the image to push failed.
    #[error("building the image failed")]
    Fixture(#[from] crate::Error),
    /// Hashing an htpasswd password failed.
    #[error("bcrypt hashing failed")]
    Bcrypt(#[from] bcrypt::BcryptError),
}

/// Result alias of the registry harness.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}

/// `http://` URL of a loopback address.
fn url_of(addr: std::net::SocketAddr) -> String {
    format!("http://{addr}")
}
