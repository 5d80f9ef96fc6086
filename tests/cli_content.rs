//! `strata content …` as a user runs it: a real process, real files, real signals.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

fn strata(root: &Path, args: &[&str]) -> Output {
    Command::new(STRATA)
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("run strata")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "strata failed: {}\nstdout: {}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    assert!(out.status.success());
    let s = String::from_utf8(out.stdout).unwrap();
    format!("sha256:{}", s.split_whitespace().next().unwrap())
}

fn random_file(dir: &Path, name: &str, len: u64, seed: u64) -> PathBuf {
    let p = dir.join(name);
    strata_testdata::random_file(&p, len, seed).unwrap();
    p
}

fn blob_count(root: &Path) -> usize {
    std::fs::read_dir(root.join("content/blobs/sha256")).map_or(0, |d| d.count())
}

fn ingest_count(root: &Path) -> usize {
    std::fs::read_dir(root.join("content/ingest")).map_or(0, |d| d.count())
}

#[test]
fn ingest_of_256_mib_prints_the_same_digest_as_sha256sum() {
    let dir = tempfile::tempdir().unwrap();
    let file = random_file(dir.path(), "big.bin", 256 << 20, 7);
    let root = dir.path().join("root");
    let printed = ok(strata(
        &root,
        &["content", "ingest", file.to_str().unwrap()],
    ));
    assert_eq!(printed.trim(), sha256sum(&file));
    let listed = ok(strata(&root, &["content", "ls", "-q"]));
    assert_eq!(listed.trim(), printed.trim());
    let verified = ok(strata(&root, &["content", "verify"]));
    assert!(verified.starts_with("ok "), "{verified}");
}

#[test]
fn sigkilled_ingest_resumes_and_completes_with_right_digest() {
    let dir = tempfile::tempdir().unwrap();
    let file = random_file(dir.path(), "big.bin", 512 << 20, 11);
    let want = sha256sum(&file);
    // The kill must land mid-ingest; on a very fast machine the first try may finish
    // first, so try a few times with fresh roots.
    for attempt in 0..5 {
        let root = dir.path().join(format!("root{attempt}"));
        let mut child = Command::new(STRATA)
            .arg("--root")
            .arg(&root)
            .args(["content", "ingest", file.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let ingest = root.join("content/ingest");
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut killed_at = None;
        while Instant::now() < deadline {
            if let Some(len) = data_len(&ingest).filter(|&l| l >= 16 << 20) {
                child.kill().unwrap(); // SIGKILL
                killed_at = Some(len);
                break;
            }
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        child.wait().unwrap();
        let Some(_) = killed_at else { continue };
        if blob_count(&root) > 0 {
            continue; // committed just before the kill landed
        }
        // The interrupted ingest is visible with its offset…
        let active = ok(strata(&root, &["content", "active"]));
        let offset: u64 = active
            .lines()
            .nth(1)
            .expect("one active ingest")
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert!(offset > 0, "{active}");
        // …and the same command resumes it from there.
        let out = strata(
            &root,
            &[
                "--log-level",
                "info",
                "content",
                "ingest",
                file.to_str().unwrap(),
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(ok(out).trim(), want);
        assert!(
            stderr.contains("resuming ingest"),
            "resumed, not restarted: {stderr}"
        );
        assert_eq!(blob_count(&root), 1);
        assert_eq!(ingest_count(&root), 0);
        assert_eq!(ok(strata(&root, &["content", "verify"])).lines().count(), 1);
        return;
    }
    panic!("could not kill the ingest mid-way in 5 attempts");
}

fn data_len(ingest_root: &Path) -> Option<u64> {
    for e in std::fs::read_dir(ingest_root).ok()? {
        let p = e.ok()?.path().join("data");
        if let Ok(m) = std::fs::metadata(&p) {
            return Some(m.len());
        }
    }
    None
}

#[test]
fn eight_concurrent_ingests_of_the_same_file_end_with_one_blob_and_no_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = random_file(dir.path(), "f.bin", 32 << 20, 3);
    let want = sha256sum(&file);
    let root = dir.path().join("root");
    // Create the store once so the children race on ingest, not on first-time setup.
    ok(strata(&root, &["content", "ls"]));
    let children: Vec<_> = (0..8)
        .map(|_| {
            Command::new(STRATA)
                .arg("--root")
                .arg(&root)
                .args(["content", "ingest", file.to_str().unwrap()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        assert_eq!(ok(c.wait_with_output().unwrap()).trim(), want);
    }
    assert_eq!(blob_count(&root), 1);
    assert_eq!(ingest_count(&root), 0);
}

#[test]
fn wrong_expected_digest_fails_naming_both_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = random_file(dir.path(), "f.bin", 1 << 20, 5);
    let actual = sha256sum(&file);
    let wrong = format!("sha256:{}", "0".repeat(64));
    let root = dir.path().join("root");
    let out = strata(
        &root,
        &[
            "content",
            "ingest",
            "--expected",
            &wrong,
            file.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("strata: error: ingest "), "{err}");
    assert!(
        err.contains(&format!("expected {wrong}")) && err.contains(&actual),
        "{err}"
    );
    assert_eq!(blob_count(&root), 0);
    assert_eq!(ingest_count(&root), 0);
}

#[test]
fn locked_ref_is_reported_when_not_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    // A writer that never finishes: a child reading from a pipe we keep open.
    let mut child = Command::new(STRATA)
        .arg("--root")
        .arg(&root)
        .args(["content", "ingest", "--ref", "held", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while data_len(&root.join("content/ingest")).is_none() {
        assert!(Instant::now() < deadline, "child never started its ingest");
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = strata(
        &root,
        &[
            "content",
            "ingest",
            "--ref",
            "held",
            "--lock-wait",
            "0s",
            "/dev/null",
        ],
    );
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(!out.status.success());
    assert!(err.contains("ref \"held\" is locked"), "{err}");
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

#[test]
fn labels_info_rm_and_filters_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let a = random_file(dir.path(), "a", 1000, 1);
    let b = random_file(dir.path(), "b", 2000, 2);
    let da = ok(strata(
        &root,
        &[
            "content",
            "ingest",
            "--label",
            "containerd.io/gc.root=now",
            a.to_str().unwrap(),
        ],
    ));
    let db = ok(strata(&root, &["content", "ingest", b.to_str().unwrap()]));
    let (da, db) = (da.trim(), db.trim());
    let roots = ok(strata(
        &root,
        &["content", "ls", "-q", r#"labels."containerd.io/gc.root""#],
    ));
    assert_eq!(roots.trim(), da);
    ok(strata(&root, &["content", "label", db, "team=storage"]));
    let info: serde_json::Value =
        serde_json::from_str(&ok(strata(&root, &["content", "info", db]))).unwrap();
    assert_eq!(info["size"], 2000);
    assert_eq!(info["labels"]["team"], "storage");
    ok(strata(&root, &["content", "label", db, "team="]));
    let info: serde_json::Value =
        serde_json::from_str(&ok(strata(&root, &["content", "info", db]))).unwrap();
    assert!(info["labels"].get("team").is_none());
    // gc keeps the root, removes the other.
    ok(strata(&root, &["content", "gc"]));
    assert_eq!(ok(strata(&root, &["content", "ls", "-q"])).trim(), da);
    ok(strata(&root, &["content", "rm", da]));
    let out = strata(&root, &["content", "info", da]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        !out.status.success() && err.contains("not found") && err.contains(da),
        "{err}"
    );
    let out = strata(&root, &["content", "ls", "name=="]);
    assert!(!out.status.success());
}

#[test]
fn every_command_help_has_an_example() {
    let cmds: &[&[&str]] = &[
        &[],
        &["content", "ingest"],
        &["content", "ls"],
        &["content", "info"],
        &["content", "label"],
        &["content", "rm"],
        &["content", "verify"],
        &["content", "gc"],
        &["content", "active"],
        &["content", "abort"],
        &["image", "import"],
        &["image", "ls"],
        &["image", "rm"],
    ];
    for c in cmds {
        let out = Command::new(STRATA)
            .args(*c)
            .arg("--help")
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(out.status.success(), "{c:?}");
        assert!(
            text.contains("Example"),
            "`strata {} --help` has no example:\n{text}",
            c.join(" ")
        );
    }
}
