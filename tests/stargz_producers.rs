//! Lazy pulls of eStargz images Strata did not write: the reference converter's own
//! outputs — `ctr-remote image convert --estargz` (gzip, no prioritized files, no Strata
//! annotation), `--zstdchunked`, and `ctr-remote image optimize` (files a profiled run
//! read, before `.prefetch.landmark`) — served by `strata serve`'s `stargz` snapshotter
//! behind the real containerd 1.6 and runc.
//!
//! For each: `ctr-remote image rpull` mounts every layer lazily (containerd downloads no
//! layer), a container runs a script that reads a program, its libraries and data files
//! and checks them, only a fraction of the image crosses the wire, and the large file's
//! miss is served by few requests (never one per 64 KiB block). The conversion runs in a
//! second containerd (ctr-remote converts inside a content store) and pushes to the same
//! registry, behind the test proxy that logs every request.
//! Needs root, containerd, ctr, ctr-remote, runc and docker-registry (scripts/setup.sh).

use std::path::Path;

use strata_formats::Digest;
use strata_testdata::LayerSpec;
use strata_testdata::registry::{FaultProxy, RegistryServer};

mod serve_support;
mod support;

use serve_support::{StrataServe, UnmountOnDrop, require_containerd, runnable_image};
use strata_testdata::containerd::Containerd;
use support::{CTR, CTR_REMOTE, log_tail};

/// Deterministic incompressible bytes.
fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// What a container of the image checks.
const SCRIPT: &str = "cat /etc/motd; sha256sum /data/big.bin /data/small/07.txt";

#[test]
#[ignore = "needs root, containerd, ctr, ctr-remote and runc: make test runs it"]
fn images_converted_by_ctr_remote_are_served_lazily() {
    require_containerd(&[CTR_REMOTE]);
    let dir = tempfile::tempdir().unwrap();
    let _unmount = UnmountOnDrop(dir.path().to_path_buf());
    let registry = RegistryServer::start().expect("start docker-registry");
    let proxy = FaultProxy::start(registry.addr()).expect("start the proxy");
    let host = proxy.host();

    // The source image: dash and its libraries, sha256sum and cat, a 3 MB file (one
    // eStargz chunk: ctr-remote's default chunk size is 4 MiB), small files, and bulk
    // nobody reads.
    let big = data(1, 3 << 20);
    let mut files = LayerSpec::new()
        .created_by("data")
        .file("etc/motd", 0o644, b"produced by ctr-remote\n".to_vec())
        .file("data/big.bin", 0o644, big.clone());
    for i in 0..40 {
        files = files.file(
            format!("data/small/{i:02}.txt"),
            0o644,
            format!("small file {i}\n").repeat(50).into_bytes(),
        );
    }
    for i in 0..8 {
        files = files.file(
            format!("data/unread/{i}.bin"),
            0o644,
            data(100 + i, 1 << 20),
        );
    }
    let mut tools = LayerSpec::new().created_by("tools");
    for tool in ["/bin/cat", "/usr/bin/sha256sum"] {
        let name = Path::new(tool).file_name().unwrap().to_string_lossy();
        tools = tools.file(format!("bin/{name}"), 0o755, std::fs::read(tool).unwrap());
    }
    let image = runnable_image(vec![tools, files]).build().unwrap();
    registry.push_image("producers/app", "1", &image).unwrap();
    let source = format!("{host}/producers/app:1");
    let big_sum = format!("{}  /data/big.bin", Digest::of(&big).encoded());
    let small_sum = format!(
        "{}  /data/small/07.txt",
        Digest::of(&"small file 7\n".repeat(50).into_bytes()).encoded()
    );

    // Convert with the reference's converter, in a containerd of its own.
    let mut converter = Containerd::start(&dir.path().join("converter"), "convert", "").unwrap();
    converter.ok(CTR, &["image", "pull", "--plain-http", &source]);
    let optimize_args = format!("[{SCRIPT:?}]");
    let flavours = [
        ("estargz", vec!["image", "convert", "--estargz", "--oci"]),
        (
            "zstdchunked",
            vec!["image", "convert", "--zstdchunked", "--oci"],
        ),
        (
            "optimized",
            vec![
                "image",
                "optimize",
                "--oci",
                "--period",
                "2",
                "--entrypoint",
                r#"["/bin/sh","-c"]"#,
                "--args",
                &optimize_args,
            ],
        ),
    ];
    let mut converted = Vec::new();
    for (tag, args) in &flavours {
        let target = format!("{host}/producers/app:{tag}");
        let mut args: Vec<&str> = args.clone();
        args.extend([source.as_str(), target.as_str()]);
        converter.ok(CTR_REMOTE, &args);
        converter.ok(CTR, &["image", "push", "--plain-http", &target]);
        converted.push((*tag, target));
    }
    converter.terminate();

    let hosts = dir.path().join("certs.d");
    std::fs::create_dir_all(hosts.join(&host)).unwrap();
    std::fs::write(hosts.join(&host).join("hosts.toml"), format!("server = \"http://{host}\"\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n")).unwrap();
    for (tag, reference) in converted {
        let run = dir.path().join(tag);
        let serve = StrataServe::start(
            &run.join("strata"),
            &format!(
                "config_path = {:?}\n[stargz]\nfd_holder = false\nbackground_fetch = false\n",
                hosts.to_string_lossy()
            ),
        );
        let containerd = Containerd::start(
            &run.join("containerd"),
            "producers",
            &format!(
                "[proxy_plugins]\n  [proxy_plugins.stargz]\n    type = \"snapshot\"\n    address = {:?}\n",
                serve.socket
            ),
        ).unwrap();
        let context = |what: &str| {
            format!(
                "{tag}: {what}\nstrata serve log:\n{}\ncontainerd log:\n{}",
                log_tail(&serve.log, 30),
                log_tail(&containerd.log, 10)
            )
        };
        proxy.clear_requests();
        containerd.ok(
            CTR_REMOTE,
            &[
                "image",
                "rpull",
                "--plain-http",
                "--snapshotter",
                "stargz",
                &reference,
            ],
        );
        let log = serve.log_text();
        let layers = image.layers.len();
        assert_eq!(
            log.matches("stargz: layer mounted lazily").count(),
            layers,
            "{}",
            context("not every layer was mounted lazily")
        );
        let content = containerd.ok(CTR, &["content", "ls"]);
        assert!(
            !content.contains("application/vnd.oci.image.layer"),
            "{}",
            context(&format!("containerd fetched layers:\n{content}"))
        );

        let runc_root = run.join("runc").to_string_lossy().into_owned();
        let out = containerd.run(
            CTR,
            &[
                "run",
                "--rm",
                "--runc-root",
                &runc_root,
                "--snapshotter",
                "stargz",
                &reference,
                &format!("c-{tag}"),
                "sh",
                "-c",
                SCRIPT,
            ],
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            context(&format!(
                "ctr run: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            ))
        );
        assert!(
            stdout.contains("produced by ctr-remote")
                && stdout.contains(&big_sum)
                && stdout.contains(&small_sum),
            "{tag}: {stdout}"
        );

        // A fraction of the image: not the 8 MB nobody read.
        let requests = proxy.requests();
        let blobs: Vec<_> = requests
            .iter()
            .filter(|r| r.path.contains("/blobs/") && r.method == "GET")
            .collect();
        let fetched: u64 = blobs.iter().map(|r| r.bytes_sent).sum();
        let total: u64 = image.layers.iter().map(|l| l.size).sum();
        eprintln!(
            "{tag}: {} blob requests, {fetched} bytes of {total}",
            blobs.len()
        );
        assert!(
            fetched < 8 << 20,
            "{}",
            context(&format!("fetched {fetched} of {total} bytes"))
        );
        // (containerd GETs the small config blob whole; no layer is.)
        assert!(
            blobs
                .iter()
                .all(|r| r.range.is_some() || r.bytes_sent < 64 << 10),
            "{}",
            context(&format!("a whole layer blob was fetched: {blobs:#?}"))
        );
        // The 3 MB file came in one request (or two: its start, then the rest), not in
        // dozens of 64 KiB ones; in all, a few requests per layer.
        assert!(
            blobs.len() <= 4 * layers + 6,
            "{}",
            context(&format!("{} blob requests: {blobs:#?}", blobs.len()))
        );
        drop(containerd);
        drop(serve);
    }
}
