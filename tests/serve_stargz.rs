//! The `stargz` snapshotter of `strata serve` end to end with the real containerd 1.6 and
//! runc: an image converted to eStargz by `strata convert`, pulled with `ctr-remote image
//! rpull --snapshotter stargz` (which labels each layer's Prepare with the image and the
//! layer), is mounted lazily layer by layer (containerd downloads no layer), a container
//! runs on it and checks the files it reads, and only a fraction of the image is fetched.
//! Then `strata serve` is SIGKILLed and restarted while a container keeps reading files
//! not fetched yet: the container stalls, it sees no error, and its data is right. Saved
//! TOCs and cached chunks damaged (same size) while the daemon is down are fetched again.
//! A SIGTERM keeps the layers mounted and the fd holder running; the restarted daemon
//! adopts that holder and resumes every layer; with containerd and the daemon stopped,
//! `umount` of each layer completes at once and the holder then exits.
//! Registry traffic goes through the test proxy, which counts the bytes and paces them.
//! Needs root, containerd, ctr, ctr-remote, runc and docker-registry (scripts/setup.sh).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata_formats::Digest;
use strata_testdata::LayerSpec;
use strata_testdata::registry::{Fault, FaultProxy, FaultRule, RegistryServer};

mod serve_support;
mod support;

use serve_support::{
    KillHolders, StrataServe, UnmountOnDrop, plain_http_hosts, require_containerd, runnable_image,
    snapshot_rows,
};
use strata_testdata::containerd::Containerd;
use support::mounts::mount_entries_under;
use support::{CTR, CTR_REMOTE, STRATA, log_tail};

/// Data files in the image and the size of each (incompressible).
const FILES: usize = 16;
const FILE_SIZE: usize = 768 << 10;

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

/// An eStargz image in `registry` (through `proxy`): dash, cat and sha256sum from the host,
/// `FILES` data files with their `SHA256SUMS`, a greeting. Returns the converted
/// reference, the data layer's chain length, and the expected `sha256sum` lines.
fn pushed_estargz_image(
    dir: &Path,
    registry: &RegistryServer,
    proxy: &FaultProxy,
) -> (String, usize, Vec<String>) {
    let mut tools = LayerSpec::new().created_by("tools");
    for tool in ["/bin/cat", "/usr/bin/sha256sum", "/bin/sleep"] {
        let name = Path::new(tool).file_name().unwrap().to_string_lossy();
        tools = tools.file(format!("bin/{name}"), 0o755, std::fs::read(tool).unwrap());
    }
    let mut files = LayerSpec::new().created_by("data");
    let mut sums = Vec::new();
    for i in 0..FILES {
        let bytes = data(i as u64 + 1, FILE_SIZE);
        sums.push(format!(
            "{}  /data/{i:02}.bin",
            Digest::of(&bytes).encoded()
        ));
        files = files.file(format!("data/{i:02}.bin"), 0o644, bytes);
    }
    let top = LayerSpec::new()
        .created_by("greeting")
        .file("etc/greeting", 0o644, "hello from a lazy layer\n")
        .file("data/SHA256SUMS", 0o644, format!("{}\n", sums.join("\n")));
    let image = runnable_image(vec![tools, files, top]).build().unwrap();
    let layers = image.layers.len();
    registry
        .push_image("lazy/app", "1", &image)
        .expect("push the image");
    let source = format!("{}/lazy/app:1", proxy.host());
    let converted = format!("{}/lazy/app:esgz", proxy.host());
    let root = dir.join("convert-root");
    // Prioritized files in two layers: their prefetch starts alongside the TOC fetch (the
    // converter's prefetch-end hint), the data layer's reads are all on demand.
    let convert = [
        "convert",
        "--plain-http",
        "--prioritize",
        "/bin/cat",
        "--prioritize",
        "/etc/greeting",
        "--push",
        &source,
        &converted,
    ];
    for args in [&["pull", "--plain-http", source.as_str()][..], &convert] {
        let out = Command::new(STRATA)
            .arg("--root")
            .arg(&root)
            .args(args)
            .env("DOCKER_CONFIG", dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "strata {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (converted, layers, sums)
}

/// The fd holders started for `dir`.
fn holder_pids(dir: &Path) -> Vec<i32> {
    let needle = dir.to_string_lossy().into_owned();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| {
            let pid = p.file_name().to_string_lossy().parse::<i32>().ok()?;
            let cmdline = std::fs::read(p.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.contains("fd-holder") && cmdline.contains(&needle)).then_some(pid)
        })
        .collect()
}

/// Blob bytes the proxy sent (GETs of `/blobs/`).
fn blob_bytes(proxy: &FaultProxy) -> u64 {
    proxy
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.contains("/blobs/"))
        .map(|r| r.bytes_sent)
        .sum()
}

struct Setup {
    _holders: KillHolders,
    serve: StrataServe,
    containerd: Containerd,
    reference: String,
    chain_len: usize,
    sums: Vec<String>,
    proxy: FaultProxy,
    _registry: RegistryServer,
    dir: std::path::PathBuf,
}

fn setup(dir: &Path, namespace: &str) -> Setup {
    let registry = RegistryServer::start().expect("start docker-registry");
    let proxy = FaultProxy::start(registry.addr()).expect("start the proxy");
    let (reference, chain_len, sums) = pushed_estargz_image(dir, &registry, &proxy);
    let hosts = plain_http_hosts(dir, &proxy.host());
    let holders = KillHolders(dir.to_path_buf());
    let serve = StrataServe::start(
        &dir.join("strata"),
        &format!("config_path = {:?}\n", hosts.to_string_lossy()),
    );
    let containerd = Containerd::start(
        &dir.join("containerd"),
        namespace,
        &format!(
            "[proxy_plugins]\n  [proxy_plugins.stargz]\n    type = \"snapshot\"\n    address = {:?}\n",
            serve.socket
        ),
    ).unwrap();
    proxy.clear_requests();
    Setup {
        _holders: holders,
        serve,
        containerd,
        reference,
        chain_len,
        sums,
        proxy,
        _registry: registry,
        dir: dir.to_path_buf(),
    }
}

impl Setup {
    fn context(&self, what: &str) -> String {
        format!(
            "{what}\nstrata serve log tail:\n{}\ncontainerd log tail:\n{}",
            log_tail(&self.serve.log, 30),
            log_tail(&self.containerd.log, 15)
        )
    }

    fn rpull(&self) {
        self.containerd.ok(
            CTR_REMOTE,
            &[
                "image",
                "rpull",
                "--plain-http",
                "--snapshotter",
                "stargz",
                &self.reference,
            ],
        );
    }

    /// Restarts `strata serve` and waits until containerd reaches it again: after the
    /// daemon went away, containerd's connection to the proxy plugin fails calls at once
    /// (`Unavailable`) until its reconnect backoff has run.
    fn restart_serve(&mut self) {
        self.serve.restart();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self
                .containerd
                .run(CTR, &["snapshots", "--snapshotter", "stargz", "ls"]);
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}",
                self.context("containerd does not reach the restarted daemon")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn run_args<'a>(&'a self, runc_root: &'a str, id: &'a str, script: &'a str) -> Vec<&'a str> {
        vec![
            "run",
            "--rm",
            "--runc-root",
            runc_root,
            "--snapshotter",
            "stargz",
            &self.reference,
            id,
            "sh",
            "-c",
            script,
        ]
    }

    fn fuse_mounts(&self) -> usize {
        mount_entries_under(&self.serve.root)
            .iter()
            .filter(|m| m.fstype.starts_with("fuse"))
            .count()
    }
}

#[test]
#[ignore = "needs root, containerd, ctr, ctr-remote and runc: make test runs it"]
fn rpull_mounts_every_layer_lazily_and_the_container_reads_right_bytes() {
    require_containerd(&[CTR_REMOTE]);
    let dir = tempfile::tempdir().unwrap();
    let _unmount = UnmountOnDrop(dir.path().to_path_buf());
    let mut s = setup(dir.path(), "strata-stargz");
    // Strata's manifest request (by tag: containerd resolves with HEAD, then GETs by
    // digest) is held back a second: the bottom layer's fetching starts from its
    // Prepare's labels alone (strata convert's size, TOC-offset and prefetch-end hints,
    // which containerd passes on), so its prefetch and its TOC come in meanwhile.
    s.proxy.set_faults(vec![
        FaultRule::new(Fault::Delay { ms: 1000 })
            .method("GET")
            .path("/manifests/esgz"),
    ]);
    let started = Instant::now();
    s.rpull();
    let pulled_in = started.elapsed();
    s.proxy.clear_faults();
    let requests = s.proxy.requests();
    let manifest = requests
        .iter()
        .position(|r| r.method == "GET" && r.path.ends_with("/manifests/esgz"));
    let manifest = manifest.unwrap_or_else(|| {
        panic!(
            "{}",
            s.context(&format!("strata's manifest GET not seen: {requests:#?}"))
        )
    });
    let before: Vec<&str> = requests[..manifest]
        .iter()
        .filter(|r| r.path.contains("/blobs/"))
        .filter_map(|r| r.range.as_deref())
        .collect();
    assert!(
        before.iter().any(|r| r.starts_with("bytes=0-")) && before.len() >= 2,
        "{}",
        s.context(&format!(
            "no prefetch and tail of the bottom layer before the manifest came: {requests:#?}"
        ))
    );

    // Every layer is a FUSE mount; containerd downloaded none of them.
    let log = s.serve.log_text();
    assert_eq!(
        log.matches("stargz: layer mounted lazily").count(),
        s.chain_len,
        "{}",
        s.context("not every layer was mounted lazily")
    );
    assert_eq!(s.fuse_mounts(), s.chain_len, "{}", s.context("FUSE mounts"));
    let content = s.containerd.ok(CTR, &["content", "ls"]);
    assert!(
        !content.contains("application/vnd.oci.image.layer"),
        "{}",
        s.context(&format!("containerd fetched layers:\n{content}"))
    );
    let listing = s
        .containerd
        .ok(CTR, &["snapshots", "--snapshotter", "stargz", "ls"]);
    assert_eq!(snapshot_rows(&listing).len(), s.chain_len, "{listing}");

    // A container reads a greeting and two of the data files and checks them.
    let runc_root = s.dir.join("runc").to_string_lossy().into_owned();
    let script = "cat /etc/greeting; sha256sum /data/03.bin /data/11.bin";
    let out = s
        .containerd
        .run(CTR, &s.run_args(&runc_root, "lazy-1", script));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        s.context(&format!(
            "ctr run: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ))
    );
    assert!(stdout.contains("hello from a lazy layer"), "{stdout}");
    for i in [3, 11] {
        assert!(
            stdout.contains(&s.sums[i]),
            "{stdout}\nexpected {}",
            s.sums[i]
        );
    }

    // Only a fraction of the image came over the wire: TOCs and the files read.
    let fetched = blob_bytes(&s.proxy);
    let total = (FILES * FILE_SIZE) as u64;
    eprintln!("rpull {pulled_in:?}; blob bytes fetched {fetched} of > {total}");
    assert!(
        fetched < total / 3,
        "{}",
        s.context(&format!("fetched {fetched} of {total} bytes"))
    );

    // The CLI reaches the snapshots through the daemon (which holds their metadata), and
    // `info` shows what was fetched of each layer.
    let strata_cli = |args: &[&str]| {
        let out = Command::new(STRATA)
            .arg("--root")
            .arg(&s.serve.root)
            .args(["snapshot", "--snapshotter", "stargz", "--socket"])
            .arg(&s.serve.socket)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "strata snapshot {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let cli_listing = strata_cli(&["ls"]);
    for (key, _, _) in snapshot_rows(&listing) {
        assert!(
            cli_listing.contains(&key),
            "{key} missing from strata snapshot ls:\n{cli_listing}"
        );
    }
    let top = snapshot_rows(&listing)
        .into_iter()
        .map(|r| r.0)
        .find(|k| {
            !listing
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(k))
        })
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let info: serde_json::Value = loop {
        let info: serde_json::Value = serde_json::from_str(&strata_cli(&["info", &top])).unwrap();
        if info.get("Lazy").is_some() || Instant::now() > deadline {
            break info;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(info["Kind"], "Committed", "{info}");
    assert!(
        info["Lazy"]["fetched_bytes"].as_u64().unwrap_or(0) > 0
            && info["Lazy"]["layer"].is_string(),
        "{info}"
    );

    // Removing the snapshots top down unmounts their layers.
    let chain: Vec<String> = {
        let mut rows = snapshot_rows(&listing);
        let mut ordered = Vec::new();
        let mut parent = String::new();
        while let Some(pos) = rows.iter().position(|r| r.1 == parent) {
            let row = rows.remove(pos);
            parent = row.0.clone();
            ordered.push(row.0);
        }
        ordered
    };
    assert_eq!(chain.len(), s.chain_len, "{listing}");
    s.containerd.ok(CTR, &["image", "rm", &s.reference]);
    for key in chain.iter().rev() {
        let out = s
            .containerd
            .run(CTR, &["snapshots", "--snapshotter", "stargz", "rm", key]);
        // containerd's garbage collector may have removed it first.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || stderr.contains("not found"),
            "rm {key}: {stderr}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.fuse_mounts() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        s.fuse_mounts(),
        0,
        "{}",
        s.context("layer mounts left after removal")
    );
    // Removal went as it should: nothing to warn about.
    let log = s.serve.log_text();
    assert!(
        !log.contains("releasing a remote snapshot's layer"),
        "{}",
        s.context("a warning at a removal that succeeded")
    );

    // A graceful stop with no lazy mount left leaves no process behind.
    assert_eq!(holder_pids(&s.dir).len(), 1, "{}", s.context("the holder"));
    s.serve.terminate();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !holder_pids(&s.dir).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        holder_pids(&s.dir).is_empty(),
        "{}",
        s.context("the fd holder outlived a stop with no mounts")
    );
}

#[test]
#[ignore = "needs root, containerd, ctr, ctr-remote and runc: make test runs it"]
fn sigkill_and_restart_while_a_container_reads_is_a_stall_not_an_error() {
    require_containerd(&[CTR_REMOTE]);
    let dir = tempfile::tempdir().unwrap();
    let _unmount = UnmountOnDrop(dir.path().to_path_buf());
    let mut s = setup(dir.path(), "strata-stargz-restart");
    s.rpull();
    // Pace blob bodies so the container is still reading unfetched files when the
    // daemon dies.
    s.proxy.set_faults(vec![
        FaultRule::new(Fault::Slow {
            bytes_per_sec: 2 << 20,
        })
        .blobs(),
    ]);

    let runc_root = s.dir.join("runc").to_string_lossy().into_owned();
    let script =
        "for f in /data/*.bin; do sha256sum $f || echo FAILED $f; sleep 0.2; done; echo DONE";
    let mut container = Command::new(CTR)
        .arg("--address")
        .arg(&s.containerd.socket)
        .args(["--namespace", &s.containerd.namespace])
        .args(s.run_args(&runc_root, "reader-1", script))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let before = blob_bytes(&s.proxy);
    s.serve.kill();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        container.try_wait().unwrap().is_none(),
        "the container ended while strata serve was down"
    );
    s.serve.restart();
    let deadline = Instant::now() + Duration::from_secs(120);
    while container.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if container.try_wait().unwrap().is_none() {
        let _ = container.kill();
    }
    let out = container.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let context = s.context(&format!(
        "container stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    ));
    assert!(out.status.success() && stdout.contains("DONE"), "{context}");
    assert!(
        !stdout.contains("FAILED") && !stdout.to_lowercase().contains("not connected"),
        "{context}"
    );
    for sum in &s.sums {
        assert!(
            stdout.contains(sum.as_str()),
            "missing or wrong: {sum}\n{context}"
        );
    }
    let log = s.serve.log_text();
    assert_eq!(
        log.matches("stargz: layer resumed").count(),
        s.chain_len,
        "{context}"
    );
    let total = (FILES * FILE_SIZE) as u64;
    assert!(
        before < total,
        "every file was fetched before the kill ({before} bytes): the test proves nothing\n{context}"
    );
}

/// Flips one bit in the middle of every file under `dir` whose name ends with `suffix`
/// (sizes kept), as a power cut or a bad disk can; returns how many.
fn flip_files(dir: &Path, suffix: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            n += flip_files(&path, suffix);
            continue;
        }
        if !path.to_string_lossy().ends_with(suffix) {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        if bytes.is_empty() {
            continue;
        }
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x10;
        std::fs::write(&path, bytes).unwrap();
        n += 1;
    }
    n
}

/// Flips one bit in the middle of the compressed TOC of a saved tail (its blob offset,
/// then the blob's bytes from there to the end), keeping the size.
fn flip_in_saved_toc(path: &Path) {
    let mut saved = std::fs::read(path).unwrap();
    let offset = u64::from_le_bytes(saved[..8].try_into().unwrap());
    let bytes = &saved[8..];
    let footer_at = bytes
        .len()
        .saturating_sub(strata_formats::estargz::footer::MAX_FOOTER_SIZE);
    let footer = strata_formats::estargz::Footer::parse(&bytes[footer_at..]).unwrap();
    let toc_start = (footer.toc_offset - offset) as usize;
    let toc_end = bytes.len() - footer.size();
    saved[8 + (toc_start + toc_end) / 2] ^= 0x10;
    std::fs::write(path, saved).unwrap();
}

#[test]
#[ignore = "needs root, containerd, ctr, ctr-remote and runc: make test runs it"]
fn saved_tocs_and_cached_chunks_damaged_while_down_are_fetched_again_never_served() {
    require_containerd(&[CTR_REMOTE]);
    let dir = tempfile::tempdir().unwrap();
    let _unmount = UnmountOnDrop(dir.path().to_path_buf());
    let mut s = setup(dir.path(), "strata-stargz-damage");
    s.rpull();
    let runc_root = s.dir.join("runc").to_string_lossy().into_owned();
    let script = "for f in /data/*.bin; do sha256sum $f || echo FAILED $f; done; echo DONE";
    // Every file read once: chunks and saved TOCs on disk.
    s.containerd
        .ok(CTR, &s.run_args(&runc_root, "reader-1", script));
    s.serve.kill();
    let layers = s.serve.root.join("snapshotters/stargz/layers");
    let mut tails = 0;
    for entry in std::fs::read_dir(&layers).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "tail") {
            flip_in_saved_toc(&path);
            tails += 1;
        }
    }
    assert_eq!(tails, s.chain_len, "{}", s.context("saved TOCs"));
    let chunks = flip_files(&s.serve.root.join("cache/stargz/sha256"), "");
    assert!(chunks > FILES, "{}", s.context("cached chunks"));
    s.restart_serve();
    // The resumed mounts' page cache would answer without asking the daemon.
    std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
    let out = Command::new(CTR)
        .arg("--address")
        .arg(&s.containerd.socket)
        .args(["--namespace", &s.containerd.namespace])
        .args(s.run_args(&runc_root, "reader-2", script))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let context = s.context(&format!(
        "container stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    ));
    assert!(out.status.success() && stdout.contains("DONE"), "{context}");
    assert!(!stdout.contains("FAILED"), "{context}");
    for sum in &s.sums {
        assert!(
            stdout.contains(sum.as_str()),
            "missing or wrong: {sum}\n{context}"
        );
    }
    let log = s.serve.log_text();
    assert_eq!(
        log.matches("the saved TOC was unusable; fetched it again")
            .count(),
        s.chain_len,
        "{context}"
    );
    assert_eq!(
        log.matches("stargz: layer resumed").count(),
        s.chain_len,
        "{context}"
    );
    assert!(log.contains("cached chunk is torn or corrupt"), "{context}");
}

#[test]
#[ignore = "needs root, containerd, ctr, ctr-remote and runc: make test runs it"]
fn sigterm_keeps_the_layers_for_the_next_daemon_and_a_stopped_daemons_layers_unmount_at_once() {
    require_containerd(&[CTR_REMOTE]);
    let dir = tempfile::tempdir().unwrap();
    let _unmount = UnmountOnDrop(dir.path().to_path_buf());
    let mut s = setup(dir.path(), "strata-stargz-lifecycle");
    s.rpull();
    let runc_root = s.dir.join("runc").to_string_lossy().into_owned();
    let out = s
        .containerd
        .run(CTR, &s.run_args(&runc_root, "before", "cat /etc/greeting"));
    assert!(
        out.status.success(),
        "{}",
        s.context("ctr run before the stop")
    );
    let holder = holder_pids(&s.dir);
    assert_eq!(holder.len(), 1, "{}", s.context("one fd holder"));

    // A graceful stop keeps the layers mounted and the holder keeping them.
    s.serve.terminate();
    assert_eq!(s.fuse_mounts(), s.chain_len, "{}", s.context("mounts kept"));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        holder_pids(&s.dir),
        holder,
        "the holder stays with the mounts"
    );

    // The restarted daemon adopts that holder and resumes every layer.
    s.restart_serve();
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.serve.log_text().matches("stargz: layer resumed").count() < s.chain_len
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        s.serve.log_text().matches("stargz: layer resumed").count(),
        s.chain_len,
        "{}",
        s.context("layers resumed after a SIGTERM")
    );
    assert_eq!(holder_pids(&s.dir), holder, "the same holder is adopted");
    let out = s.containerd.run(
        CTR,
        &s.run_args(&runc_root, "after", "sha256sum /data/05.bin"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(&s.sums[5]),
        "{}",
        s.context(&format!("ctr run after the restart: {stdout}"))
    );

    // containerd and the daemon stop; the layers are unmounted by hand, each at once.
    s.containerd.terminate();
    s.serve.terminate();
    let layers: Vec<String> = mount_entries_under(&s.serve.root)
        .into_iter()
        .filter(|m| m.fstype.starts_with("fuse"))
        .map(|m| m.point)
        .collect();
    assert_eq!(layers.len(), s.chain_len);
    let mut took = Vec::new();
    for layer in &layers {
        let started = Instant::now();
        let mut umount = Command::new("umount")
            .arg(layer)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = started + Duration::from_secs(10);
        while umount.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let elapsed = started.elapsed();
        if umount.try_wait().unwrap().is_none() {
            let _ = umount.kill();
        }
        assert!(
            umount.wait().unwrap().success(),
            "umount {layer} ({elapsed:?})"
        );
        took.push(elapsed);
    }
    eprintln!("umount of each layer of a stopped daemon: {took:?}");
    assert!(took.iter().all(|t| *t < Duration::from_secs(1)), "{took:?}");

    // Nothing left to keep: the holder exits.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !holder_pids(&s.dir).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        holder_pids(&s.dir).is_empty(),
        "the holder outlived the mounts"
    );
}
