//! What the `strata` command line accepts, rejects and says about its flags, run as a
//! user runs it: the real binary.

use std::process::{Command, Output};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

fn run(args: &[&str]) -> Output {
    Command::new(STRATA)
        .env_remove("STRATA_ROOT")
        .env_remove("STRATA_LOG")
        .args(args)
        .output()
        .expect("run strata")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn serve_help_states_one_log_level_default_the_configs() {
    let out = run(&["serve", "--help"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let help = stdout(&out);
    // `serve` logs at its configuration's `log_level` (info by default) unless the flag
    // is given: the help must not claim a fixed default of its own.
    assert!(!help.contains("[default: warn]"), "{help}");
    assert!(help.contains("log_level"), "{help}");
}

fn in_root(root: &std::path::Path, args: &[&str]) -> Output {
    Command::new(STRATA)
        .env_remove("STRATA_ROOT")
        .env_remove("STRATA_LOG")
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("run strata")
}

#[test]
fn ingest_of_a_file_larger_than_size_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let file = dir.path().join("big.bin");
    strata_testdata::random_file(&file, 5 << 20, 3).unwrap();
    let out = in_root(
        &root,
        &["content", "ingest", "--size", "5", file.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("larger than --size 5") && !e.contains("write past"),
        "{e}"
    );

    // The same from standard input, where the length is known only once read.
    let mut child = Command::new(STRATA)
        .arg("--root")
        .arg(&root)
        .args(["content", "ingest", "--size", "5", "-"])
        .stdin(std::fs::File::open(&file).unwrap())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = child.wait().unwrap();
    let mut e = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut e).unwrap();
    assert!(!status.success());
    assert!(
        e.contains("larger than --size 5") && !e.contains("write past"),
        "{e}"
    );
}

#[test]
fn import_of_one_image_says_one_image() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    strata_testdata::write_oci_layout(
        &layout,
        &[("sample:1", strata_testdata::sample_image(2).into())],
    )
    .unwrap();
    let out = in_root(
        &dir.path().join("root"),
        &["image", "import", layout.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("imported 1 image ("), "{e}");
    assert!(!e.contains("1 images"), "{e}");
}

#[test]
fn imported_names_are_normalised_and_short_names_find_them() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("sample");
    // A bare tag: named after the directory, then normalised as docker-save names are.
    strata_testdata::write_oci_layout(&layout, &[("1.0", strata_testdata::sample_image(2).into())])
        .unwrap();
    let root = dir.path().join("root");
    let out = in_root(&root, &["image", "import", layout.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = in_root(&root, &["image", "ls", "-q"]);
    assert_eq!(stdout(&out), "docker.io/library/sample:1.0\n");
    // The short name finds the record; the full name is what was removed.
    let out = in_root(&root, &["image", "rm", "sample:1.0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "docker.io/library/sample:1.0\n");
    let out = in_root(&root, &["image", "rm", "sample:1.0"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("\"sample:1.0\""), "{}", stderr(&out));
}

#[test]
fn snapshot_usage_of_an_unknown_key_prints_nothing_before_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = in_root(&dir.path().join("root"), &["snapshot", "usage", "nope"]);
    assert!(!out.status.success());
    assert_eq!(stdout(&out), "", "nothing on stdout");
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
}

#[test]
fn strata_root_from_the_environment_is_used_and_root_stays_optional() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    // A usage error with STRATA_ROOT set must not show --root as if it were required.
    let out = Command::new(STRATA)
        .env("STRATA_ROOT", &root)
        .args(["content", "ingest"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("Usage: strata content ingest"), "{e}");
    assert!(!e.contains("--root"), "{e}");

    // And the variable still chooses the root.
    let file = dir.path().join("blob");
    std::fs::write(&file, b"hello\n").unwrap();
    let out = Command::new(STRATA)
        .env("STRATA_ROOT", &root)
        .args(["content", "ingest", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let listed = in_root(&root, &["content", "ls", "-q"]);
    assert_eq!(stdout(&listed).trim(), stdout(&out).trim());

    // The help names the variable and the default.
    let help = stdout(&run(&["--help"]));
    assert!(
        help.contains("STRATA_ROOT") && help.contains("/var/lib/strata"),
        "{help}"
    );
}
