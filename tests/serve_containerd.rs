//! `strata serve` as containerd's proxy snapshotter, end to end with the real containerd
//! 1.6 and runc from Debian: a small runnable image (the host's dash, touch and their
//! shared libraries, in three layers) is pushed to a loopback registry; a private
//! containerd with `[proxy_plugins.<name>] type = "snapshot"` pulls it into Strata, runs a
//! container from it (`echo hello; touch /x`), lists the chain, and removes everything;
//! nothing may be left behind: no snapshot directories, no mounts.
//!
//! Run once with the default name `strata` (overlayfs) and once with `strata-native`
//! mapped to the native snapshotter by Strata's config. Needs root, containerd, ctr, runc
//! and docker-registry (scripts/setup.sh).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use strata_testdata::registry::RegistryServer;
use strata_testdata::{ImageSpec, LayerSpec, Platform};

mod support;

use support::containerd::Containerd;
use support::mounts::{force_unmount, mounts_under};
use support::{CTR, STRATA, chain_ids, log_tail, stop_child, wait_for_socket};

const RUNC: &str = "/usr/sbin/runc";

/// Whether the test can run: the tools must be installed (a failure otherwise), and
/// containerd needs root (skipped, with a message).
fn tools_available() -> bool {
    let missing: Vec<&str> = [support::CONTAINERD, CTR, RUNC]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "{missing:?} not installed: run scripts/setup.sh"
    );
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping: containerd and runc need root");
        return false;
    }
    true
}

/// The host's shared libraries `binary` loads (from `ldd`), as absolute paths.
fn shared_libraries(binary: &str) -> Vec<String> {
    let out = Command::new("ldd").arg(binary).output().expect("run ldd");
    assert!(
        out.status.success(),
        "ldd {binary}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| path.to_string())
        })
        .collect()
}

fn host_platform() -> Platform {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    Platform::new("linux", arch, None)
}

/// A three-layer image that runs: libraries, then `/bin/sh` (dash) and `/bin/touch`, then
/// a small file. Built from the host's binaries, so it runs on this host's architecture.
fn runnable_image() -> ImageSpec {
    let (sh, touch) = ("/bin/dash", "/usr/bin/touch");
    let mut libraries = shared_libraries(sh);
    libraries.extend(shared_libraries(touch));
    libraries.sort();
    libraries.dedup();
    let mut libs = LayerSpec::new().created_by("host shared libraries");
    for lib in &libraries {
        // The file itself, at the path the loader asks for (symlinks resolved by reading).
        let bytes = fs::read(lib).unwrap_or_else(|e| panic!("{lib}: {e}"));
        libs = libs.file(lib.trim_start_matches('/'), 0o755, bytes);
    }
    let bins = LayerSpec::new()
        .created_by("dash as /bin/sh, touch")
        .file("bin/sh", 0o755, fs::read(sh).unwrap())
        .file("bin/touch", 0o755, fs::read(touch).unwrap())
        .dir("tmp", 0o1777);
    let extra =
        LayerSpec::new()
            .created_by("greeting")
            .file("etc/greeting", 0o644, "hello from layer 3\n");
    ImageSpec::new(host_platform())
        .layer(libs)
        .layer(bins)
        .layer(extra)
        .env("PATH=/bin")
        .cmd(["/bin/sh"])
}

/// `strata serve` on its own root and socket; SIGTERMed on drop.
struct StrataServe {
    child: Option<Child>,
    socket: PathBuf,
    root: PathBuf,
    log: PathBuf,
}

impl StrataServe {
    fn start(dir: &Path, snapshotters: &str) -> Self {
        fs::create_dir_all(dir).unwrap();
        let (socket, root, log, config) = (
            dir.join("run/strata.sock"),
            dir.join("root"),
            dir.join("serve.log"),
            dir.join("config.toml"),
        );
        fs::write(&config, format!("[snapshotters]\n{snapshotters}")).unwrap();
        let out = fs::File::create(&log).unwrap();
        let mut child = Command::new(STRATA)
            .arg("--root")
            .arg(&root)
            .args(["--log-level", "strata=debug,info", "serve", "--config"])
            .arg(&config)
            .arg("--socket")
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        wait_for_socket("strata serve", &mut child, &socket, &log);
        StrataServe {
            child: Some(child),
            socket,
            root,
            log,
        }
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
    }
}

impl Drop for StrataServe {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Entries of `dir` (none if it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `ctr snapshots ls` rows as (key, parent, kind).
fn snapshot_rows(listing: &str) -> Vec<(String, String, String)> {
    listing
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            match cols.as_slice() {
                [key, parent, kind] => {
                    Some((key.to_string(), parent.to_string(), kind.to_string()))
                }
                [key, kind] => Some((key.to_string(), String::new(), kind.to_string())),
                _ => None,
            }
        })
        .collect()
}

/// Pull, run, list and remove through containerd with Strata's snapshotter `implementation`
/// served as proxy plugin `name`.
fn pull_run_list_remove(name: &str, implementation: &str) {
    if !tools_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Declared first, dropped last: after containerd and strata have stopped.
    let _unmount = UnmountOnDrop(dir.path().to_path_buf());
    let registry = RegistryServer::start().expect("start docker-registry");
    let image = runnable_image().build().unwrap();
    let reference = format!("{}/e2e/sh:1", registry.host());
    registry
        .push_image("e2e/sh", "1", &image)
        .expect("push the image");
    let chain = chain_ids(&image.diff_ids());

    let mut serve = StrataServe::start(
        &dir.path().join("strata"),
        &format!("{name:?} = {implementation:?}\n"),
    );
    let mut containerd = Containerd::start(
        &dir.path().join("containerd"),
        &format!("strata-e2e-{implementation}"),
        &format!(
            "[proxy_plugins]\n  [proxy_plugins.{name:?}]\n    type = \"snapshot\"\n    address = {:?}\n",
            serve.socket
        ),
    );
    let context = |what: &str| {
        format!(
            "{what}\nstrata serve log tail:\n{}\ncontainerd log tail:\n{}",
            log_tail(&serve.log, 15),
            log_tail(&containerd.log, 15)
        )
    };

    // The proxy plugin is loaded.
    let plugins = containerd.ok(CTR, &["plugins", "ls"]);
    assert!(
        plugins
            .lines()
            .any(|l| l.contains("io.containerd.snapshotter.v1")
                && l.contains(name)
                && l.contains("ok")),
        "{}",
        context(&format!("proxy plugin {name} not ok:\n{plugins}"))
    );

    // Pull: containerd unpacks each layer through Strata.
    containerd.ok(
        CTR,
        &[
            "image",
            "pull",
            "--plain-http",
            "--snapshotter",
            name,
            &reference,
        ],
    );
    let snapshots_dir = serve
        .root
        .join("snapshotters")
        .join(implementation)
        .join("snapshots");
    assert_eq!(
        entries(&snapshots_dir).len(),
        chain.len(),
        "{}",
        context("one directory per layer")
    );

    // Run: the container's rootfs is an active snapshot over the chain's top.
    // runc's state goes under the temp dir, not the host's /run/containerd/runc.
    let runc_root = dir.path().join("runc");
    let out = containerd.run(
        CTR,
        &[
            "run",
            "--rm",
            "--runc-root",
            &runc_root.to_string_lossy(),
            "--snapshotter",
            name,
            &reference,
            "e2e-1",
            "sh",
            "-c",
            "echo hello; touch /x",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        context(&format!(
            "ctr run failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hello");

    // The chain, one committed snapshot per layer, each the parent of the next; nothing
    // active after `run --rm`.
    let listing = containerd.ok(CTR, &["snapshots", "--snapshotter", name, "ls"]);
    let mut rows = snapshot_rows(&listing);
    rows.sort();
    let mut expected: Vec<(String, String, String)> = chain
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                id.clone(),
                if i == 0 {
                    String::new()
                } else {
                    chain[i - 1].clone()
                },
                "Committed".to_string(),
            )
        })
        .collect();
    expected.sort();
    assert_eq!(
        rows,
        expected,
        "{}",
        context(&format!("ctr snapshots ls:\n{listing}"))
    );

    // Remove: snapshots top first, then the image. The image holds only the top of the
    // chain as a GC root, so containerd's garbage collector may remove the lower ones
    // (through Strata's Remove as well) before `ctr snapshots rm` reaches them.
    for id in chain.iter().rev() {
        let out = containerd.run(CTR, &["snapshots", "--snapshotter", name, "rm", id]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || (id != chain.last().unwrap() && stderr.contains("not found")),
            "{}",
            context(&format!("ctr snapshots rm {id}: {stderr}"))
        );
    }
    containerd.ok(CTR, &["image", "rm", "--sync", &reference]);
    // Every layer was removed through Strata (containerd's keys carry a namespace prefix).
    let log = fs::read_to_string(&serve.log).unwrap();
    for id in &chain {
        assert!(
            log.lines().any(|l| l.contains("rpc=\"Remove\"")
                && l.contains(&format!("{id}\""))
                && l.contains("result=\"OK\"")),
            "{}",
            context(&format!("no successful Remove of {id}"))
        );
    }
    let listing = containerd.ok(CTR, &["snapshots", "--snapshotter", name, "ls"]);
    assert!(
        snapshot_rows(&listing).is_empty(),
        "{}",
        context(&format!("left after removal:\n{listing}"))
    );
    // Directory removal may be asynchronous (containerd calls Cleanup after its GC).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !entries(&snapshots_dir).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        entries(&snapshots_dir),
        Vec::<String>::new(),
        "{}",
        context("snapshot directories left behind")
    );
    for place in [
        serve.root.as_path(),
        containerd.root.as_path(),
        containerd.state.as_path(),
    ] {
        assert_eq!(
            mounts_under(place),
            Vec::<String>::new(),
            "{}",
            context("mounts left behind")
        );
    }

    containerd.terminate();
    serve.terminate();
    assert!(
        !serve.socket.exists(),
        "strata serve removed its socket at shutdown"
    );
}

/// Unmounts whatever a failing run left mounted under the temp dir before it is removed.
struct UnmountOnDrop(PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        force_unmount(&self.0);
    }
}

#[test]
fn containerd_pulls_runs_and_removes_through_strata_overlayfs() {
    pull_run_list_remove("strata", "overlayfs");
}

#[test]
fn containerd_pulls_runs_and_removes_through_strata_native() {
    pull_run_list_remove("strata-native", "native");
}
