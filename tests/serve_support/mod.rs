//! Helpers shared by the `strata serve` + real containerd tests (`serve_containerd`, the
//! remote-snapshot protocol in `serve_remote`, a daemon killed mid-pull in `serve_restart`): the daemon
//! as a child process (start, SIGTERM, SIGKILL, restart on the same root and socket), a
//! runnable image built from the host's binaries, and `ctr snapshots ls` parsing.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use strata_testdata::{ImageSpec, LayerSpec, Platform};

use crate::support::mounts::force_unmount;
use crate::support::{STRATA, stop_child, wait_for_socket};

use strata_testdata::containerd::RUNC;

/// Fails the test unless containerd, ctr, runc and `extra` are installed and this is root
/// (such tests are `#[ignore]`d; `make test` runs them: see `strata_testdata::host`).
pub(crate) fn require_containerd(extra: &[&str]) {
    let mut tools = vec![RUNC];
    tools.extend_from_slice(extra);
    strata_testdata::containerd::require(&tools, "containerd and runc need root");
}

/// The host's shared libraries `binary` loads (from `ldd`), as absolute paths.
pub(crate) fn shared_libraries(binary: &str) -> Vec<String> {
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

/// An image that runs `sh -c`: the host's dash as `/bin/sh` with its shared libraries in
/// two layers, then `extra` layers on top.
pub(crate) fn runnable_image(extra: Vec<LayerSpec>) -> ImageSpec {
    let sh = "/bin/dash";
    let mut libs = LayerSpec::new().created_by("host shared libraries");
    for lib in shared_libraries(sh) {
        let bytes = fs::read(&lib).unwrap_or_else(|e| panic!("{lib}: {e}"));
        libs = libs.file(lib.trim_start_matches('/'), 0o755, bytes);
    }
    let bins = LayerSpec::new()
        .created_by("dash as /bin/sh")
        .file("bin/sh", 0o755, fs::read(sh).unwrap())
        .dir("tmp", 0o1777);
    let mut image = ImageSpec::new(host_platform()).layer(libs).layer(bins);
    for layer in extra {
        image = image.layer(layer);
    }
    image.env("PATH=/bin").cmd(["/bin/sh"])
}

/// `strata serve` on `dir/root` and `dir/run/strata.sock`, logging (appended) to
/// `dir/serve.log`; SIGTERMed on drop.
pub(crate) struct StrataServe {
    child: Option<Child>,
    pub(crate) dir: PathBuf,
    pub(crate) socket: PathBuf,
    pub(crate) root: PathBuf,
    pub(crate) log: PathBuf,
}

impl StrataServe {
    /// Starts the daemon with `config` as its config file and waits for its socket.
    pub(crate) fn start(dir: &Path, config: &str) -> Self {
        fs::create_dir_all(dir).unwrap();
        let mut serve = StrataServe {
            child: None,
            dir: dir.to_path_buf(),
            socket: dir.join("run/strata.sock"),
            root: dir.join("root"),
            log: dir.join("serve.log"),
        };
        fs::write(dir.join("config.toml"), config).unwrap();
        serve.restart();
        serve
    }

    /// Starts the daemon again on the same root, socket and config.
    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none(), "strata serve is still running");
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = Command::new(STRATA)
            .arg("--root")
            .arg(&self.root)
            .args(["--log-level", "strata=debug,info", "serve", "--config"])
            .arg(self.dir.join("config.toml"))
            .arg("--socket")
            .arg(&self.socket)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        wait_for_socket("strata serve", &mut child, &self.socket, &self.log);
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown path runs; the socket file stays behind.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub(crate) fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
    }

    /// The daemon's log so far.
    pub(crate) fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for StrataServe {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// `ctr snapshots ls` rows as (key, parent, kind).
pub(crate) fn snapshot_rows(listing: &str) -> Vec<(String, String, String)> {
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

/// Entries of `dir` (none if it does not exist).
pub(crate) fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Unmounts whatever a failing run left mounted under the temp dir before it is removed.
pub(crate) struct UnmountOnDrop(pub(crate) PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        force_unmount(&self.0);
    }
}

/// A `hosts.toml` directory that sends `host` over plain HTTP.
pub(crate) fn plain_http_hosts(dir: &Path, host: &str) -> std::path::PathBuf {
    let hosts = dir.join("certs.d");
    std::fs::create_dir_all(hosts.join(host)).unwrap();
    std::fs::write(
        hosts.join(host).join("hosts.toml"),
        format!("server = \"http://{host}\"\n\n[host.\"http://{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
    )
    .unwrap();
    hosts
}

/// Kills, on drop, the fd holders started for `dir` (they outlive `strata serve` by
/// design).
pub(crate) struct KillHolders(pub(crate) std::path::PathBuf);

impl Drop for KillHolders {
    fn drop(&mut self) {
        let needle = self.0.to_string_lossy().into_owned();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for p in procs.flatten() {
            let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains("fd-holder") && cmdline.contains(&needle) {
                // SAFETY: plain kill(2) of a process this test started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// For the lazy paths: `reference` converted to eStargz and pushed as `esgz` (through the
/// Strata root `conv` of `env`), and `strata serve` started in `env`'s `serve/`, reaching
/// `registry_host` over plain HTTP itself (it fetches the layers).
pub(crate) fn estargz_and_daemon(
    env: &crate::support::Env,
    registry_host: &str,
    reference: &str,
    esgz: &str,
) -> StrataServe {
    env.strata_ok("conv", &["pull", "--plain-http", reference]);
    env.strata_ok(
        "conv",
        &["convert", "--plain-http", "--push", reference, esgz],
    );
    let hosts = plain_http_hosts(env.dir.path(), registry_host);
    StrataServe::start(
        &env.path("serve"),
        &format!("config_path = {:?}\n", hosts.to_string_lossy()),
    )
}
