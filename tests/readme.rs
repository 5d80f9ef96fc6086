//! README.md's "Using it" section, run as written: every `sh` block of the section, in
//! order, as one session, so a documented command that stops working fails `make test`.
//!
//! The commands are run by bash unchanged except for what must differ on a test machine,
//! each a literal substitution listed in [`SUBSTITUTIONS`]: the registry address, and the
//! paths `/tmp/s`, `/mnt/app` and `/etc/strata` (moved into a temp dir). Around the
//! commands the test provides what the README assumes: `./big.bin`, the OCI layout
//! `./sample/` and the docker-save tar `./tools.tar` in the working directory; a
//! loopback registry holding `app:1` (a runnable image: the host's dash and echo) and,
//! through a `hosts.toml` mirror for docker.io, `alpine:3.20`; a private containerd (started
//! once the README's `strata serve` listens, as systemd units order them) whose
//! `[proxy_plugins.strata]`, `.stargz` and `.erofs` point at `$STRATA_SOCKET`; and
//! the environment variables `STRATA_SOCKET`, `STRATA_CONFIG`, `STRATA_HOSTS_DIR`,
//! `CONTAINERD_ADDRESS` and `CONTAINERD_NAMESPACE` that point the commands at those.
//! A line ending in `&` runs in the background; the test waits until it is ready (a
//! daemon's socket, a mount point) before the next line, and stops it at the block's end.
//! `sha256:…` stands for a snapshot key: the test puts the top snapshot of a chain of the
//! line's snapshotter there.
//!
//! Needs root, containerd, runc, ctr-remote and docker-registry (scripts/setup.sh).

use std::fs;
use std::path::Path;
use std::process::Command;

use strata_testdata::LayerSpec;
use strata_testdata::containerd::Containerd;
use strata_testdata::registry::RegistryServer;
use strata_testdata::{LayoutImage, random_bytes, sample_multiplatform, write_docker_save_tar};

mod serve_support;
mod support;

use serve_support::{UnmountOnDrop, require_containerd, runnable_image};
use support::STRATA;

/// The containerd namespace the README's `ctr` commands use.
const NAMESPACE: &str = "readme";

/// README literals replaced on a test machine: (as written, replaced by). `REGISTRY` and
/// `DIR` in the replacement stand for the test's registry address and temp dir.
const SUBSTITUTIONS: &[(&str, &str)] = &[
    ("127.0.0.1:5000", "REGISTRY"),
    ("/tmp/s", "DIR/root"),
    ("/mnt/app", "DIR/mnt/app"),
    ("/etc/strata", "DIR/etc/strata"),
];

/// Helpers defined before each block: readiness waits for background lines, the snapshot
/// standing for `sha256:…`, and stopping what a block left running.
const PRELUDE: &str = r#"set -euo pipefail
trap 'status=$?; kill $(jobs -p) 2>/dev/null || true; wait || true; exit $status' EXIT
ready_socket() { # PID SOCKET
    for _ in $(seq 300); do [ -S "$2" ] && return 0; kill -0 "$1" 2>/dev/null || return 1; sleep 0.1; done
    echo "readme: $2 not ready after 30 s" >&2; return 1
}
ready_serve() { # PID: the daemon's socket, then containerd's (started once the daemon listens)
    ready_socket "$1" "$STRATA_SOCKET" || return 1
    for _ in $(seq 300); do [ -S "$CONTAINERD_ADDRESS" ] && return 0; sleep 0.1; done
    echo "readme: containerd not started after 30 s" >&2; return 1
}
ready_mount() { # PID DIR
    for _ in $(seq 300); do mountpoint -q "$2" && return 0; kill -0 "$1" 2>/dev/null || return 1; sleep 0.1; done
    echo "readme: $2 not mounted after 30 s" >&2; return 1
}
top_snapshot() { # SNAPSHOTTER: a snapshot that is no other's parent
    strata snapshot --snapshotter "$1" ls --filter kind==committed |
        awk 'NR > 1 { key[$1] = 1; parent[$2] = 1 } END { for (k in key) if (!(k in parent)) { print k; exit } }'
}
set -x
"#;

/// The `sh` code blocks of README.md's section `## Using it`.
fn using_it_blocks(readme: &str) -> Vec<String> {
    let start = readme
        .find("\n## Using it\n")
        .expect("README.md has a `## Using it` section");
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let mut blocks = Vec::new();
    let mut rest = section;
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + 6..];
        let close = body.find("\n```").expect("a closed code block");
        blocks.push(body[..close + 1].to_owned());
        rest = &body[close + 4..];
    }
    blocks
}

/// The value of `--snapshotter` on `line`, else the default.
fn snapshotter_of(line: &str) -> &str {
    let mut words = line.split_whitespace();
    while let Some(w) = words.next() {
        if w == "--snapshotter" {
            return words.next().unwrap_or("overlayfs");
        }
    }
    "overlayfs"
}

/// One README block as the bash script the test runs: placeholders resolved, background
/// lines followed by their readiness wait.
fn script_of(block: &str, registry: &str, dir: &Path) -> String {
    let mut script = String::from(PRELUDE);
    for line in block.lines() {
        let mut line = line.to_owned();
        for (from, to) in SUBSTITUTIONS {
            let to = to
                .replace("REGISTRY", registry)
                .replace("DIR", &dir.to_string_lossy());
            line = line.replace(from, &to);
        }
        if line.contains("sha256:…") {
            let sub = format!("\"$(top_snapshot {})\"", snapshotter_of(&line));
            line = line.replace("sha256:…", &sub);
        }
        let code = line.split(" # ").next().unwrap_or("").trim_end();
        if let Some(command) = code.strip_suffix('&') {
            let wait = if command.contains("strata serve") {
                "ready_serve $!".to_owned()
            } else if command.contains("strata mount") {
                let target = command.split_whitespace().last().expect("a mount point");
                format!("ready_mount $! {target}")
            } else {
                panic!("README: no readiness rule for the background command {code:?}");
            };
            line = format!("{command}& {wait}");
        }
        script.push_str(&line);
        script.push('\n');
    }
    script
}

#[test]
#[ignore = "needs root, containerd, runc and a registry: make test runs it"]
fn readme_commands_run_as_written() {
    require_containerd(&[
        strata_testdata::containerd::CTR_REMOTE,
        strata_testdata::registry::DOCKER_REGISTRY,
    ]);
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let blocks = using_it_blocks(&readme);
    assert!(blocks.len() >= 5, "README's Using it blocks: {blocks:?}");

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Declared first, dropped last: after containerd and the registry have stopped.
    let _unmount = UnmountOnDrop(dir.to_path_buf());
    let work = dir.join("work");
    fs::create_dir_all(&work).unwrap();

    // The files the README's commands name, in the working directory.
    fs::write(work.join("big.bin"), random_bytes(3 << 20, 7)).unwrap();
    strata_testdata::write_oci_layout(
        &work.join("sample"),
        &[("1.0", LayoutImage::Multi(sample_multiplatform(1)))],
    )
    .unwrap();
    write_docker_save_tar(
        &work.join("tools.tar"),
        &strata_testdata::sample_image(7),
        &["tools:2.1"],
    )
    .unwrap();

    // The registry: app:1, and alpine:3.20 behind a docker.io mirror.
    let registry = RegistryServer::start().expect("start docker-registry");
    let echo = LayerSpec::new()
        .created_by("echo")
        .file("bin/echo", 0o755, fs::read("/usr/bin/echo").unwrap())
        .file("etc/greeting", 0o644, "hello from app:1\n");
    let app = runnable_image(vec![echo]).build().unwrap();
    registry.push_image("app", "1", &app).expect("push app:1");
    let alpine = runnable_image(vec![]).build().unwrap();
    registry
        .push_image("library/alpine", "3.20", &alpine)
        .expect("push the docker.io stand-in");
    let hosts = dir.join("certs.d");
    fs::create_dir_all(hosts.join("docker.io")).unwrap();
    fs::write(
        hosts.join("docker.io/hosts.toml"),
        format!(
            "server = \"https://registry-1.docker.io\"\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            registry.host()
        ),
    )
    .unwrap();

    // containerd with the proxy plugins on the daemon's socket, started as an operator's
    // systemd units order them: once `strata serve` (started by the README) listens. A
    // containerd started first would back off its first failed dial and fail the first
    // calls; the README's serve line waits for containerd's socket in turn.
    let socket = dir.join("run/strata.sock");
    let containerd_dir = dir.join("containerd");
    let containerd_socket = containerd_dir.join("c.sock");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let containerd = {
        let (socket, containerd_dir, stop) = (socket.clone(), containerd_dir.clone(), stop.clone());
        std::thread::spawn(move || {
            while !socket.exists() {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    return None;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let plugin = |name: &str| {
                format!(
                    "  [proxy_plugins.{name}]\n    type = \"snapshot\"\n    address = {socket:?}\n"
                )
            };
            let config = format!(
                "[proxy_plugins]\n{}{}{}",
                plugin("strata"),
                plugin("stargz"),
                plugin("erofs")
            );
            Some(Containerd::start(&containerd_dir, NAMESPACE, &config).expect("start containerd"))
        })
    };
    let docker_config = dir.join("docker");
    fs::create_dir_all(&docker_config).unwrap();
    let bin_dir = Path::new(STRATA).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut transcript = String::new();
    for (i, block) in blocks.iter().enumerate() {
        let script = script_of(block, &registry.host(), dir);
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(&work)
            .env("PATH", &path)
            .env("STRATA_ROOT", dir.join("root"))
            .env("STRATA_SOCKET", &socket)
            .env("STRATA_CONFIG", dir.join("etc/strata/config.toml"))
            .env("STRATA_HOSTS_DIR", &hosts)
            .env("DOCKER_CONFIG", &docker_config)
            .env("CONTAINERD_ADDRESS", &containerd_socket)
            .env("CONTAINERD_NAMESPACE", NAMESPACE)
            .env_remove("STRATA_LOG")
            .output()
            .expect("run bash");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        transcript.push_str(&stdout);
        assert!(
            out.status.success(),
            "README block {} failed ({}):\n{block}\nstdout:\n{stdout}\nstderr (the commands, traced):\n{stderr}\ncontainerd log tail:\n{}",
            i + 1,
            out.status,
            strata_testdata::daemon::log_tail(&containerd_dir.join("containerd.log"), 20)
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    // Stopped here, before the temp dir is unmounted and removed.
    drop(containerd.join().expect("the containerd thread"));

    // A few outputs the README promises.
    let ingest = format!(
        "sha256:{}",
        strata_testdata::sha256_hex(&random_bytes(3 << 20, 7))
    );
    assert!(transcript.contains(&ingest), "ingest digest:\n{transcript}");
    assert!(
        transcript.contains("docker.io/library/sample:1.0"),
        "image ls:\n{transcript}"
    );
    assert!(
        transcript.contains("\"Lazy\""),
        "stargz snapshot info through the daemon:\n{transcript}"
    );
    assert_eq!(
        transcript.lines().filter(|l| *l == "hello").count(),
        3,
        "the three containers print hello:\n{transcript}"
    );
}

#[test]
fn readme_blocks_are_found_and_rewritten() {
    let readme = "# x\n\n## Using it\n\ntext\n\n```sh\nstrata a # c\n```\n\n```toml\nx\n```\n\n```sh\nstrata serve &   # bg\nstrata snapshot --snapshotter stargz info sha256:…\n```\n\n## Next\n\n```sh\nnot this\n```\n";
    let blocks = using_it_blocks(readme);
    assert_eq!(
        blocks,
        [
            "strata a # c\n",
            "strata serve &   # bg\nstrata snapshot --snapshotter stargz info sha256:…\n"
        ]
    );
    let script = script_of(&blocks[1], "127.0.0.1:9", Path::new("/d"));
    assert!(
        script.contains("strata serve & ready_serve $!\n"),
        "{script}"
    );
    assert!(
        script.contains("info \"$(top_snapshot stargz)\""),
        "{script}"
    );
    let script = script_of(
        "strata mount --lazy 127.0.0.1:5000/a /mnt/app &\n",
        "h:1",
        Path::new("/d"),
    );
    assert!(
        script.contains("strata mount --lazy h:1/a /d/mnt/app & ready_mount $! /d/mnt/app\n"),
        "{script}"
    );
}
