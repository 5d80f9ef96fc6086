//! [`FaultProxy`]: every fault seen from a raw client, plus keep-alive,
//! HEAD, chunked and close-delimited bodies, concurrency and large bodies.

use std::io::{self, Read as _, Write as _};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use super::server::{HashingSink, random_digest};
use super::{get_blob, registry_with_sample, upstream};
use crate::registry::{
    Fault, FaultProxy, FaultRule, GatewayConfig, RawClient, RegistryServer, TokenAuthGateway,
};

#[test]
fn status_faults_answer_without_upstream_and_keep_the_connection() {
    let (registry, pushed) = registry_with_sample();
    let proxy = FaultProxy::start(registry.addr()).unwrap();
    let layer = &pushed.images[0].layers[1];
    proxy.set_faults(vec![
        FaultRule::new(Fault::Status(503))
            .path(&layer.digest)
            .method("GET")
            .first(2),
        FaultRule::new(Fault::Status(429)).method("HEAD").first(1),
    ]);
    let mut client = RawClient::new(proxy.addr());
    let target = format!("/v2/test/sample/blobs/{}", layer.digest);
    let statuses: Vec<u16> = (0..3)
        .map(|_| client.get(&target, &[]).unwrap().status)
        .collect();
    assert_eq!(statuses, [503, 503, 200]);
    let head = client.request("HEAD", &target, &[], &[]).unwrap();
    assert_eq!((head.status, head.body.len()), (429, 0));
    let head = client.request("HEAD", &target, &[], &[]).unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(
        head.header("content-length"),
        Some(layer.size.to_string().as_str())
    );
    assert_eq!(client.connections_opened(), 1);

    let log = proxy.requests();
    assert_eq!(log.len(), 5);
    assert_eq!(log[0].faults, [Fault::Status(503)]);
    assert!(log[0].complete);
    assert_eq!(
        (log[2].status, log[2].bytes_sent, log[2].faults.len()),
        (200, layer.size, 0)
    );
    assert_eq!((log[3].method.as_str(), log[3].status), ("HEAD", 429));
    assert_eq!((log[4].status, log[4].bytes_sent), (200, 0));
    assert_eq!(log.iter().filter(|r| r.path == target).count(), 5);
}

#[test]
fn reset_and_truncate_cut_the_body() {
    let (registry, pushed) = registry_with_sample();
    let proxy = FaultProxy::start(registry.addr()).unwrap();
    let layer = &pushed.images[0].layers[0];
    let target = format!("/v2/test/sample/blobs/{}", layer.digest);
    for (fault, kind) in [
        (
            Fault::ResetMidBody { after_bytes: 1000 },
            io::ErrorKind::ConnectionReset,
        ),
        (
            Fault::TruncateBody { after_bytes: 1000 },
            io::ErrorKind::UnexpectedEof,
        ),
    ] {
        proxy.clear_requests();
        proxy.set_faults(vec![FaultRule::new(fault).blobs().first(1)]);
        let mut client = RawClient::new(proxy.addr());
        let mut received = Vec::new();
        let err = client
            .download("GET", &target, &[], &mut received)
            .unwrap_err();
        assert_eq!(err.kind(), kind, "{fault:?}: {err}");
        assert_eq!(received.len(), 1000, "{fault:?}");
        // The client reconnects and the next request is whole.
        let mut sink = HashingSink::default();
        client.download("GET", &target, &[], &mut sink).unwrap();
        assert_eq!(sink.finish(), (layer.digest.clone(), layer.size));
        assert_eq!(client.connections_opened(), 2);
        let log = proxy.requests();
        assert_eq!(
            (log[0].status, log[0].bytes_sent, log[0].complete),
            (200, 1000, false)
        );
        assert_eq!((log[1].bytes_sent, log[1].complete), (layer.size, true));
    }
}

#[test]
fn flipped_bytes_keep_length_and_break_the_digest() {
    let (registry, pushed) = registry_with_sample();
    let proxy = FaultProxy::start(registry.addr()).unwrap();
    let layer = &pushed.images[0].layers[0];
    let (_, clean) = get_blob(registry.addr(), &layer.digest, &[]);
    proxy.set_faults(vec![
        FaultRule::new(Fault::FlipBytes {
            offset_in_body: 70_000,
            count: 3,
        })
        .blobs(),
    ]);
    let (status, corrupt) = get_blob(proxy.addr(), &layer.digest, &[]);
    assert_eq!((status, corrupt.len()), (200, clean.len()));
    let differing: Vec<usize> = (0..clean.len())
        .filter(|&i| clean[i] != corrupt[i])
        .collect();
    assert_eq!(differing, [70_000, 70_001, 70_002]);
    assert_eq!(corrupt[70_000], clean[70_000] ^ 0xff);
    assert_ne!(crate::sha256_digest(&corrupt), layer.digest);
    // Offsets count from the start of this response's body: a 20-byte
    // range response has no byte 70 000 to flip.
    let (status, range) = get_blob(
        proxy.addr(),
        &layer.digest,
        &[("Range", "bytes=69990-70009")],
    );
    assert_eq!((status, range.as_slice()), (206, &clean[69_990..70_010]));
}

#[test]
fn ignore_range_returns_the_whole_body() {
    let (registry, pushed) = registry_with_sample();
    let proxy = FaultProxy::start(registry.addr()).unwrap();
    let layer = &pushed.images[0].layers[0];
    let range = [("Range", "bytes=0-99")];
    assert_eq!(get_blob(proxy.addr(), &layer.digest, &range).1.len(), 100);
    proxy.set_faults(vec![FaultRule::new(Fault::IgnoreRange).path(&layer.digest)]);
    let (status, body) = get_blob(proxy.addr(), &layer.digest, &range);
    assert_eq!((status, body.len() as u64), (200, layer.size));
    let log = proxy.requests();
    assert_eq!(log[1].range.as_deref(), Some("bytes=0-99"));
    assert_eq!(
        (log[1].status, log[1].faults.as_slice()),
        (200, &[Fault::IgnoreRange][..])
    );
}

#[test]
fn slow_and_delay_hold_the_response_back() {
    let registry = RegistryServer::start().unwrap();
    let blob = registry
        .push_blob("test/sample", &crate::random_bytes(100_000, 4))
        .unwrap();
    let proxy = FaultProxy::start(registry.addr()).unwrap();
    let timed = |fault| {
        proxy.set_faults(vec![FaultRule::new(fault)]);
        let start = Instant::now();
        let (status, body) = get_blob(proxy.addr(), &blob.digest, &[]);
        assert_eq!((status, body.len()), (200, 100_000));
        start.elapsed()
    };
    let slow = timed(Fault::Slow {
        bytes_per_sec: 400_000,
    });
    assert!(slow >= Duration::from_millis(230), "{slow:?}");
    let delayed = timed(Fault::Delay { ms: 300 });
    assert!(delayed >= Duration::from_millis(300), "{delayed:?}");
    proxy.clear_faults();
    assert!(timed(Fault::Delay { ms: 0 }) < Duration::from_millis(200));
}

#[test]
fn seeded_probability_is_reproducible() {
    let (registry, pushed) = registry_with_sample();
    let proxy = FaultProxy::start(registry.addr()).unwrap();
    let digest = &pushed.images[0].layers[2].digest;
    let run = || {
        proxy.set_faults(vec![
            FaultRule::new(Fault::Status(500)).probability(0.5, 42),
        ]);
        (0..24)
            .map(|_| get_blob(proxy.addr(), digest, &[]).0)
            .collect::<Vec<_>>()
    };
    let first = run();
    assert_eq!(first, run());
    let failures = first.iter().filter(|&&s| s == 500).count();
    assert!((4..=20).contains(&failures), "{first:?}");
}

#[test]
fn chunked_and_close_delimited_upstream_bodies() {
    let proxy = FaultProxy::start(upstream::start()).unwrap();
    let mut client = RawClient::new(proxy.addr());
    for _ in 0..2 {
        assert_eq!(client.get("/chunked", &[]).unwrap().body, upstream::BODY);
    }
    assert_eq!(client.connections_opened(), 1);
    let closed = client.get("/close", &[]).unwrap();
    assert_eq!(closed.body, upstream::BODY);
    let echoed = client
        .request("PUT", "/echo", &[], b"request body")
        .unwrap();
    assert_eq!(echoed.body, b"request body");
    assert_eq!(
        client.connections_opened(),
        2,
        "a close-delimited body ends the connection"
    );

    proxy.set_faults(vec![
        FaultRule::new(Fault::FlipBytes {
            offset_in_body: 6,
            count: 2,
        })
        .path("/chunked"),
    ]);
    let mut expected = upstream::BODY.to_vec();
    expected[6] ^= 0xff;
    expected[7] ^= 0xff;
    assert_eq!(client.get("/chunked", &[]).unwrap().body, expected);
    proxy.set_faults(vec![FaultRule::new(Fault::TruncateBody { after_bytes: 7 })]);
    let err = client.get("/chunked", &[]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(proxy.requests().last().unwrap().bytes_sent, 7);
}

#[test]
fn chunked_request_body_and_expect_continue_are_forwarded() {
    let proxy = FaultProxy::start(upstream::start()).unwrap();
    let mut stream = TcpStream::connect(proxy.addr()).unwrap();
    stream
        .write_all(b"PUT /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let mut continue_line = [0; 25];
    stream.read_exact(&mut continue_line).unwrap();
    assert_eq!(&continue_line, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream
        .write_all(b"4\r\nabcd\r\n3\r\nefg\r\n0\r\n\r\n")
        .unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(response.ends_with("\r\n\r\nabcdefg"), "{response}");
}

#[test]
fn concurrent_clients_through_the_whole_stack() {
    let (registry, pushed) = registry_with_sample();
    let gateway = TokenAuthGateway::start(registry.addr(), GatewayConfig::default()).unwrap();
    let proxy = FaultProxy::start(gateway.addr()).unwrap();
    // Through the gateway without a token, every request is challenged.
    assert_eq!(
        get_blob(proxy.addr(), &pushed.images[0].layers[0].digest, &[]).0,
        401
    );
    proxy.clear_requests();
    let direct = FaultProxy::start(registry.addr()).unwrap();
    let layers = &pushed.images[0].layers;
    thread::scope(|scope| {
        for worker in 0..6 {
            let addr = direct.addr();
            scope.spawn(move || {
                let mut client = RawClient::new(addr);
                for round in 0..5 {
                    let layer = &layers[(worker + round) % layers.len()];
                    let mut sink = HashingSink::default();
                    let target = format!("/v2/test/sample/blobs/{}", layer.digest);
                    client.download("GET", &target, &[], &mut sink).unwrap();
                    assert_eq!(sink.finish(), (layer.digest.clone(), layer.size));
                }
                assert_eq!(client.connections_opened(), 1);
            });
        }
    });
    assert_eq!(direct.requests().len(), 30);
    assert!(
        direct
            .requests()
            .iter()
            .all(|r| r.complete && r.status == 200)
    );
}

#[test]
fn large_bodies_stream_without_buffering() {
    const SIZE: u64 = 256 << 20;
    let registry = RegistryServer::start().unwrap();
    let digest = random_digest(SIZE, 5);
    let mut source = crate::RandomReader::new(5);
    registry
        .push_blob_from("big", &digest, SIZE, &mut source)
        .unwrap();
    let proxy = FaultProxy::start(registry.addr()).unwrap();
    let before = peak_rss_kib();
    let mut sink = HashingSink::default();
    let target = format!("/v2/big/blobs/{digest}");
    let response = RawClient::new(proxy.addr())
        .download("GET", &target, &[], &mut sink)
        .unwrap();
    assert_eq!(response.status, 200);
    assert_eq!(sink.finish(), (digest, SIZE));
    let grown_mib = (peak_rss_kib() - before) / 1024;
    assert!(grown_mib < 64, "peak RSS grew by {grown_mib} MiB");
    assert_eq!(proxy.requests()[0].bytes_sent, SIZE);
}

#[test]
fn drop_returns_with_idle_clients_connected() {
    let (registry, _) = registry_with_sample();
    let proxy = FaultProxy::start(registry.addr()).unwrap();
    let mut client = RawClient::new(proxy.addr());
    assert_eq!(client.get("/v2/", &[]).unwrap().status, 200);
    let start = Instant::now();
    drop(proxy);
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(client.get("/v2/", &[]).is_err());
}

/// The process's peak resident set (`VmHWM`) in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}
