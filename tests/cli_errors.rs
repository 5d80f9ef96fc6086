//! A failing `strata` command prints one line, `strata: error: …`, naming the thing and
//! the root cause, each cause once (issue #16, items 11 and 12).

use std::path::Path;
use std::process::{Command, Output};

const STRATA: &str = env!("CARGO_BIN_EXE_strata");

fn strata(root: &Path, args: &[&str]) -> Output {
    Command::new(STRATA)
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("STRATA_SOCKET")
        .output()
        .expect("run strata")
}

/// The error line of a failed run, checked to be one line with no part repeated.
fn error_line(out: Output) -> String {
    assert!(!out.status.success(), "strata succeeded");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let line = stderr
        .lines()
        .find(|l| l.starts_with("strata: error: "))
        .unwrap_or_else(|| panic!("no error line in {stderr:?}"))
        .to_owned();
    let parts: Vec<&str> = line.split(": ").collect();
    for (i, p) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..].contains(p),
            "{p:?} is printed twice in {line:?}"
        );
    }
    line
}

fn once(line: &str, cause: &str) {
    assert_eq!(
        line.matches(cause).count(),
        1,
        "{cause:?} should be printed once in {line:?}"
    );
}

#[test]
fn serve_with_a_missing_config_prints_the_os_error_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("missing.toml");
    let line = error_line(strata(
        &dir.path().join("root"),
        &["serve", "--config", config.to_str().unwrap()],
    ));
    assert!(line.contains(config.to_str().unwrap()), "{line}");
    once(&line, "No such file or directory");
}

#[test]
fn removing_a_missing_image_names_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let line = error_line(strata(&dir.path().join("root"), &["image", "rm", "x"]));
    once(&line, "\"x\"");
    once(&line, "not found");
}

#[test]
fn ingesting_a_directory_says_is_a_directory_once() {
    let dir = tempfile::tempdir().unwrap();
    let expected = format!("sha256:{}", "0".repeat(64));
    let line = error_line(strata(
        &dir.path().join("root"),
        &[
            "content",
            "ingest",
            "--expected",
            &expected,
            dir.path().to_str().unwrap(),
        ],
    ));
    assert!(line.contains(dir.path().to_str().unwrap()), "{line}");
    once(&line, "Is a directory");
}

#[test]
fn pulling_from_a_closed_port_shows_connection_refused_once() {
    let dir = tempfile::tempdir().unwrap();
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let reference = format!("127.0.0.1:{port}/alpine:3.20");
    let line = error_line(strata(
        &dir.path().join("root"),
        &["pull", "--plain-http", &reference],
    ));
    assert!(line.contains(&reference), "{line}");
    once(&line, "error sending request");
    once(&line, "Connection refused");
}

#[test]
fn a_lazy_mount_from_a_closed_port_shows_the_root_cause() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("mnt");
    std::fs::create_dir(&target).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let reference = format!("127.0.0.1:{port}/app:1-esgz");
    let line = error_line(strata(
        &dir.path().join("root"),
        &[
            "mount",
            "--lazy",
            "--plain-http",
            &reference,
            target.to_str().unwrap(),
        ],
    ));
    assert!(line.contains(&reference), "{line}");
    once(&line, "Connection refused");
}

#[test]
fn a_snapshot_command_on_the_wrong_socket_says_nothing_listens_there_and_how_to_name_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let served = dir.path().join("served.sock");
    let wrong = dir.path().join("wrong.sock");
    // The daemon holds the snapshotters' metadata, so the CLI has to go through a socket.
    let mut serve = Command::new(STRATA)
        .arg("--root")
        .arg(&root)
        .args(["serve", "--socket"])
        .arg(&served)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run strata serve");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !served.exists() {
        assert!(
            serve.try_wait().unwrap().is_none(),
            "strata serve exited early"
        );
        assert!(std::time::Instant::now() < deadline, "no socket in 30 s");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = strata(
        &root,
        &["snapshot", "--socket", wrong.to_str().unwrap(), "ls"],
    );
    serve.kill().unwrap();
    serve.wait().unwrap();
    let line = error_line(out);
    assert!(
        line.contains(&format!("nothing listens on {}", wrong.display())),
        "{line}"
    );
    assert!(!line.contains("transport error"), "{line}");
    assert!(
        line.contains("--socket") && line.contains("STRATA_SOCKET"),
        "{line}"
    );
}

#[test]
fn pulling_a_missing_tag_says_not_found_once() {
    let dir = tempfile::tempdir().unwrap();
    let registry = strata_testdata::RegistryServer::start().unwrap();
    let reference = format!("{}/app:1", registry.host());
    let line = error_line(strata(
        &dir.path().join("root"),
        &["pull", "--plain-http", &reference],
    ));
    once(&line, "not found");
}
