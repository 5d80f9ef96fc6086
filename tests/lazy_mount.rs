//! `strata mount --lazy`: an image converted to eStargz and pushed to a registry is mounted
//! from the registry over FUSE + overlay without downloading it; its tree equals the tree
//! `strata mount` shows after a full pull and unpack of the original image; SIGTERM
//! unmounts everything and reports the bytes fetched; a second mount reads its chunks from
//! the chunk cache (with FUSE passthrough for files it has whole); a same-size flip in the
//! cache's files is fetched again, never served. Needs root and the registry.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strata_testdata::RegistryServer;
use strata_testdata::file_tree::{FileTree, Mtimes};
use support::{Env, STRATA, stop_child};

fn mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_str().unwrap();
    mounts.lines().any(|l| l.split(' ').nth(4) == Some(p))
}

fn mounts_under(path: &Path) -> Vec<String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_str().unwrap();
    mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(p))
        .map(str::to_owned)
        .collect()
}

#[test]
fn lazily_mounted_estargz_image_equals_the_unpacked_original() {
    let env = Env::new();
    let registry = RegistryServer::start().unwrap();
    let image = strata_testdata::sample_image(11).build().unwrap();
    registry.push_image("lazy/app", "1", &image).unwrap();
    let source = format!("{}/lazy/app:1", registry.host());
    let converted = format!("{}/lazy/app:esgz", registry.host());

    // The reference: the original image pulled, unpacked and mounted.
    env.strata_ok("full", &["pull", "--plain-http", &source]);
    env.strata_ok(
        "full",
        &["convert", "--plain-http", "--push", &source, &converted],
    );
    let full_dir = env.path("full-mnt");
    std::fs::create_dir(&full_dir).unwrap();
    let full_dir = full_dir.canonicalize().unwrap();
    env.strata_ok("full", &["mount", &source, full_dir.to_str().unwrap()]);
    let reference = FileTree::capture(&full_dir);
    env.strata_ok("full", &["umount", full_dir.to_str().unwrap()]);
    let reference = reference.unwrap();

    // The lazy mount, from a fresh root that has nothing; then again, from its chunk cache,
    // with cached files read through FUSE passthrough.
    let (lazy, stderr) = lazy_capture(&env, &converted, "lazy-mnt", &[]);
    let diff = reference.diff_with(&lazy, Mtimes::ExceptDirs);
    assert!(
        diff.is_empty(),
        "lazy tree differs from the unpacked one:\n{}\n{stderr}",
        diff.join("\n")
    );
    assert!(stderr.contains("at mount: fetched"), "{stderr}");
    let (again, stderr2) = lazy_capture(&env, &converted, "lazy-mnt2", &["--passthrough"]);
    assert!(
        reference.diff_with(&again, Mtimes::ExceptDirs).is_empty(),
        "{stderr2}"
    );
    let first = requests_at_unmount(&stderr);
    let second = requests_at_unmount(&stderr2);
    assert!(
        second < first,
        "the second mount reads chunks from the cache: {first} then {second} requests\n{stderr2}"
    );
    // The first mount read every file whole, so with passthrough the kernel reads them all
    // from the cache's files and the daemon serves no chunk.
    assert!(
        stderr.contains("chunk cache: ") && !stderr.contains(" 0 stored"),
        "{stderr}"
    );
    assert!(
        stderr2.contains("chunk cache: 0 hits, 0 misses"),
        "{stderr2}"
    );
}

/// The range requests `strata mount --lazy` reported at unmount.
fn requests_at_unmount(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("at unmount: fetched"))
        .unwrap_or_else(|| panic!("{stderr}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words.iter().position(|w| *w == "range").unwrap();
    words[i - 1].parse().unwrap()
}

/// Runs `strata mount --lazy` on a new directory `name` (root `lazy`), captures the tree,
/// SIGTERMs it and checks everything is unmounted; returns the tree and its stderr.
fn lazy_capture(env: &Env, reference: &str, name: &str, extra: &[&str]) -> (FileTree, String) {
    let dir = env.path(name);
    std::fs::create_dir(&dir).unwrap();
    let dir = dir.canonicalize().unwrap();
    let log = env.path(&format!("{name}.log"));
    let mut child = Command::new(STRATA)
        .arg("--root")
        .arg(env.path("lazy"))
        .args(["mount", "--lazy", "--plain-http"])
        .args(extra)
        .args([reference, dir.to_str().unwrap()])
        .env("DOCKER_CONFIG", env.dir.path())
        .env("STRATA_HOSTS_DIR", env.path("no-hosts"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !mounted(&dir) {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "strata mount --lazy exited ({status}): {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no mount after 30 s: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let tree = FileTree::capture(&dir);
    stop_child(&mut child);
    let stderr = std::fs::read_to_string(&log).unwrap();
    let tree = tree.unwrap();
    assert!(
        stderr.contains(&format!("unmounted {}", dir.display())),
        "{stderr}"
    );
    assert!(!mounted(&dir), "{} still mounted", dir.display());
    let left = mounts_under(&env.path("lazy"));
    assert!(left.is_empty(), "mounts left under the root: {left:?}");
    let tmp = env.path("lazy/tmpmounts");
    assert!(
        !tmp.exists() || std::fs::read_dir(&tmp).unwrap().next().is_none(),
        "work directories left"
    );
    (tree, stderr)
}

#[test]
fn a_layer_that_is_not_estargz_is_refused_naming_it() {
    let env = Env::new();
    let registry = RegistryServer::start().unwrap();
    let image = strata_testdata::sample_image(12).build().unwrap();
    registry.push_image("lazy/plain", "1", &image).unwrap();
    let reference = format!("{}/lazy/plain:1", registry.host());
    let dir = env.path("mnt");
    std::fs::create_dir(&dir).unwrap();
    let out = env.strata(
        "r",
        &[
            "mount",
            "--lazy",
            "--plain-http",
            &reference,
            dir.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("layer {} is not eStargz", image.layers[0].digest)),
        "{stderr}"
    );
    assert!(!mounted(&dir.canonicalize().unwrap()));
}

/// Flips one bit in the middle of every file under `dir` (keeping sizes), as a power cut
/// or a bad disk can; returns how many.
fn flip_every_file(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            n += flip_every_file(&path);
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

#[test]
fn same_size_damage_in_the_chunk_cache_is_fetched_again_never_served() {
    let env = Env::new();
    let registry = RegistryServer::start().unwrap();
    let image = strata_testdata::sample_image(13).build().unwrap();
    registry.push_image("lazy/flip", "1", &image).unwrap();
    let source = format!("{}/lazy/flip:1", registry.host());
    let converted = format!("{}/lazy/flip:esgz", registry.host());
    // Small chunks, so the larger files are assembled from several for passthrough.
    env.strata_ok(
        "conv",
        &[
            "convert",
            "--plain-http",
            "--push",
            "--chunk-size",
            "65536",
            &source,
            &converted,
        ],
    );
    // From a fresh root every byte comes from the registry, checked against the TOC.
    let (fresh, stderr) = lazy_capture(&env, &converted, "m1", &[]);
    assert!(!stderr.contains(" 0 stored"), "{stderr}");
    // From the cache, with passthrough: multi-chunk files get assembled copies.
    let (again, stderr) = lazy_capture(&env, &converted, "m2", &["--passthrough"]);
    assert!(
        fresh.diff_with(&again, Mtimes::ExceptDirs).is_empty(),
        "{stderr}"
    );
    let cache = env.path("lazy/cache/chunks");
    let copies = cache.join("files");

    // The assembled copies damaged, the chunks intact: the copies are checked against
    // the chunks before the kernel gets them, and rebuilt.
    let damaged = flip_every_file(&copies);
    assert!(damaged > 0, "no assembled copies: {stderr}");
    let (tree, stderr) = lazy_capture(&env, &converted, "m3", &["--passthrough"]);
    let diff = fresh.diff_with(&tree, Mtimes::ExceptDirs);
    assert!(diff.is_empty(), "{}\n{stderr}", diff.join("\n"));
    assert!(
        stderr.contains(&format!("{damaged} found corrupt and dropped")),
        "{stderr}"
    );

    // Everything damaged, chunks too: fetched again from the registry.
    let chunks = flip_every_file(&cache.join("sha256"));
    assert!(chunks > 0 && flip_every_file(&copies) > 0);
    let (tree, stderr) = lazy_capture(&env, &converted, "m4", &["--passthrough"]);
    let diff = fresh.diff_with(&tree, Mtimes::ExceptDirs);
    assert!(diff.is_empty(), "{}\n{stderr}", diff.join("\n"));
    assert!(requests_at_unmount(&stderr) > 0, "{stderr}");
    assert!(!stderr.contains(" 0 found corrupt"), "{stderr}");
}
