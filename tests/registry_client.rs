//! The registry client against a real registry (Debian's `docker-registry`, distribution
//! 2.8, on loopback), through the `strata-testdata` harness: plain HTTP, htpasswd Basic
//! auth with credentials from a docker `config.json`, the Bearer token flow (warm-up,
//! revoked and expiring tokens), mirrors from `hosts.toml`, retries, and cross-host
//! redirects that keep `Range` and drop `Authorization`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use strata::registry::{
    ClientOptions, Reference, RegistryClient, RegistryError, check_range, is_partial,
};
use strata_formats::Digest;
use strata_testdata::registry::{
    Fault, FaultProxy, FaultRule, GatewayConfig, RegistryServer, TokenAuthGateway,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn opts(dir: &Path) -> ClientOptions {
    // Never the developer's own ~/.docker/config.json.
    ClientOptions {
        docker_config: Some(dir.join("no-config.json")),
        plain_http: true,
        ..ClientOptions::default()
    }
}

fn client(o: ClientOptions) -> RegistryClient {
    RegistryClient::new(o).unwrap()
}

fn reference(s: &str) -> Reference {
    s.parse().unwrap()
}

fn digest(s: &str) -> Digest {
    s.parse().unwrap()
}

/// A docker config with Basic credentials for `host`.
fn docker_config(dir: &Path, host: &str, user: &str, password: &str) -> std::path::PathBuf {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let path = dir.join(format!("config-{user}.json"));
    std::fs::write(
        &path,
        format!(r#"{{"auths":{{"{host}":{{"auth":"{auth}"}}}}}}"#),
    )
    .unwrap();
    path
}

async fn body(resp: reqwest::Response) -> Vec<u8> {
    resp.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_and_push_over_plain_http() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = RegistryServer::start().unwrap();
    let pushed = registry
        .push_layout(
            "library/sample",
            "1.0",
            &strata_testdata::sample_image(1).into(),
        )
        .unwrap();
    let image = &pushed.images[0];
    let c = client(opts(tmp.path()));
    let host = registry.host();
    let r = reference(&format!("{host}/library/sample:1.0"));

    // Resolve by tag and by digest; fetch the manifest.
    let desc = c.resolve(&r).await.unwrap();
    assert_eq!(desc.digest().to_string(), pushed.target.digest);
    assert_eq!(desc.size(), pushed.target.size);
    assert_eq!(desc.media_type().to_string(), pushed.target.media_type);
    let by_digest = r.with_digest(digest(&pushed.target.digest));
    assert_eq!(c.resolve(&by_digest).await.unwrap(), desc);
    let manifest = c.fetch_manifest(&r, &desc).await.unwrap();
    assert_eq!(Digest::of(&manifest).to_string(), pushed.target.digest);

    // Blobs: whole, a range, sizes, missing ones.
    let layer = &image.layers[0];
    let layer_digest = digest(&layer.digest);
    let whole = c.fetch_blob(&r, &layer_digest, None).await.unwrap();
    assert_eq!(whole.status(), 200);
    let whole = body(whole).await;
    assert_eq!(Digest::of(&whole), layer_digest);
    let range = 10..(layer.size.min(110));
    let part = c
        .fetch_blob(&r, &layer_digest, Some(range.clone()))
        .await
        .unwrap();
    assert!(is_partial(&part));
    let cr = check_range(&part, &range).unwrap();
    assert_eq!(
        (cr.start, cr.end, cr.total),
        (range.start, range.end, Some(layer.size))
    );
    assert_eq!(
        body(part).await,
        whole[range.start as usize..range.end as usize]
    );
    assert_eq!(
        c.blob_size(&r, &layer_digest).await.unwrap(),
        Some(layer.size)
    );
    let absent = Digest::of(b"not in the registry");
    assert_eq!(c.blob_size(&r, &absent).await.unwrap(), None);
    let e = c.fetch_blob(&r, &absent, None).await.unwrap_err();
    assert!(matches!(e, RegistryError::NotFound { .. }), "{e}");
    assert!(
        e.to_string().contains(&format!("blob {absent}")) && e.to_string().contains(&host),
        "{e}"
    );
    let e = c
        .resolve(&reference(&format!("{host}/library/sample:nope")))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("manifest nope not found in {host}/library/sample")),
        "{e}"
    );
    let e = c
        .resolve(&by_digest.with_digest(absent.clone()))
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::NotFound { .. }), "{e}");

    // Push a copy into another repository: mount the layers and config, push a new blob
    // from a stream, then the manifest by tag; it resolves to the same digest.
    let copy = reference(&format!("{host}/team/copy:v1"));
    for b in image.layers.iter().chain([&image.config]) {
        assert!(
            c.mount_blob(&copy, &digest(&b.digest), &r).await.unwrap(),
            "mount {}",
            b.digest
        );
    }
    assert!(
        !c.mount_blob(&copy, &absent, &r).await.unwrap(),
        "nothing to mount"
    );
    let elsewhere = reference("other.example/library/sample:1.0");
    assert!(
        !c.mount_blob(&copy, &layer_digest, &elsewhere)
            .await
            .unwrap(),
        "no cross-registry mounts"
    );
    let data = Bytes::from(vec![7u8; 300_000]);
    let data_digest = Digest::of(&data);
    let chunks: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(65536)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let stream = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    c.push_blob(&copy, &data_digest, data.len() as u64, stream)
        .await
        .unwrap();
    assert_eq!(
        c.blob_size(&copy, &data_digest).await.unwrap(),
        Some(data.len() as u64)
    );
    let pushed_digest = c
        .push_manifest(&copy, &pushed.target.media_type, manifest.clone())
        .await
        .unwrap();
    assert_eq!(pushed_digest.to_string(), pushed.target.digest);
    assert_eq!(
        c.resolve(&copy).await.unwrap().digest().to_string(),
        pushed.target.digest
    );
    let by_digest_only = reference(&format!("{host}/team/bydigest@{}", pushed.target.digest));
    for b in image.layers.iter().chain([&image.config]) {
        c.mount_blob(&by_digest_only, &digest(&b.digest), &r)
            .await
            .unwrap();
    }
    c.push_manifest(&by_digest_only, &pushed.target.media_type, manifest.clone())
        .await
        .unwrap();
    let e = c
        .push_manifest(&by_digest_only.with_digest(absent.clone()), "x/y", manifest)
        .await
        .unwrap_err();
    assert!(matches!(e, RegistryError::DigestMismatch { .. }), "{e}");
    // A wrong digest is refused by the registry.
    let e = c
        .push_blob(&copy, &absent, 3, Bytes::from_static(b"abc"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("DIGEST_INVALID"), "{e}");

    // Chunked upload.
    let chunked = client(ClientOptions {
        push_chunk_size: Some(1000),
        ..opts(tmp.path())
    });
    let data = Bytes::from((0..2500u32).map(|i| i as u8).collect::<Vec<_>>());
    let d = Digest::of(&data);
    chunked
        .push_blob(&copy, &d, data.len() as u64, data.clone())
        .await
        .unwrap();
    assert_eq!(
        body(c.fetch_blob(&copy, &d, None).await.unwrap()).await,
        data
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_registry_falls_back_to_http_without_plain_http() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = RegistryServer::start().unwrap();
    let pushed = registry
        .push_layout(
            "library/sample",
            "1.0",
            &strata_testdata::sample_image(3).into(),
        )
        .unwrap();
    let c = client(ClientOptions {
        plain_http: false,
        ..opts(tmp.path())
    });
    let hosts = c.hosts(&registry.host()).unwrap();
    assert_eq!(
        hosts.iter().map(|h| h.scheme.as_str()).collect::<Vec<_>>(),
        ["https", "http"]
    );
    let r = reference(&format!("{}/library/sample:1.0", registry.host()));
    assert_eq!(
        c.resolve(&r).await.unwrap().digest().to_string(),
        pushed.target.digest
    );
    let copy = reference(&format!("{}/team/fallback:1", registry.host()));
    let data = Bytes::from_static(b"pushed over the http fallback");
    c.push_blob(&copy, &Digest::of(&data), data.len() as u64, data.clone())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_with_docker_config() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = RegistryServer::start_with_users(&[("alice", "s3cret")]).unwrap();
    let pushed = registry
        .push_layout(
            "library/sample",
            "1.0",
            &strata_testdata::sample_image(2).into(),
        )
        .unwrap();
    let host = registry.host();
    let r = reference(&format!("{host}/library/sample:1.0"));

    let good = docker_config(tmp.path(), &host, "alice", "s3cret");
    let c = client(ClientOptions {
        docker_config: Some(good),
        ..opts(tmp.path())
    });
    c.warm(&r).await.unwrap();
    let desc = c.resolve(&r).await.unwrap();
    assert_eq!(desc.digest().to_string(), pushed.target.digest);
    let layer = &pushed.images[0].layers[0];
    let blob = body(
        c.fetch_blob(&r, &digest(&layer.digest), None)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(Digest::of(&blob).to_string(), layer.digest);
    let data = Bytes::from_static(b"basic-auth push");
    c.push_blob(
        &reference(&format!("{host}/team/app:1")),
        &Digest::of(&data),
        data.len() as u64,
        data,
    )
    .await
    .unwrap();

    let anonymous = client(opts(tmp.path()));
    match anonymous.resolve(&r).await.unwrap_err() {
        RegistryError::Unauthorized {
            host: h,
            credentials,
            ..
        } => {
            assert_eq!(h, host);
            assert!(!credentials);
        }
        e => panic!("expected Unauthorized, got {e}"),
    }
    let e = anonymous.resolve(&r).await.unwrap_err().to_string();
    assert!(
        e.contains(&host) && e.contains("no credentials found"),
        "{e}"
    );

    let bad = docker_config(tmp.path(), &host, "alice", "wrong");
    let e = client(ClientOptions {
        docker_config: Some(bad),
        ..opts(tmp.path())
    })
    .resolve(&r)
    .await
    .unwrap_err();
    assert!(
        matches!(
            e,
            RegistryError::Unauthorized {
                credentials: true,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("credentials were sent and rejected"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_are_cached_refreshed_and_scoped() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = RegistryServer::start().unwrap();
    let pushed = registry
        .push_layout(
            "library/sample",
            "1.0",
            &strata_testdata::sample_image(4).into(),
        )
        .unwrap();
    let gateway =
        TokenAuthGateway::start(registry.addr(), GatewayConfig::default().user("bob", "pw"))
            .unwrap();
    let host = gateway.host();
    let r = reference(&format!("{host}/library/sample:1.0"));
    let c = client(opts(tmp.path()));

    // One token for the warm-up, reused by a concurrent burst.
    c.warm(&r).await.unwrap();
    assert_eq!(gateway.tokens_issued(), 1);
    let image = &pushed.images[0];
    let fetches = image.layers.iter().chain([&image.config]).map(|b| {
        let (c, r) = (c.clone(), r.clone());
        let d = digest(&b.digest);
        async move { body(c.fetch_blob(&r, &d, None).await.unwrap()).await.len() as u64 }
    });
    let sizes = futures_util::future::join_all(fetches).await;
    assert_eq!(
        sizes,
        image
            .layers
            .iter()
            .chain([&image.config])
            .map(|b| b.size)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        gateway.tokens_issued(),
        1,
        "the burst reused the warm-up token"
    );

    // A revoked token is rejected with 401: dropped, refetched, and the request succeeds.
    gateway.revoke_all();
    let d = digest(&image.layers[0].digest);
    assert_eq!(
        c.blob_size(&r, &d).await.unwrap(),
        Some(image.layers[0].size)
    );
    assert_eq!(gateway.tokens_issued(), 2);

    // A token that expires is replaced before use, without a 401.
    gateway.set_token_lifetime(Duration::from_secs(1));
    gateway.revoke_all();
    c.blob_size(&r, &d).await.unwrap();
    let (issued, challenges) = (gateway.tokens_issued(), gateway.challenges_sent());
    tokio::time::sleep(Duration::from_millis(1200)).await;
    c.blob_size(&r, &d).await.unwrap();
    assert_eq!(gateway.tokens_issued(), issued + 1);
    assert_eq!(
        gateway.challenges_sent(),
        challenges,
        "the expired token was not sent"
    );

    // Anonymous tokens only pull: a push is Unauthorized. With bob's credentials it works.
    let target = reference(&format!("{host}/team/app:1"));
    let data = Bytes::from_static(b"token push");
    let e = c
        .push_blob(&target, &Digest::of(&data), data.len() as u64, data.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            RegistryError::Unauthorized {
                credentials: false,
                ..
            }
        ),
        "{e}"
    );
    let bob = client(ClientOptions {
        docker_config: Some(docker_config(tmp.path(), &host, "bob", "pw")),
        ..opts(tmp.path())
    });
    bob.push_blob(&target, &Digest::of(&data), data.len() as u64, data)
        .await
        .unwrap();
    let desc = bob.resolve(&r).await.unwrap();
    let manifest = bob.fetch_manifest(&r, &desc).await.unwrap();
    for b in image.layers.iter().chain([&image.config]) {
        assert!(
            bob.mount_blob(&target, &digest(&b.digest), &r)
                .await
                .unwrap()
        );
    }
    bob.push_manifest(&target, desc.media_type().as_ref(), manifest)
        .await
        .unwrap();
    // An identity token goes to the OAuth2 POST endpoint; this gateway answers 405 there,
    // so the GET flow follows.
    let path = tmp.path().join("config-token.json");
    std::fs::write(
        &path,
        format!(r#"{{"auths":{{"{host}":{{"identitytoken":"refresh-me"}}}}}}"#),
    )
    .unwrap();
    let with_token = client(ClientOptions {
        docker_config: Some(path),
        ..opts(tmp.path())
    });
    assert_eq!(
        with_token.resolve(&r).await.unwrap().digest().to_string(),
        pushed.target.digest
    );

    let requests = gateway.token_requests();
    assert!(
        requests
            .iter()
            .any(|t| t.user.as_deref() == Some("bob") && t.granted)
    );
    assert!(
        requests.iter().any(|t| t
            .scopes
            .iter()
            .any(|s| s == "repository:library/sample:pull")
            && t.scopes
                .iter()
                .any(|s| s == "repository:team/app:pull,push")),
        "a mount asks for both repositories: {requests:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_retries_and_host_fallback() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = RegistryServer::start().unwrap();
    let pushed = registry
        .push_layout(
            "library/sample",
            "1.0",
            &strata_testdata::sample_image(5).into(),
        )
        .unwrap();
    let failing = FaultProxy::start(registry.addr()).unwrap();
    failing.set_faults(vec![FaultRule::new(Fault::Status(503))]);
    let mirror = FaultProxy::start(registry.addr()).unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let host = registry.host();
    let dir = tmp.path().join("certs.d").join(&host);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("hosts.toml"),
        format!(
            "server = \"http://{host}\"\n\
             [host.\"http://{dead}\"]\n  capabilities = [\"pull\", \"resolve\"]\n\
             [host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n\
             [host.\"http://{}\"]\n  capabilities = [\"pull\"]\n",
            failing.host(),
            mirror.host()
        ),
    )
    .unwrap();
    let c = client(ClientOptions {
        hosts_dir: Some(tmp.path().join("certs.d")),
        max_attempts: 2,
        ..opts(tmp.path())
    });
    let r = reference(&format!("{host}/library/sample:1.0"));

    // Resolve: dead, then failing (503 twice), then the mirror lacks `resolve`: the server.
    assert_eq!(
        c.resolve(&r).await.unwrap().digest().to_string(),
        pushed.target.digest
    );
    assert_eq!(
        failing
            .requests()
            .iter()
            .filter(|q| q.status == 503)
            .count(),
        2,
        "two attempts"
    );
    assert!(mirror.requests().is_empty());
    // Pull: the mirror serves it.
    let layer = &pushed.images[0].layers[0];
    let blob = body(
        c.fetch_blob(&r, &digest(&layer.digest), None)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(Digest::of(&blob).to_string(), layer.digest);
    assert_eq!(mirror.requests().len(), 1);
    // A digest reference resolves on pull hosts too: the mirror answers it.
    c.resolve(&r.with_digest(digest(&pushed.target.digest)))
        .await
        .unwrap();
    assert_eq!(mirror.requests().len(), 2);
    // Not found anywhere: the server's 404.
    let e = c.blob_size(&r, &Digest::of(b"absent")).await.unwrap();
    assert_eq!(e, None);
    // Push skips the pull-only mirrors.
    let data = Bytes::from_static(b"to the server");
    c.push_blob(
        &reference(&format!("{host}/team/x:1")),
        &Digest::of(&data),
        data.len() as u64,
        data,
    )
    .await
    .unwrap();

    // Retries: two 503s on a blob, then success, through one proxy.
    let proxy = FaultProxy::start(registry.addr()).unwrap();
    proxy.set_faults(vec![
        FaultRule::new(Fault::Status(503))
            .path(&layer.digest)
            .first(2),
    ]);
    let c = client(opts(tmp.path()));
    let r = reference(&format!("{}/library/sample:1.0", proxy.host()));
    let blob = body(
        c.fetch_blob(&r, &digest(&layer.digest), None)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(Digest::of(&blob).to_string(), layer.digest);
    let statuses: Vec<u16> = proxy.requests().iter().map(|q| q.status).collect();
    assert_eq!(statuses, [503, 503, 200]);
    // A server that ignores Range is reported as such.
    proxy.set_faults(vec![FaultRule::new(Fault::IgnoreRange)]);
    let resp = c
        .fetch_blob(&r, &digest(&layer.digest), Some(0..10))
        .await
        .unwrap();
    assert!(matches!(
        check_range(&resp, &(0..10)),
        Err(RegistryError::RangeNotSupported { .. })
    ));
}

/// One request as a [`MiniServer`] saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HashMap<String, String>,
}

type Handler = Arc<dyn Fn(&Seen) -> (u16, Vec<(String, String)>, Vec<u8>) + Send + Sync>;

/// A tiny HTTP/1.1 server (keep-alive, no request bodies) that records requests.
struct MiniServer {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl MiniServer {
    async fn start(handler: Handler) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (handler, log) = (handler.clone(), log.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                            let mut chunk = [0u8; 4096];
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            continue;
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let mut lines = head.split("\r\n");
                        let path = lines
                            .next()
                            .unwrap_or_default()
                            .split(' ')
                            .nth(1)
                            .unwrap_or_default()
                            .to_owned();
                        let headers = lines
                            .filter_map(|l| l.split_once(':'))
                            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
                            .collect();
                        let req = Seen { path, headers };
                        log.lock().unwrap().push(req.clone());
                        let (status, headers, body) = handler(&req);
                        let mut out =
                            format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
                        for (k, v) in headers {
                            out.push_str(&format!("{k}: {v}\r\n"));
                        }
                        out.push_str("\r\n");
                        let mut bytes = out.into_bytes();
                        bytes.extend(body);
                        if sock.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Self { addr, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_keep_range_and_drop_authorization() {
    let tmp = tempfile::tempdir().unwrap();
    let blob: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
    let d = Digest::of(&blob);
    // "Object storage": serves the blob with Range support.
    let storage = {
        let blob = blob.clone();
        MiniServer::start(Arc::new(move |req: &Seen| {
            let Some((a, b)) = req
                .headers
                .get("range")
                .and_then(|r| r.strip_prefix("bytes=")?.split_once('-'))
            else {
                return (200, vec![], blob.clone());
            };
            let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
            let cr = format!("bytes {a}-{b}/{}", blob.len());
            (
                206,
                vec![("content-range".into(), cr)],
                blob[a..=b].to_vec(),
            )
        }))
        .await
    };
    // "Registry": Basic auth, then a redirect to storage with a signed-looking URL.
    let storage_addr = storage.addr;
    let front = MiniServer::start(Arc::new(move |req: &Seen| {
        if !req.headers.contains_key("authorization") {
            return (
                401,
                vec![("www-authenticate".into(), "Basic realm=\"front\"".into())],
                vec![],
            );
        }
        (
            307,
            vec![(
                "location".into(),
                format!("http://{storage_addr}/bucket/blob?X-Signature=abc"),
            )],
            vec![],
        )
    }))
    .await;
    let host = front.addr.to_string();
    let config = docker_config(tmp.path(), &host, "carol", "pw");
    let c = client(ClientOptions {
        docker_config: Some(config),
        ..opts(tmp.path())
    });
    let r = reference(&format!("{host}/team/app:1"));

    let resp = c.fetch_blob(&r, &d, Some(100..200)).await.unwrap();
    assert_eq!(check_range(&resp, &(100..200)).unwrap().start, 100);
    assert_eq!(body(resp).await, blob[100..200]);
    let resp = c.fetch_blob(&r, &d, None).await.unwrap();
    assert_eq!(body(resp).await, blob);

    let front_seen = front.seen();
    assert!(
        !front_seen[0].headers.contains_key("authorization"),
        "first request is anonymous"
    );
    assert_eq!(
        front_seen[1]
            .headers
            .get("authorization")
            .map(String::as_str),
        Some("Basic Y2Fyb2w6cHc=")
    );
    assert_eq!(
        front_seen[1].headers.get("range").map(String::as_str),
        Some("bytes=100-199")
    );
    assert_eq!(front_seen[1].path, format!("/v2/team/app/blobs/{d}"));
    let storage_seen = storage.seen();
    assert_eq!(storage_seen.len(), 2);
    assert_eq!(
        storage_seen[0].headers.get("range").map(String::as_str),
        Some("bytes=100-199"),
        "Range survives"
    );
    assert!(
        storage_seen
            .iter()
            .all(|s| !s.headers.contains_key("authorization")),
        "no credentials to storage"
    );
    assert_eq!(storage_seen[0].path, "/bucket/blob?X-Signature=abc");
}
