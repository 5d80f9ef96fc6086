//! eStargz interoperability with the reference tools, both directions, through a real
//! registry (Debian's distribution 2.8 on loopback) and a private containerd 1.6:
//!
//! * `ctr-remote image convert` (stargz-snapshotter 0.12) makes eStargz / zstd:chunked
//!   images, `ctr image push` uploads them, and `strata pull` + `strata convert --check`
//!   must verify every TOC and chunk.
//! * `strata convert` makes eStargz / zstd:chunked images, `strata push` uploads them,
//!   `ctr image pull` must unpack them (containerd's own decompression, tar and diffID
//!   checks) into the same per-layer trees as the original gzip image, and `ctr-remote`
//!   must read from every layer the TOC digest the manifest's annotation names, and a TOC
//!   listing the same entries (offsets aside) as its own conversion of the original.
//!
//! Needs containerd, ctr, ctr-remote (scripts/setup.sh installs them) and root (containerd
//! unpacks through overlayfs mounts): the tests are `#[ignore]`d, `make test` runs them, and
//! they fail when a tool or root is missing (`strata_testdata::host`).
//! The private containerd never touches /run/containerd or /var/lib/containerd.

use std::fs;
use std::path::Path;

use strata_testdata::containerd::{self, Containerd};
use strata_testdata::registry::RegistryServer;

mod support;

use support::mounts::mounts_under;
use support::{CTR, CTR_REMOTE, Env, chain_ids};

/// containerd namespace of every ctr call (private daemon anyway).
const NS: &str = "strata-interop";
const TOC_DIGEST: &str = "containerd.io/snapshot/stargz/toc.digest";
const UNCOMPRESSED_SIZE: &str = "io.containers.estargz.uncompressed-size";

/// Fails the test unless the reference tools are installed and this is root (containerd
/// unpacks through overlayfs mounts).
fn require_tools() {
    containerd::require(&[CTR_REMOTE], "containerd unpacks through overlayfs mounts");
}

/// A private containerd in `dir`, every client call in namespace [`NS`].
fn start_containerd(dir: &Path) -> Containerd {
    Containerd::start(dir, NS, "").unwrap()
}

/// The layers of a manifest, checked to carry eStargz annotations; returns
/// (digest, media type, TOC digest) per layer.
fn estargz_layers(manifest: &serde_json::Value, zstd: bool) -> Vec<(String, String, String)> {
    let layers = manifest["layers"]
        .as_array()
        .unwrap_or_else(|| panic!("no layers: {manifest}"));
    assert_eq!(layers.len(), 3, "the sample image has 3 layers: {manifest}");
    layers
        .iter()
        .map(|l| {
            let media_type = l["mediaType"].as_str().unwrap().to_owned();
            let want = if zstd {
                "application/vnd.oci.image.layer.v1.tar+zstd"
            } else {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            };
            assert_eq!(media_type, want, "{l}");
            let toc = l["annotations"][TOC_DIGEST]
                .as_str()
                .unwrap_or_else(|| panic!("layer without {TOC_DIGEST}: {l}"))
                .to_owned();
            assert!(toc.starts_with("sha256:") && toc.len() == 71, "{l}");
            let size = l["annotations"][UNCOMPRESSED_SIZE]
                .as_str()
                .unwrap_or_else(|| panic!("no {UNCOMPRESSED_SIZE}: {l}"));
            assert!(size.parse::<u64>().is_ok_and(|n| n > 0), "{l}");
            (l["digest"].as_str().unwrap().to_owned(), media_type, toc)
        })
        .collect()
}

/// ctr-remote → Strata: images converted by stargz-snapshotter's converter, pushed by ctr,
/// pulled and fully verified (TOC digest + every chunk) by Strata.
#[test]
#[ignore = "needs root, containerd, ctr and ctr-remote: make test runs it"]
fn ctr_remote_estargz_verifies_in_strata() {
    require_tools();
    let env = Env::new();
    let registry = RegistryServer::start().unwrap();
    let host = registry.host();
    let image = strata_testdata::sample_image(21).build().unwrap();
    registry.push_image("interop/src", "1", &image).unwrap();
    let src = format!("{host}/interop/src:1");

    let daemon = start_containerd(&env.path("containerd"));
    daemon.ok(CTR, &["image", "pull", "--plain-http", &src]);

    // (flag, repository, zstd?) — small chunks so files span several chunks.
    let variants = [
        ("--estargz", "interop/esgz", false),
        ("--zstdchunked", "interop/zstdchunked", true),
    ];
    for (flag, repo, zstd) in variants {
        let dst = format!("{host}/{repo}:1");
        daemon.ok(
            CTR_REMOTE,
            &[
                "image",
                "convert",
                flag,
                "--oci",
                "--estargz-chunk-size",
                "65536",
                &src,
                &dst,
            ],
        );
        daemon.ok(CTR, &["image", "push", "--plain-http", &dst]);
        let pushed = daemon.image_digest(&dst);

        let root = format!("strata-{}", repo.replace('/', "-"));
        let pulled = env.strata_ok(&root, &["pull", "--plain-http", &dst]);
        assert_eq!(
            pulled.trim(),
            pushed,
            "{dst}: strata pulled the manifest ctr pushed"
        );
        let manifest = env.json(&root, &pushed);
        let layers = estargz_layers(&manifest, zstd);
        assert_eq!(
            env.json(&root, manifest["config"]["digest"].as_str().unwrap())["rootfs"]["diff_ids"]
                .as_array()
                .unwrap()
                .len(),
            3
        );

        let checked = env.strata_ok(&root, &["convert", "--check", &dst]);
        let oks: Vec<&str> = checked.lines().filter(|l| l.starts_with("ok ")).collect();
        assert_eq!(
            oks.len(),
            layers.len(),
            "{dst}: one ok per layer:\n{checked}"
        );
        for (digest, _, _) in &layers {
            assert!(
                oks.iter()
                    .any(|l| l.contains(digest.trim_start_matches("sha256:").get(..12).unwrap())),
                "{dst}: {digest} not ok:\n{checked}"
            );
        }
        // Strata's own content verification of what it pulled.
        env.strata_ok(&root, &["content", "verify"]);
        // Already eStargz: Strata's converter keeps every ctr-remote layer as is.
        let again = env.strata(&root, &["convert", &dst, "kept:1"]);
        let stderr = String::from_utf8_lossy(&again.stderr).into_owned();
        assert!(
            again.status.success() && stderr.matches("already eStargz, kept").count() == 3,
            "{dst}: {stderr}"
        );
    }
    drop(daemon);
    assert_eq!(mounts_under(env.dir.path()), Vec::<String>::new());
}

/// Strata → containerd: images converted and pushed by Strata, pulled and unpacked by
/// containerd (decompression, tar and diffID checks) into the same per-layer trees as the
/// original gzip image; ctr-remote reads each layer's TOC out of the blob, with the
/// annotated digest and the same entries as ctr-remote's own conversion of the original.
#[test]
#[ignore = "needs root, containerd, ctr and ctr-remote: make test runs it"]
fn strata_estargz_unpacks_in_containerd() {
    require_tools();
    let env = Env::new();
    let registry = RegistryServer::start().unwrap();
    let host = registry.host();
    let layout = env.path("layout");
    strata_testdata::write_oci_layout(
        &layout,
        &[(
            "docker.io/library/sample:1.0",
            strata_testdata::sample_image(22).into(),
        )],
    )
    .unwrap();
    env.strata_ok("a", &["image", "import", layout.to_str().unwrap()]);
    let src = format!("{host}/interop/strata-src:1");
    env.strata_ok(
        "a",
        &["push", "--plain-http", &src, "docker.io/library/sample:1.0"],
    );

    let daemon = start_containerd(&env.path("containerd"));
    // The original gzip image, unpacked by containerd: the reference trees.
    daemon.ok(CTR, &["image", "pull", "--plain-http", &src]);
    let src_manifest = daemon.json(&daemon.image_digest(&src));
    let src_trees = layer_trees(
        &daemon,
        &daemon.json(src_manifest["config"]["digest"].as_str().unwrap()),
    );

    let variants: [(&[&str], &str, &str, bool); 2] = [
        (&[], "--estargz", "interop/strata-esgz", false),
        (&["--zstd"], "--zstdchunked", "interop/strata-zstd", true),
    ];
    for (strata_flags, ctr_remote_flag, repo, zstd) in variants {
        let local = format!("sample:{}", repo.rsplit('/').next().unwrap());
        let mut args = vec!["convert", "--chunk-size", "65536"];
        args.extend_from_slice(strata_flags);
        args.extend_from_slice(&["docker.io/library/sample:1.0", &local]);
        let converted = env.strata_ok("a", &args);
        let converted = converted.trim();
        let manifest = env.json("a", converted);
        let layers = estargz_layers(&manifest, zstd);

        let dst = format!("{host}/{repo}:1");
        let pushed = env.strata_ok("a", &["push", "--plain-http", &dst, &local]);
        assert_eq!(pushed.trim(), converted);

        // Pull + unpack (overlayfs snapshotter): containerd decompresses each layer,
        // applies the tar and checks the result against the config's diff_ids
        // ("wrong diff id calculated on extraction" otherwise).
        daemon.ok(CTR, &["image", "pull", "--plain-http", &dst]);
        assert_eq!(daemon.image_digest(&dst), converted);
        let check = daemon.ok(CTR, &["image", "check"]);
        let line = check
            .lines()
            .find(|l| l.starts_with(&dst))
            .unwrap_or_else(|| panic!("{dst} not in:\n{check}"));
        // Config + 3 layers, all present.
        assert!(line.contains(" complete (4/4) "), "{line}");
        // containerd labels each layer blob with the diffID it computed and verified.
        let config = daemon.json(manifest["config"]["digest"].as_str().unwrap());
        let diff_ids = diff_ids(&config);
        let info = daemon.ok(CTR, &["content", "ls"]);
        for ((digest, _, _), diff_id) in layers.iter().zip(&diff_ids) {
            let row = info
                .lines()
                .find(|l| l.starts_with(digest.as_str()))
                .unwrap_or_else(|| panic!("{digest} not in:\n{info}"));
            assert!(
                row.contains(&format!("containerd.io/uncompressed={diff_id}")),
                "{row}"
            );
        }
        // The unpacked layers hold what the original's do, plus eStargz's landmark (and TOC).
        let trees = layer_trees(&daemon, &config);
        for (i, (want, mut got)) in src_trees.iter().zip(trees).enumerate() {
            // gzip eStargz keeps its TOC in a tar entry; zstd:chunked in a skippable frame
            // (like ctr-remote's: no tar entry).
            assert_eq!(
                got.remove("stargz.index.json").is_some(),
                !zstd,
                "{dst} layer {i}: TOC tar entry"
            );
            let landmarks = [".no.prefetch.landmark", ".prefetch.landmark"];
            assert!(
                landmarks
                    .iter()
                    .filter(|l| got.remove(**l).is_some())
                    .count()
                    == 1,
                "{dst} layer {i}: no landmark"
            );
            assert_eq!(want, &got, "{dst} layer {i}: unpacked trees differ");
        }

        // ctr-remote finds each layer's TOC from its footer and digests it: it must be the
        // digest the manifest's annotation names. Its parse of the TOC must list the same
        // entries (offsets aside) as its own conversion of the original image.
        let reference = format!("ref-{repo}:1").replace('/', "-");
        daemon.ok(
            CTR_REMOTE,
            &[
                "image",
                "convert",
                ctr_remote_flag,
                "--oci",
                "--estargz-chunk-size",
                "65536",
                &src,
                &reference,
            ],
        );
        let ref_manifest = daemon.json(&daemon.image_digest(&reference));
        let ref_layers = estargz_layers(&ref_manifest, zstd);
        for ((digest, _, toc), (ref_digest, _, _)) in layers.iter().zip(&ref_layers) {
            let toc_args = |dump: bool, d: &str| {
                let mut a = vec!["image", "get-toc-digest"];
                if dump {
                    a.push("--dump-toc");
                }
                if zstd {
                    a.push("--zstdchunked");
                }
                a.push(d);
                daemon.ok(CTR_REMOTE, &a)
            };
            assert_eq!(
                toc_args(false, digest).trim(),
                toc,
                "{dst}: ctr-remote's TOC digest of {digest}"
            );
            let ours = toc_entries(&toc_args(true, digest));
            let theirs = toc_entries(&toc_args(true, ref_digest));
            assert!(ours.len() > 3, "{dst} {digest}: {ours:?}");
            assert_eq!(
                ours, theirs,
                "{dst}: TOC of {digest} (Strata) vs {ref_digest} (ctr-remote), offsets aside"
            );
        }
    }
    drop(daemon);
    assert_eq!(mounts_under(env.dir.path()), Vec::<String>::new());
}

/// A TOC's entries without their offsets (which depend on compression).
fn toc_entries(dump: &str) -> Vec<serde_json::Value> {
    let toc: serde_json::Value =
        serde_json::from_str(dump).unwrap_or_else(|e| panic!("{e}: {dump}"));
    assert_eq!(toc["version"], 1, "{dump}");
    toc["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let mut e = e.clone();
            let obj = e.as_object_mut().unwrap();
            obj.remove("offset");
            obj.remove("innerOffset");
            e
        })
        .collect()
}

fn diff_ids(config: &serde_json::Value) -> Vec<String> {
    config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect()
}

/// The unpacked trees of an image's layers (bottom first), read from the overlayfs
/// snapshotter's per-layer directories through a read-only view of the top layer.
fn layer_trees(daemon: &Containerd, config: &serde_json::Value) -> Vec<Tree> {
    let chain = chain_ids(&diff_ids(config));
    let top = chain.last().unwrap();
    // Every layer is a committed snapshot, named by its chain ID.
    let snapshots = daemon.ok(CTR, &["snapshots", "ls"]);
    for chain_id in &chain {
        assert!(
            snapshots
                .lines()
                .any(|l| l.starts_with(chain_id.as_str()) && l.contains("Committed")),
            "no committed snapshot {chain_id}:\n{snapshots}"
        );
    }
    let key = format!("view-{}", &top[7..19]);
    let out = daemon.ok(CTR, &["snapshots", "view", "--mounts", &key, top]);
    let mounts: serde_json::Value = serde_json::from_str(&out).unwrap();
    // ctr made the view under a lease that ended with it: usually gone already.
    let _ = daemon.run(CTR, &["snapshots", "rm", &key]);
    let options: Vec<&str> = mounts[0]["Options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap())
        .collect();
    let lower = options
        .iter()
        .find_map(|o| o.strip_prefix("lowerdir="))
        .unwrap_or_else(|| panic!("{mounts}"));
    let mut dirs: Vec<&str> = lower.split(':').collect();
    dirs.reverse(); // overlayfs lists the top layer first
    assert_eq!(dirs.len(), chain.len(), "{mounts}");
    dirs.iter().map(|d| tree(Path::new(d))).collect()
}

type Tree = std::collections::BTreeMap<String, String>;

/// path → type/mode, owner, size, mtime (not for directories), link target, device,
/// content digest, link count and xattrs of everything under `dir`.
fn tree(dir: &Path) -> Tree {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
    let mut out = Tree::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            let m = fs::symlink_metadata(&p).unwrap();
            let link = fs::read_link(&p)
                .map(|l| l.display().to_string())
                .unwrap_or_default();
            let content = if m.is_file() {
                strata_testdata::sha256_digest(&fs::read(&p).unwrap())
            } else {
                String::new()
            };
            // Directory times depend on apply order; containerd makes overlayfs whiteouts
            // (0:0 character devices) without setting their times.
            let whiteout = m.file_type().is_char_device() && m.rdev() == 0;
            let mtime = if m.is_dir() || whiteout { 0 } else { m.mtime() };
            let size = if m.is_dir() { 0 } else { m.len() };
            let nlink = if m.is_dir() { 0 } else { m.nlink() };
            out.insert(
                rel,
                format!(
                    "{:o} {}:{} size={size} mtime={mtime} link={link} rdev={} {content} nlink={nlink} xattrs={:?}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    m.rdev(),
                    xattrs(&p)
                ),
            );
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

fn xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut names = vec![0u8; 64 * 1024];
    let n = rustix::fs::llistxattr(path, &mut names[..]).unwrap_or(0);
    let mut out: Vec<(String, Vec<u8>)> = names[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|name| {
            let name = String::from_utf8_lossy(name).into_owned();
            let mut value = vec![0u8; 64 * 1024];
            let len = rustix::fs::lgetxattr(path, name.as_str(), &mut value[..]).unwrap_or(0);
            value.truncate(len);
            (name, value)
        })
        .collect();
    out.sort();
    out
}
