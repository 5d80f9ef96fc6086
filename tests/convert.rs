//! `strata convert`: eStargz conversion of images in the store, checked by Strata's reader
//! and by plain `tar -xzf`.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

fn strata(root: &Path, args: &[&str]) -> Output {
    Command::new(STRATA)
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "strata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn blob(root: &Path, digest: &str) -> std::path::PathBuf {
    root.join("content/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn json(root: &Path, digest: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(blob(root, digest)).unwrap()).unwrap()
}

/// path → (mode, uid, gid, mtime, size, link target, content digest) of an extracted tree.
fn tree(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let link = std::fs::read_link(&p)
                .map(|l| l.display().to_string())
                .unwrap_or_default();
            let content = if m.is_file() {
                strata_formats::Digest::of(&std::fs::read(&p).unwrap()).to_string()
            } else {
                String::new()
            };
            let mtime = if m.is_dir() { 0 } else { m.mtime() }; // tar restores dir times last; skip
            out.insert(
                rel,
                format!(
                    "{:o} {}:{} {} {} {} {} nlink={}",
                    m.mode(),
                    m.uid(),
                    m.gid(),
                    mtime,
                    m.len() * u64::from(!m.is_dir()),
                    link,
                    content,
                    if m.is_dir() { 0 } else { m.nlink() }
                ),
            );
            if m.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

fn extract(layer: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let st = Command::new("tar")
        .args(["--xattrs", "--numeric-owner", "-xzf"])
        .arg(layer)
        .arg("-C")
        .arg(into)
        .status()
        .unwrap();
    assert!(st.success(), "tar -xzf {}", layer.display());
}

#[test]
fn converted_layers_unpack_like_the_source_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let layout = dir.path().join("layout");
    strata_testdata::write_oci_layout(
        &layout,
        &[(
            "docker.io/library/sample:1.0",
            strata_testdata::sample_image(9).into(),
        )],
    )
    .unwrap();
    ok(strata(
        &root,
        &["image", "import", layout.to_str().unwrap()],
    ));
    let new_digest = ok(strata(
        &root,
        &[
            "convert",
            "--chunk-size",
            "65536",
            "docker.io/library/sample:1.0",
            "sample:esgz",
        ],
    ));
    let checked = ok(strata(&root, &["convert", "--check", "sample:esgz"]));
    assert_eq!(
        checked.lines().filter(|l| l.starts_with("ok ")).count(),
        3,
        "{checked}"
    );

    let src_manifest = {
        let out = ok(strata(&root, &["image", "ls"]));
        let line = out
            .lines()
            .find(|l| l.starts_with("docker.io/library/sample:1.0"))
            .unwrap()
            .to_owned();
        let d = line.split_whitespace().nth(2).unwrap().to_owned();
        json(&root, &d)
    };
    let new_manifest = json(&root, new_digest.trim());
    assert_eq!(
        new_manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let config = json(&root, new_manifest["config"]["digest"].as_str().unwrap());
    let src_layers = src_manifest["layers"].as_array().unwrap();
    let new_layers = new_manifest["layers"].as_array().unwrap();
    assert_eq!(src_layers.len(), new_layers.len());
    for (i, (s, n)) in src_layers.iter().zip(new_layers).enumerate() {
        let ann = &n["annotations"];
        assert!(
            ann["containerd.io/snapshot/stargz/toc.digest"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
        let size: u64 = ann["io.containers.estargz.uncompressed-size"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        // The config's diffID is the sha256 of the uncompressed eStargz stream.
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "gzip -dc {} | sha256sum",
                blob(&root, n["digest"].as_str().unwrap()).display()
            ))
            .output()
            .unwrap();
        let sum = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"][i].as_str().unwrap(),
            format!("sha256:{}", sum.split_whitespace().next().unwrap())
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "gzip -dc {} | wc -c",
                blob(&root, n["digest"].as_str().unwrap()).display()
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout)
                .unwrap()
                .trim()
                .parse::<u64>()
                .unwrap(),
            size
        );

        // Plain tar sees the same tree, plus the landmark and the TOC.
        let a = dir.path().join(format!("src{i}"));
        let b = dir.path().join(format!("new{i}"));
        extract(&blob(&root, s["digest"].as_str().unwrap()), &a);
        extract(&blob(&root, n["digest"].as_str().unwrap()), &b);
        let mut tb = tree(&b);
        assert!(tb.remove("stargz.index.json").is_some());
        assert!(
            tb.remove(".no.prefetch.landmark").is_some()
                || tb.remove(".prefetch.landmark").is_some()
        );
        assert_eq!(tree(&a), tb, "layer {i}");
    }

    // Converting an eStargz image again passes every layer through unchanged.
    let again = strata(&root, &["convert", "sample:esgz", "sample:esgz2"]);
    let err = String::from_utf8_lossy(&again.stderr).into_owned();
    assert!(
        again.status.success() && err.matches("already eStargz, kept").count() == 3,
        "{err}"
    );

    // A source that is not eStargz fails the check, naming the layer.
    let out = strata(
        &root,
        &["convert", "--check", "docker.io/library/sample:1.0"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("not an eStargz layer"));
}

#[test]
fn zstd_and_prioritized_conversion_verify() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let layout = dir.path().join("layout");
    strata_testdata::write_oci_layout(
        &layout,
        &[("sample:1", strata_testdata::sample_multiplatform(3).into())],
    )
    .unwrap();
    ok(strata(
        &root,
        &["image", "import", layout.to_str().unwrap()],
    ));
    ok(strata(
        &root,
        &["convert", "--zstd", "sample:1", "sample:zstd"],
    ));
    let checked = ok(strata(&root, &["convert", "--check", "sample:zstd"]));
    assert!(
        checked.lines().count() >= 6 && checked.lines().all(|l| l.starts_with("ok ")),
        "{checked}"
    );
    let list = dir.path().join("prio.txt");
    std::fs::write(&list, "# first\n/bin/sh\netc/os-release\n").unwrap();
    ok(strata(
        &root,
        &[
            "convert",
            "--prioritize-from",
            list.to_str().unwrap(),
            "sample:1",
            "sample:prio",
        ],
    ));
    ok(strata(&root, &["convert", "--check", "sample:prio"]));
}

#[test]
fn registry_to_registry_conversion() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    let registry = strata_testdata::registry::RegistryServer::start().unwrap();
    let layout = dir.path().join("layout");
    // Multi-platform: the pull on the way fetches the host's manifest only, and the
    // converted index lists the manifests that were present.
    strata_testdata::write_oci_layout(
        &layout,
        &[("sample:1", strata_testdata::sample_multiplatform(4).into())],
    )
    .unwrap();
    ok(strata(&a, &["image", "import", layout.to_str().unwrap()]));
    let src = format!("{}/conv/sample:1", registry.host());
    let dst = format!("{}/conv/sample:1-esgz", registry.host());
    ok(strata(&a, &["push", "--plain-http", &src, "sample:1"]));
    // SRC is not in root b: convert pulls it, converts, and pushes DST.
    let converted = ok(strata(
        &b,
        &["convert", "--plain-http", "--push", &src, &dst],
    ));
    let pulled = ok(strata(&c, &["pull", "--plain-http", &dst]));
    assert_eq!(converted.trim(), pulled.trim());
    let checked = ok(strata(&c, &["convert", "--check", &dst]));
    assert_eq!(
        checked.lines().filter(|l| l.starts_with("ok ")).count(),
        3,
        "{checked}"
    );
    let index = json(&c, converted.trim());
    assert_eq!(
        index["manifests"].as_array().map(Vec::len),
        Some(1),
        "{index}"
    );
}

fn failed(out: Output) -> String {
    assert!(
        !out.status.success(),
        "strata unexpectedly succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn bad_input_is_rejected_naming_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let layout = dir.path().join("layout");
    strata_testdata::write_oci_layout(
        &layout,
        &[(
            "docker.io/library/sample:1.0",
            strata_testdata::sample_image(4).into(),
        )],
    )
    .unwrap();
    ok(strata(
        &root,
        &["image", "import", layout.to_str().unwrap()],
    ));
    let src = "docker.io/library/sample:1.0";

    // Out-of-range levels: the range of the chosen compression, before any work.
    let e = failed(strata(&root, &["convert", "--level", "42", src, "x:1"]));
    assert!(
        e.contains("'42'") && e.contains("gzip levels are 0–9"),
        "{e}"
    );
    let e = failed(strata(
        &root,
        &["convert", "--zstd", "--level", "0", src, "x:1"],
    ));
    assert!(
        e.contains("'0'") && e.contains("zstd levels are 1–22"),
        "{e}"
    );

    // A zero chunk size is a usage error, not a broken source.
    let e = failed(strata(&root, &["convert", "--chunk-size", "0", src, "x:1"]));
    assert!(
        e.contains("--chunk-size") && !e.contains("invalid source tar"),
        "{e}"
    );

    // A prioritized path the image does not have is named; no image is recorded.
    let e = failed(strata(
        &root,
        &["convert", "--prioritize", "/usr/bin/pyhton3", src, "x:1"],
    ));
    assert!(e.contains("\"/usr/bin/pyhton3\""), "{e}");
    let images = ok(strata(&root, &["image", "ls", "-q"]));
    assert!(!images.contains("x:1"), "{images}");

    // A typo'd local name is not pulled from Docker Hub: it is reported, with how to pull.
    let e = failed(strata(&root, &["convert", "sampel:1.0", "x:1"]));
    assert!(
        e.contains("\"sampel:1.0\" is not in the store")
            && e.contains("--pull")
            && !e.contains("pulling"),
        "{e}"
    );

    // The short name of a local image finds it without pulling.
    let out = strata(&root, &["convert", "sample:1.0", "x:1"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("pulling"), "{stderr}");
}
