//! Lazy-pull interoperability (issue #4): an image converted by `strata convert` and pushed
//! by `strata push` is lazily readable by stargz-snapshotter.
//!
//! The reference daemon is `stargz-grpc` (stargz-snapshotter 0.12's FUSE filesystem and
//! snapshotter behind containerd's snapshots gRPC API), the project's own
//! `benches/reference/stargz-grpc`, built by `benches/reference/build-stargz-grpc.sh` into
//! `target/reference/` (again only when its inputs changed).
//! A private containerd 1.6 uses it as the `stargz` proxy plugin; `ctr-remote image rpull`
//! hands it each layer's reference and digest, and stargz mounts the layers over FUSE
//! instead of containerd downloading them. The registry sits behind
//! `strata_testdata`'s `FaultProxy` (no faults: only its request log), the address stargz
//! talks to.
//!
//! Checked: containerd's content store holds the manifest and config but no layer blob;
//! stargz committed one snapshot per layer (chain IDs of the converted config), each a FUSE
//! mount; every layer blob request stargz made carried a `Range` header, and before any file
//! was read the base layer was not fetched whole; every entry of every layer (file bytes,
//! symlinks, modes, owners, whiteouts, opaque dirs) reads back through its FUSE mount, and
//! the read-only overlay of all three (mounted here) shows exactly the sample's merged tree.
//!
//! stargz runs with `noprefetch` and `no_background_fetch`, so every fetch is on demand.
//! Needs root (FUSE and overlay mounts), /dev/fuse, containerd, ctr, ctr-remote
//! (scripts/setup.sh), and Go plus the stargz-snapshotter Go sources (scripts/setup.sh; the
//! build script installs them with apt-get when missing): the test is `#[ignore]`d, `make
//! test` runs it, and it fails when any of them is missing (`strata_testdata::host`).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use strata_testdata::containerd::{self, Containerd};
use strata_testdata::registry::{FaultProxy, RegistryServer};

mod support;

use support::mounts::{MountEntry, OverlayMount, force_unmount, mount_entries_under, mounts_under};
use support::{CTR, CTR_REMOTE, Env, chain_ids, stop_child, wait_for_socket};

/// containerd namespace of every ctr call (private daemon anyway).
const NS: &str = "strata-lazy";
const TOC_DIGEST: &str = "containerd.io/snapshot/stargz/toc.digest";

/// Builds `stargz-grpc` with the repository's script (~1 min on a fresh checkout, nothing
/// when it is current); returns the binary.
fn build_stargz_grpc() -> PathBuf {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/reference/build-stargz-grpc.sh");
    let out = Command::new(&script).stdin(Stdio::null()).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} failed ({}):\nstdout: {stdout}\nstderr: {}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(bin.is_file(), "no binary at {bin:?}; stdout: {stdout}");
    bin
}

/// The reference stargz snapshotter daemon, from an empty root (it restores old snapshots
/// at start-up otherwise), talking plain HTTP to `registry_host`.
struct Stargz {
    child: Option<Child>,
    socket: PathBuf,
    root: PathBuf,
    log: PathBuf,
}

impl Stargz {
    fn start(bin: &Path, dir: &Path, registry_host: &str) -> Self {
        fs::create_dir_all(dir).unwrap();
        let socket = dir.join("stargz.sock");
        let root = dir.join("root");
        let config = dir.join("stargz.toml");
        let log = dir.join("stargz.log");
        fs::write(
            &config,
            format!(
                "noprefetch = true\nno_background_fetch = true\n\n\
                 [[resolver.host.\"{registry_host}\".mirrors]]\n\
                 host = \"{registry_host}\"\ninsecure = true\n"
            ),
        )
        .unwrap();
        let out = fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg("-address")
            .arg(&socket)
            .arg("-root")
            .arg(&root)
            .arg("-config")
            .arg(&config)
            .args(["-log-level", "info"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut daemon = Stargz {
            child: Some(child),
            socket,
            root,
            log,
        };
        wait_for_socket(
            "stargz-grpc",
            daemon.child.as_mut().unwrap(),
            &daemon.socket,
            &daemon.log,
        );
        daemon
    }

    /// Stops the daemon (it unmounts its FUSE layers on SIGTERM), then unmounts whatever
    /// is left under its root; returns what was left.
    fn shutdown(&mut self) -> Vec<String> {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
        let left = mounts_under(&self.root);
        force_unmount(&self.root);
        left
    }
}

impl Drop for Stargz {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A private containerd with the stargz daemon as its `stargz` proxy snapshotter, every
/// client call in namespace [`NS`]; a failing call shows the stargz daemon's log too.
fn start_containerd(dir: &Path, stargz: &Stargz) -> Containerd {
    let mut daemon = Containerd::start(
        dir,
        NS,
        &format!(
            "[proxy_plugins]\n  [proxy_plugins.stargz]\n    type = \"snapshot\"\n    address = {:?}\n",
            stargz.socket.to_string_lossy()
        ),
    )
    .unwrap();
    daemon.show_log_on_failure("stargz-grpc", &stargz.log);
    daemon
}

/// What one path of a layer (or of the merged tree) must be.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Want {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

#[derive(Debug, Clone)]
struct Node {
    want: Want,
    mode: u32,
    uid: u64,
    gid: u64,
}

#[derive(Debug, Default)]
struct LayerContents {
    nodes: BTreeMap<String, Node>,
    /// Paths whited out (`.wh.NAME` → `NAME`).
    whiteouts: Vec<String>,
    /// Directories made opaque (`.wh..wh..opq`).
    opaque: Vec<String>,
}

/// The entries of a layer tar (hard links resolved to their target's bytes).
fn layer_contents(tar_bytes: &[u8]) -> LayerContents {
    let mut out = LayerContents::default();
    let mut archive = tar::Archive::new(tar_bytes);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let path = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_owned();
        let (parent, name) = match path.rsplit_once('/') {
            Some((p, n)) => (format!("{p}/"), n.to_owned()),
            None => (String::new(), path.clone()),
        };
        if name == ".wh..wh..opq" {
            out.opaque.push(parent.trim_end_matches('/').to_owned());
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            out.whiteouts.push(format!("{parent}{hidden}"));
            continue;
        }
        let header = entry.header();
        let mode = header.mode().unwrap() & 0o7777;
        let uid = header.uid().unwrap();
        let gid = header.gid().unwrap();
        let want = match header.entry_type() {
            tar::EntryType::Directory => Want::Dir,
            tar::EntryType::Regular => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                Want::File(data)
            }
            tar::EntryType::Symlink => Want::Symlink(
                entry
                    .link_name()
                    .unwrap()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            ),
            tar::EntryType::Link => {
                // One inode: the target's bytes, mode and owner.
                let target = entry.link_name().unwrap().unwrap();
                let target = target.to_string_lossy();
                let target = target.trim_start_matches("./");
                let node = out
                    .nodes
                    .get(target)
                    .unwrap_or_else(|| panic!("hard link {path} → {target}: no target"))
                    .clone();
                out.nodes.insert(path, node);
                continue;
            }
            other => panic!("{path}: unexpected tar entry type {other:?}"),
        };
        out.nodes.insert(
            path,
            Node {
                want,
                mode,
                uid,
                gid,
            },
        );
    }
    out
}

/// The merged tree of layers (bottom first): whiteouts and opaque dirs hide lower paths.
fn merge(layers: &[LayerContents]) -> BTreeMap<String, Node> {
    let mut merged: BTreeMap<String, Node> = BTreeMap::new();
    for layer in layers {
        let hidden = |p: &str, root: &str| p == root || p.starts_with(&format!("{root}/"));
        for w in &layer.whiteouts {
            merged.retain(|p, _| !hidden(p, w));
        }
        for d in &layer.opaque {
            merged.retain(|p, _| !p.starts_with(&format!("{d}/")));
        }
        for (p, n) in &layer.nodes {
            merged.insert(p.clone(), n.clone());
        }
    }
    merged
}

/// Checks that `path` (read through a stargz mount) is what `node` says.
fn check_node(path: &Path, node: &Node, what: &str) {
    let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{what}: {e}"));
    match &node.want {
        Want::Dir => assert!(m.is_dir(), "{what}: not a directory"),
        Want::File(data) => {
            assert!(m.is_file(), "{what}: not a regular file");
            let got = fs::read(path).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert!(
                &got == data,
                "{what}: {} bytes read differ from the source's {}",
                got.len(),
                data.len()
            );
        }
        Want::Symlink(target) => {
            assert!(m.file_type().is_symlink(), "{what}: not a symlink");
            assert_eq!(
                fs::read_link(path).unwrap().to_string_lossy(),
                target.as_str(),
                "{what}"
            );
        }
    }
    if !matches!(node.want, Want::Symlink(_)) {
        assert_eq!(m.mode() & 0o7777, node.mode, "{what}: mode");
    }
    assert_eq!(
        (m.uid() as u64, m.gid() as u64),
        (node.uid, node.gid),
        "{what}: owner"
    );
}

/// Non-directory paths under `dir` (relative).
fn non_dirs(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// The DIGEST column of `ctr content ls` (labels name layers too).
fn content_digests(list: &str) -> Vec<String> {
    list.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn layer_blob_requests<'a>(
    requests: &'a [strata_testdata::registry::RequestRecord],
    digest: &str,
) -> Vec<&'a strata_testdata::registry::RequestRecord> {
    requests
        .iter()
        .filter(|r| {
            r.path
                .split('?')
                .next()
                .unwrap_or_default()
                .ends_with(&format!("/blobs/{digest}"))
        })
        .collect()
}

/// `strata convert` → `strata push` → `ctr-remote image rpull` through stargz-snapshotter:
/// the layers are mounted lazily (never downloaded by containerd, fetched by range) and
/// read back byte for byte.
#[test]
#[ignore = "needs root, /dev/fuse, containerd, ctr, ctr-remote and Go: make test runs it"]
fn strata_estargz_lazily_readable_by_stargz_snapshotter() {
    containerd::require(
        &[CTR_REMOTE, "/dev/fuse"],
        "stargz-snapshotter mounts FUSE and overlayfs",
    );
    let started = Instant::now();
    let stargz_bin = build_stargz_grpc();
    let env = Env::new();
    let registry = RegistryServer::start().unwrap();
    let proxy = FaultProxy::start(registry.addr()).unwrap();

    // Sample image → Strata's store → eStargz (64 KiB chunks: files span several) → registry.
    let layout = env.path("layout");
    let spec = strata_testdata::sample_image(23);
    let built = spec.build().unwrap();
    strata_testdata::write_oci_layout(&layout, &[("docker.io/library/sample:1.0", spec.into())])
        .unwrap();
    env.strata_ok("a", &["image", "import", layout.to_str().unwrap()]);
    let converted = env.strata_ok(
        "a",
        &[
            "convert",
            "--chunk-size",
            "65536",
            "docker.io/library/sample:1.0",
            "lazy:1",
        ],
    );
    let converted = converted.trim().to_owned();
    let manifest = env.json("a", &converted);
    let config = env.json("a", manifest["config"]["digest"].as_str().unwrap());
    let layers: Vec<(String, u64)> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            assert!(l["annotations"][TOC_DIGEST].is_string(), "not eStargz: {l}");
            (
                l["digest"].as_str().unwrap().to_owned(),
                l["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(layers.len(), 3, "{manifest}");
    let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect();
    let chain = chain_ids(&diff_ids);
    let pushed = env.strata_ok(
        "a",
        &[
            "push",
            "--plain-http",
            &format!("{}/lazy:1", registry.host()),
            "lazy:1",
        ],
    );
    assert_eq!(pushed.trim(), converted);

    // stargz and containerd pull through the proxy (same registry storage).
    let reference = format!("{}/lazy:1", proxy.host());
    let mut stargz = Stargz::start(&stargz_bin, &env.path("stargz"), &proxy.host());
    let mut daemon = start_containerd(&env.path("containerd"), &stargz);
    proxy.clear_requests();
    daemon.ok(CTR_REMOTE, &["image", "rpull", "--plain-http", &reference]);

    // containerd fetched the manifest and config only: no layer blob in its content store.
    let content = daemon.ok(CTR, &["content", "ls"]);
    let blobs = content_digests(&content);
    assert!(blobs.contains(&converted), "no manifest in:\n{content}");
    for (digest, _) in &layers {
        assert!(
            !blobs.contains(digest),
            "layer {digest} was downloaded by containerd:\n{content}"
        );
    }
    // stargz committed every layer as a snapshot named by its chain ID.
    let snapshots = daemon.ok(CTR, &["snapshots", "--snapshotter", "stargz", "ls"]);
    for c in &chain {
        assert!(
            snapshots
                .lines()
                .any(|l| l.starts_with(c.as_str()) && l.contains("Committed")),
            "no committed stargz snapshot {c}:\n{snapshots}"
        );
    }
    // Layer blobs were only ever read by range; the base layer (the largest) not whole.
    let requests = proxy.requests();
    for (digest, size) in &layers {
        let reads = layer_blob_requests(&requests, digest);
        assert!(
            !reads.is_empty(),
            "stargz never read {digest}: {requests:#?}"
        );
        for r in reads.iter().filter(|r| r.method == "GET") {
            assert!(r.range.is_some(), "{digest}: GET without Range: {r:?}");
        }
        eprintln!(
            "after rpull: layer {digest} ({size} bytes): {} requests, {} bytes sent",
            reads.len(),
            reads.iter().map(|r| r.bytes_sent).sum::<u64>()
        );
    }
    let (base, base_size) = &layers[0];
    let base_bytes: u64 = layer_blob_requests(&requests, base)
        .iter()
        .map(|r| r.bytes_sent)
        .sum();
    assert!(
        base_bytes < base_size / 2,
        "{base}: {base_bytes} of {base_size} bytes fetched before any file was read"
    );

    // A read-only view of the top layer: overlay whose lowerdirs are stargz's FUSE mounts.
    let top = chain.last().unwrap();
    let key = format!("view-{}", &top[7..19]);
    let out = daemon.ok(
        CTR,
        &[
            "snapshots",
            "--snapshotter",
            "stargz",
            "view",
            "--mounts",
            &key,
            top,
        ],
    );
    let mounts: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let lower = mounts[0]["Options"]
        .as_array()
        .unwrap_or_else(|| panic!("{mounts}"))
        .iter()
        .filter_map(|o| o.as_str()?.strip_prefix("lowerdir="))
        .next()
        .unwrap_or_else(|| panic!("no lowerdir: {mounts}"))
        .to_owned();
    let mut dirs: Vec<PathBuf> = lower.split(':').map(PathBuf::from).collect();
    dirs.reverse(); // overlayfs lists the top layer first
    assert_eq!(dirs.len(), 3, "{mounts}");
    let fuse: Vec<MountEntry> = mount_entries_under(&stargz.root);
    for d in &dirs {
        let d = d.to_string_lossy();
        assert!(
            fuse.iter()
                .any(|m| m.point == d && m.fstype.starts_with("fuse")),
            "lowerdir {d} is not a FUSE mount under stargz's root"
        );
    }

    // Every entry of every layer, read through its FUSE mount.
    let contents: Vec<LayerContents> = built
        .layers
        .iter()
        .map(|l| layer_contents(&l.tar))
        .collect();
    let mut files = 0;
    for (i, (layer, dir)) in contents.iter().zip(&dirs).enumerate() {
        for (path, node) in &layer.nodes {
            check_node(&dir.join(path), node, &format!("layer {i} {path}"));
            files += usize::from(matches!(node.want, Want::File(_)));
        }
        for w in &layer.whiteouts {
            let m = fs::symlink_metadata(dir.join(w))
                .unwrap_or_else(|e| panic!("layer {i} whiteout {w}: {e}"));
            assert!(
                m.file_type().is_char_device() && m.rdev() == 0,
                "layer {i} whiteout {w}: not a 0:0 character device"
            );
        }
        for d in &layer.opaque {
            let mut value = [0u8; 8];
            let n = rustix::fs::lgetxattr(dir.join(d), "trusted.overlay.opaque", &mut value)
                .unwrap_or_else(|e| panic!("layer {i} opaque {d}: {e}"));
            assert_eq!(&value[..n], b"y", "layer {i} opaque {d}");
        }
    }
    assert!(files >= 15, "only {files} files in the sample?");

    // The merged tree, through a read-only overlay of the three mounts.
    let merged_want = merge(&contents);
    {
        let merged = OverlayMount::mount(&env.path("merged"), &lower);
        let want_non_dirs: Vec<String> = merged_want
            .iter()
            .filter(|(_, n)| n.want != Want::Dir)
            .map(|(p, _)| p.clone())
            .collect();
        let got: Vec<String> = non_dirs(&merged.0)
            .into_iter()
            // eStargz's own entries, should stargz ever show them.
            .filter(|p| {
                !matches!(
                    p.as_str(),
                    "stargz.index.json" | ".no.prefetch.landmark" | ".prefetch.landmark"
                )
            })
            .collect();
        assert_eq!(got, want_non_dirs, "merged tree");
        for (path, node) in &merged_want {
            check_node(&merged.0.join(path), node, &format!("merged {path}"));
        }
        assert!(!merged.0.join("etc/motd").exists());
        assert!(!merged.0.join("usr/share/doc/busybox").exists());
    }
    let _ = daemon.run(CTR, &["snapshots", "--snapshotter", "stargz", "rm", &key]);

    // Reading pulled the rest by range too, and still nothing through containerd.
    let requests = proxy.requests();
    let mut layer_bytes = 0;
    for (digest, _) in &layers {
        for r in layer_blob_requests(&requests, digest) {
            assert!(
                r.method != "GET" || r.range.is_some(),
                "{digest}: GET without Range: {r:?}"
            );
            layer_bytes += r.bytes_sent;
        }
    }
    let ranged = requests.iter().filter(|r| r.range.is_some()).count();
    eprintln!(
        "{} requests through the proxy, {ranged} with Range, {layer_bytes} layer bytes; {:.1?} so far",
        requests.len(),
        started.elapsed()
    );
    let content = daemon.ok(CTR, &["content", "ls"]);
    for (digest, _) in &layers {
        assert!(
            !content_digests(&content).contains(digest),
            "{digest} downloaded:\n{content}"
        );
    }

    // containerd first, then stargz (which unmounts its FUSE layers on SIGTERM).
    daemon.terminate();
    let left = stargz.shutdown();
    assert_eq!(left, Vec::<String>::new(), "stargz left mounts behind");
    assert_eq!(mounts_under(env.dir.path()), Vec::<String>::new());
    eprintln!("done in {:.1?}", started.elapsed());
}
