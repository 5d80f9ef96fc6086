//! The model bench's host side: the slow link's namespace and registry, disk space, the
//! page cache, and finding the process serving a volume and its memory.

use super::*;

/// The registry served through `benches/slow-link.sh`: the script's namespace, and a
/// second docker-registry inside it on the same storage. Torn down on drop.
pub(super) struct SlowLink {
    script: PathBuf,
    pub(super) addr: SocketAddr,
    registry: Child,
    pub(super) rate: String,
    delay_ms: String,
}

impl SlowLink {
    pub(super) fn up(args: &ModelArgs, registry: &RegistryServer) -> anyhow::Result<SlowLink> {
        let script = fs::canonicalize(&args.slow_link_script).with_context(|| {
            format!(
                "{} (run from the checkout)",
                args.slow_link_script.display()
            )
        })?;
        let me = std::env::current_exe().context("this binary's path")?;
        let (_, out) = run_timed(Command::new(&script).arg("up").env("STRATA_BENCH", &me))
            .context("slow-link.sh up")?;
        let addr: SocketAddr = out
            .trim()
            .parse()
            .with_context(|| format!("slow-link.sh up printed {out:?}, not an address"))?;
        let ns = std::env::var("NS").unwrap_or_else(|_| "strata-slowlink".into());
        let backend = std::env::var("BACKEND_PORT").unwrap_or_else(|_| "5001".into());
        let config = registry.storage_dir().with_file_name("registry-netns.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: warn}}\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: 127.0.0.1:{backend}}}\n",
                registry.storage_dir().display()
            ),
        )
        .with_context(|| format!("write {}", config.display()))?;
        let log = File::create(config.with_extension("log"))?;
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                strata_testdata::registry::DOCKER_REGISTRY,
                "serve",
            ])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start docker-registry in the slow link's namespace")?;
        let link = SlowLink {
            script,
            addr,
            registry: child,
            rate: std::env::var("RATE").unwrap_or_else(|_| "100mbit".into()),
            delay_ms: std::env::var("DELAY_MS").unwrap_or_else(|_| "20".into()),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if RawClient::new(addr)
                .get("/v2/", &[])
                .is_ok_and(|r| r.status == 200)
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("the registry in {ns} does not answer on {addr} (through the proxy)");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "slow link up: {addr} ({} each way, {} ms delay each way)",
            link.rate, link.delay_ms
        );
        Ok(link)
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        // `ip netns exec` execs the registry: this is its pid.
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.registry),
            rustix::process::Signal::TERM,
        );
        let _ = self.registry.wait();
        match Command::new(&self.script)
            .arg("down")
            .stdout(Stdio::null())
            .status()
        {
            Ok(s) if s.success() => {}
            other => eprintln!("slow-link.sh down: {other:?}"),
        }
    }
}

pub(super) fn free_bytes(dir: &Path) -> anyhow::Result<u64> {
    let st = rustix::fs::statvfs(dir).with_context(|| format!("statvfs {}", dir.display()))?;
    Ok(st.f_bavail * st.f_frsize)
}

pub(super) fn remove(path: &Path) -> anyhow::Result<()> {
    let left = mounts_under(path);
    if !left.is_empty() {
        bail!("not removing {}: mounts under it: {left:?}", path.display());
    }
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("remove {}", path.display()))
        }
        _ => Ok(()),
    }
}

/// Bytes allocated on disk under `path` (like `du -s`; hard links counted once).
pub(super) fn disk_usage(path: &Path) -> u64 {
    walk(path, |meta| meta.blocks() * 512)
}

/// Bytes of the regular files under `path` (their lengths; hard links counted once): what
/// a chunk cache's `--cache-size` bounds. Directories are left out.
pub(super) fn file_bytes(path: &Path) -> u64 {
    walk(path, |meta| if meta.is_file() { meta.len() } else { 0 })
}

/// The sum of `count` over everything under `path`, each inode once, not into mounts.
fn walk(path: &Path, count: impl Fn(&fs::Metadata) -> u64) -> u64 {
    let mut seen = BTreeSet::new();
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total += count(&meta);
        if meta.is_dir() {
            // Not into mounts (the volume's own target is outside the root anyway).
            if let Ok(entries) = fs::read_dir(&p) {
                stack.extend(
                    entries
                        .flatten()
                        .filter(|e| e.metadata().is_ok_and(|m| m.dev() == meta.dev()))
                        .map(|e| e.path()),
                );
            }
        }
    }
    total
}

pub(super) fn drop_caches() -> anyhow::Result<()> {
    sync();
    fs::write("/proc/sys/vm/drop_caches", "3").context("drop caches (/proc/sys/vm/drop_caches)")
}

pub(super) fn sync() {
    let _ = Command::new("sync").status();
}

/// Every process id now.
pub(super) fn pids() -> BTreeSet<u32> {
    fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The peak RSS (VmHWM, bytes) and name of the process serving the volume on `target`:
/// one whose command line names the target or the root, else a new process holding
/// `/dev/fuse` whose command line names strata. `None` when there is none (the mount is
/// the kernel's alone, as in `whole-blobs` mode).
pub(super) fn server_rss(
    root: &Path,
    target: &Path,
    before: &BTreeSet<u32>,
) -> Option<(u64, String)> {
    let me = std::process::id();
    let keys = [
        root.to_string_lossy().into_owned(),
        target.to_string_lossy().into_owned(),
    ];
    let mut named = Vec::new();
    let mut fuse = Vec::new();
    for pid in pids() {
        if pid == me {
            continue;
        }
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if keys.iter().any(|k| cmdline.contains(k.as_str())) {
            named.push(pid);
        } else if !before.contains(&pid) && cmdline.contains("strata") && holds_dev_fuse(pid) {
            fuse.push(pid);
        }
    }
    let candidates = if named.is_empty() { fuse } else { named };
    candidates
        .into_iter()
        .filter_map(|pid| {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let field = |k: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(k))
                    .map(|v| v.trim().to_owned())
            };
            let kb: u64 = field("VmHWM:")?
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()?;
            Some((kb * 1024, format!("{} (pid {pid})", field("Name:")?)))
        })
        .max_by_key(|(r, _)| *r)
}

pub(super) fn holds_dev_fuse(pid: u32) -> bool {
    fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|d| {
        d.flatten()
            .any(|e| fs::read_link(e.path()).is_ok_and(|l| l == Path::new("/dev/fuse")))
    })
}
