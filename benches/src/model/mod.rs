//! Model-artifact benchmark (issue #18, "Targets"): a generated safetensors model pushed
//! once with `strata artifact push` (ModelPack and its chunk-index referrer) to Debian's
//! registry, then, side by side in one run, alternating order, every run cold:
//!
//! - **time to first tensor**: open the first weight file, read the 8-byte header length
//!   and the JSON header, parse it, read one tensor (chosen by a per-run seed; the same
//!   for every path) — through `strata volume mount` on a fresh root, vs a full
//!   `strata pull` on a fresh root then the same read from the pulled blob file, vs
//!   `skopeo copy docker://… dir:…` then the same read from the copied blob;
//! - **full sequential read** of every weight file through a fresh mount (mount time
//!   included), vs `strata pull` followed by the same read of the pulled blobs (and the
//!   pull alone), vs the registry's raw rate (one HTTP GET per blob to nowhere);
//! - a **second read** through the same mount with the page cache dropped first (so it
//!   reads Strata's cache on disk), vs the same bytes read from the registry's own blob
//!   files on the host disk, page cache dropped;
//! - the **RSS** (VmHWM) of the process serving the mount, if one does, and the root's
//!   size on disk after the reads.
//!
//! Every byte read is checked (a position-dependent checksum per file, and the first
//! tensor's bytes) against the registry's blob files. `volume ls` says which mode the
//! volume was in (`whole-blobs`: pulled whole before the mount; `lazy`: fetched by range
//! on read); the report names it.
//!
//! With `--slow-link`, the registry is also served inside `benches/slow-link.sh`'s
//! network namespace (100 Mbit/s, 20 ms each way by default) from the same storage, and
//! every measurement goes through it (the push goes over loopback).
//!
//! Disk: the model directory is deleted after the push (the registry's blob files are the
//! reference copy); each measurement's root or copy is deleted right after it, so the peak
//! is the registry plus one copy plus a little.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use strata_testdata::model::{ModelSpec, TensorInfo, parse_safetensors_header, write_model_dir};
use strata_testdata::registry::{RawClient, RegistryServer};

use crate::pull::mounts_under;
use crate::stats::{Summary, parse_size, run_timed, summarize};

const REPO: &str = "bench/model";
const TAG: &str = "1";
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json";
/// Read size of the sequential reads (what a loader's buffered reads or the kernel's
/// readahead ask for at most).
const READ_BUF: usize = 1 << 20;

#[derive(Debug, Args)]
pub(crate) struct ModelArgs {
    /// The strata binary to measure.
    #[arg(long, default_value = "target/release/strata")]
    strata: PathBuf,
    /// Number of weight files.
    #[arg(long, default_value_t = 4)]
    files: usize,
    /// Size of each weight file (default 512MiB, or 64MiB with --slow-link; the issue's
    /// example is 1GiB: the registry holds one copy and each measurement one more).
    #[arg(long, value_parser = parse_size)]
    file_size: Option<u64>,
    /// Runs of each measurement.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Reach the registry through benches/slow-link.sh (tc rate + delay proxy; the
    /// settings come from its environment variables, RATE and DELAY_MS).
    #[arg(long)]
    slow_link: bool,
    /// The slow-link script.
    #[arg(long, default_value = "benches/slow-link.sh")]
    slow_link_script: PathBuf,
    /// The skopeo binary (scripts/setup.sh installs it).
    #[arg(long, default_value = "/usr/bin/skopeo")]
    skopeo: PathBuf,
    /// Leave out the skopeo reference.
    #[arg(long)]
    no_skopeo: bool,
    /// Seed of the model's bytes and of the tensors read.
    #[arg(long, default_value_t = 18)]
    seed: u64,
    /// Directory for the model, roots and copies (default: a temp dir under /var/tmp).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Extra arguments for `strata volume mount` (repeatable), e.g.
    /// `--volume-arg=--passthrough` or `--volume-arg=--cache-size=1024`.
    #[arg(long = "volume-arg", allow_hyphen_values = true)]
    volume_args: Vec<String>,
}

/// `strata volume mount`'s default `--cache-size` in MiB (docs/volumes.md).
const DEFAULT_CACHE_MIB: u64 = 20480;

/// One weight file as the registry holds it.
#[derive(Debug, Clone)]
struct Weight {
    name: String,
    digest: String,
    size: u64,
    /// The blob file in the registry's storage (the reference bytes).
    registry_file: PathBuf,
    /// Checksum of its bytes ([`checksum_file`]).
    checksum: u64,
}

/// How long the first tensor's read took (open, header, parse, tensor).
#[derive(Debug, Clone, Copy)]
struct FirstTensor {
    read: Duration,
}

#[derive(Debug, Default)]
struct Samples {
    lazy_ttft: Vec<Duration>,
    lazy_ttft_mount: Vec<Duration>,
    pull_ttft: Vec<Duration>,
    pull_only: Vec<Duration>,
    pull_read: Vec<Duration>,
    skopeo_ttft: Vec<Duration>,
    skopeo_copy: Vec<Duration>,
    lazy_full: Vec<Duration>,
    lazy_full_mount: Vec<Duration>,
    lazy_warm: Vec<Duration>,
    host_disk: Vec<Duration>,
    registry_get: Vec<Duration>,
    rss: Vec<Option<(u64, String)>>,
    root_bytes: Vec<u64>,
    /// `<root>/volumes/cache` after the reads (lazy mode's chunk cache).
    cache_bytes: Vec<u64>,
    /// The cache directory on disk (`du`), its directories included.
    cache_disk: Vec<u64>,
    modes: BTreeSet<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    LazyTtft,
    Pull,
    Skopeo,
    LazyFull,
    HostDisk,
    RegistryGet,
}

struct Bench<'a> {
    args: &'a ModelArgs,
    strata: PathBuf,
    work: PathBuf,
    /// The reference clients use (loopback or the slow link's address).
    reference: String,
    /// Where clients reach the registry.
    registry_addr: SocketAddr,
    /// The slow link's rate in bytes per second.
    link_rate: Option<f64>,
    weights: Vec<Weight>,
}

pub(crate) fn run(args: &ModelArgs) -> anyhow::Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("model needs root (mounts, /proc/sys/vm/drop_caches, the slow link's netns)");
    }
    if args.files == 0 || args.runs == 0 {
        bail!("--files and --runs must be positive");
    }
    let file_size = args
        .file_size
        .unwrap_or(if args.slow_link { 64 << 20 } else { 512 << 20 });
    let strata = fs::canonicalize(&args.strata)
        .with_context(|| format!("the strata binary {}", args.strata.display()))?;
    let skopeo = !args.no_skopeo;
    if skopeo && !args.skopeo.exists() {
        bail!(
            "{} not found: run scripts/setup.sh (or pass --no-skopeo)",
            args.skopeo.display()
        );
    }
    let base = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let model_bytes = file_size * args.files as u64;
    // The model (until pushed) + the registry's copy + one measurement's copy + margin.
    let need = 3 * model_bytes + (1 << 30);
    for dir in [base.as_path(), &std::env::temp_dir()] {
        let free = free_bytes(dir)?;
        if free < need {
            bail!(
                "{}: {:.1} GiB free, the bench needs about {:.1} GiB for {} × {} MiB \
                 (pass a smaller --file-size)",
                dir.display(),
                gib(free),
                gib(need),
                args.files,
                file_size >> 20
            );
        }
    }
    let work = tempfile::Builder::new()
        .prefix("strata-bench-model.")
        .tempdir_in(&base)
        .with_context(|| format!("create a work dir under {}", base.display()))?;

    let model_dir = work.path().join("model");
    let t = Instant::now();
    let model = write_model_dir(
        &model_dir,
        &ModelSpec {
            files: args.files,
            file_size,
            seed: args.seed,
        },
    )
    .context("generate the model")?;
    eprintln!(
        "generated {} × {} MiB safetensors ({} tensors in the first) + {} small files in {:.1}s",
        args.files,
        file_size >> 20,
        model.weights[0].tensors.len(),
        model.small_files.len(),
        t.elapsed().as_secs_f64()
    );

    let registry =
        RegistryServer::start().context("start the registry (scripts/setup.sh installs it)")?;
    let local_ref = format!("{}/{REPO}:{TAG}", registry.host());
    let t = Instant::now();
    let (_, out) = run_timed(
        Command::new(&strata)
            .arg("--root")
            .arg(work.path().join("push-root"))
            .args(["artifact", "push", "--plain-http"])
            .arg(&model_dir)
            .arg(&local_ref),
    )
    .context("strata artifact push of the generated model")?;
    eprintln!(
        "pushed {local_ref} (manifest {}) in {:.1}s",
        out.trim(),
        t.elapsed().as_secs_f64()
    );
    fs::remove_dir_all(&model_dir).context("remove the generated model")?;
    let _ = fs::remove_dir_all(work.path().join("push-root"));

    let weights = registry_weights(&registry, &model.weights)?;

    let slow = if args.slow_link {
        Some(SlowLink::up(args, &registry).context("bring up the slow link")?)
    } else {
        None
    };
    let (registry_addr, reference) = match &slow {
        Some(s) => (s.addr, format!("{}/{REPO}:{TAG}", s.addr)),
        None => (registry.addr(), local_ref.clone()),
    };

    let mut bench = Bench {
        args,
        strata,
        work: work.path().to_path_buf(),
        reference,
        registry_addr,
        link_rate: slow.as_ref().and_then(|s| tc_rate_bytes(&s.rate)),
        weights,
    };
    let mut items = vec![Item::LazyTtft, Item::Pull];
    if skopeo {
        items.push(Item::Skopeo);
    }
    items.extend([Item::LazyFull, Item::HostDisk, Item::RegistryGet]);
    let mut samples = Samples::default();
    let mut skopeo_error: Option<String> = None;
    let result = (|| -> anyhow::Result<()> {
        for i in 0..args.runs {
            let mut order = items.clone();
            let n = order.len();
            order.rotate_left(i % n);
            let tensor_seed = args.seed.wrapping_mul(1000).wrapping_add(i as u64);
            for item in order {
                if item == Item::Skopeo && skopeo_error.is_some() {
                    continue;
                }
                let r = bench.measure(i, item, tensor_seed, &mut samples);
                match (item, r) {
                    (_, Ok(())) => {}
                    (Item::Skopeo, Err(e)) if i == 0 => {
                        let msg = format!("{e:#}");
                        eprintln!("skopeo reference dropped: {msg}");
                        skopeo_error = Some(msg);
                    }
                    (_, Err(e)) => return Err(e.context(format!("run {}: {item:?}", i + 1))),
                }
            }
            eprintln!(
                "run {}: first tensor lazy {:.3}s / pull {:.3}s{}; full read {:.2}s / pull+read {:.2}s; \
                 second read {:.2}s / host disk {:.2}s",
                i + 1,
                secs(samples.lazy_ttft.last()),
                secs(samples.pull_ttft.last()),
                if skopeo_error.is_none() && skopeo {
                    format!(" / skopeo {:.3}s", secs(samples.skopeo_ttft.last()))
                } else {
                    String::new()
                },
                secs(samples.lazy_full.last()),
                secs(samples.pull_only.last()) + secs(samples.pull_read.last()),
                secs(samples.lazy_warm.last()),
                secs(samples.host_disk.last()),
            );
        }
        Ok(())
    })();
    drop(slow);
    if let Err(e) = result {
        eprintln!("registry log tail:\n{}", registry.log_tail(20));
        let left = mounts_under(work.path());
        if !left.is_empty() {
            eprintln!("mounts left under the work dir (kept): {left:?}");
            let _ = work.keep();
        }
        return Err(e);
    }
    drop(registry);
    report(args, file_size, &bench, &samples, skopeo_error.as_deref());
    Ok(())
}

impl Bench<'_> {
    fn total(&self) -> u64 {
        self.weights.iter().map(|w| w.size).sum()
    }

    fn strata(&self, root: &Path) -> Command {
        let mut cmd = Command::new(&self.strata);
        cmd.arg("--root").arg(root);
        cmd
    }

    /// Before each fetch: the page cache dropped, then the registry's blobs read back in,
    /// so every fetch finds the same state — the registry's bytes in memory, the rest of
    /// memory free. (Without the drop, a fetch after another had to reclaim the page cache
    /// the previous one filled, and reading freshly pulled blobs ran at a third of the
    /// disk's rate on this VM.)
    fn fresh_cache(&mut self) -> anyhow::Result<()> {
        drop_caches()?;
        for w in &self.weights {
            checksum_file(&w.registry_file)?;
        }
        sync();
        Ok(())
    }

    fn measure(
        &mut self,
        run: usize,
        item: Item,
        tensor_seed: u64,
        s: &mut Samples,
    ) -> anyhow::Result<()> {
        let dir = self.work.join(format!("run{run}-{item:?}"));
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        match item {
            Item::LazyTtft => {
                self.fresh_cache()?;
                let root = dir.join("root");
                let target = dir.join("mnt");
                fs::create_dir(&target)?;
                let start = Instant::now();
                run_timed(
                    self.strata(&root)
                        .args(["volume", "mount", "--plain-http"])
                        .args(&self.args.volume_args)
                        .arg(&self.reference)
                        .arg(&target),
                )
                .context("strata volume mount")?;
                let mounted = start.elapsed();
                let first = target.join(&self.weights[0].name);
                first_tensor(&first, tensor_seed, &self.weights[0])?;
                s.lazy_ttft.push(start.elapsed());
                s.lazy_ttft_mount.push(mounted);
                s.modes.insert(self.volume_mode(&root, &target)?);
                self.umount(&root, &target)?;
            }
            Item::Pull => {
                self.fresh_cache()?;
                let root = dir.join("root");
                let (pulled, _) =
                    run_timed(
                        self.strata(&root)
                            .args(["pull", "--plain-http", &self.reference]),
                    )
                    .context("strata pull")?;
                let blob = |w: &Weight| {
                    root.join("content/blobs/sha256")
                        .join(w.digest.trim_start_matches("sha256:"))
                };
                let t = first_tensor(&blob(&self.weights[0]), tensor_seed, &self.weights[0])?;
                s.pull_ttft.push(pulled + t.read);
                s.pull_only.push(pulled);
                let start = Instant::now();
                for w in &self.weights {
                    check_sum(&blob(w), w)?;
                }
                s.pull_read.push(start.elapsed());
                remove(&root)?;
            }
            Item::Skopeo => {
                self.fresh_cache()?;
                let dest = dir.join("copy");
                let (copied, _) = run_timed(
                    Command::new(&self.args.skopeo)
                        .args(["copy", "--quiet", "--src-tls-verify=false"])
                        .arg(format!("docker://{}", self.reference))
                        .arg(format!("dir:{}", dest.display())),
                )
                .context("skopeo copy")?;
                let blob = dest.join(self.weights[0].digest.trim_start_matches("sha256:"));
                let t = first_tensor(&blob, tensor_seed, &self.weights[0])
                    .context("read the first tensor from skopeo's copy")?;
                s.skopeo_ttft.push(copied + t.read);
                s.skopeo_copy.push(copied);
                remove(&dest)?;
            }
            Item::LazyFull => {
                self.fresh_cache()?;
                let root = dir.join("root");
                let target = dir.join("mnt");
                fs::create_dir(&target)?;
                let before = pids();
                let start = Instant::now();
                run_timed(
                    self.strata(&root)
                        .args(["volume", "mount", "--plain-http"])
                        .args(&self.args.volume_args)
                        .arg(&self.reference)
                        .arg(&target),
                )
                .context("strata volume mount")?;
                let mounted = start.elapsed();
                for w in &self.weights {
                    check_sum(&target.join(&w.name), w)?;
                }
                s.lazy_full.push(start.elapsed());
                s.lazy_full_mount.push(mounted);
                // The second read: Strata's cache (on disk), not the page cache.
                drop_caches()?;
                let start = Instant::now();
                for w in &self.weights {
                    check_sum(&target.join(&w.name), w)?;
                }
                s.lazy_warm.push(start.elapsed());
                s.rss.push(server_rss(&root, &target, &before));
                s.root_bytes.push(disk_usage(&root));
                let cache = root.join("volumes/cache");
                if cache.exists() {
                    // What the bound covers: chunks and passthrough copies (not the
                    // 8-byte usage counter beside them).
                    s.cache_bytes
                        .push(file_bytes(&cache.join("sha256")) + file_bytes(&cache.join("files")));
                    s.cache_disk.push(disk_usage(&cache));
                }
                s.modes.insert(self.volume_mode(&root, &target)?);
                self.umount(&root, &target)?;
            }
            Item::HostDisk => {
                drop_caches()?;
                let start = Instant::now();
                for w in &self.weights {
                    check_sum(&w.registry_file, w)?;
                }
                s.host_disk.push(start.elapsed());
            }
            Item::RegistryGet => {
                self.fresh_cache()?;
                let mut client = RawClient::new(self.registry_addr);
                let start = Instant::now();
                for w in &self.weights {
                    let path = format!("/v2/{REPO}/blobs/{}", w.digest);
                    let mut sink = CountingSink(0);
                    let r = client
                        .download("GET", &path, &[], &mut sink)
                        .with_context(|| format!("GET {path}"))?;
                    if r.status != 200 || sink.0 != w.size {
                        bail!(
                            "GET {path}: status {}, {} bytes (expected 200, {})",
                            r.status,
                            sink.0,
                            w.size
                        );
                    }
                }
                s.registry_get.push(start.elapsed());
            }
        }
        let _ = fs::remove_dir_all(&dir);
        Ok(())
    }

    /// The MODE column of `volume ls` for `target`.
    fn volume_mode(&self, root: &Path, target: &Path) -> anyhow::Result<String> {
        let (_, out) =
            run_timed(self.strata(root).args(["volume", "ls"])).context("strata volume ls")?;
        let target = fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
        parse_mode(&out, &target.to_string_lossy())
            .with_context(|| format!("no MODE for {} in `volume ls`:\n{out}", target.display()))
    }

    fn umount(&self, root: &Path, target: &Path) -> anyhow::Result<()> {
        run_timed(self.strata(root).args(["volume", "umount"]).arg(target))
            .context("strata volume umount")?;
        let left = mounts_under(target.parent().unwrap_or(target));
        if !left.is_empty() {
            bail!("mounts left after `volume umount`: {left:?}");
        }
        remove(root)
    }
}

/// Reads the MODE of `target`'s row from `volume ls` output (columns aligned by the
/// header; an empty column, such as an artifact's snapshotter, stays aligned).
fn parse_mode(out: &str, target: &str) -> Option<String> {
    let mut lines = out.lines();
    let header = lines.next()?;
    let at = header.find("MODE")?;
    lines
        .filter(|l| l.split_whitespace().next() == Some(target))
        .find_map(|l| l.get(at..)?.split_whitespace().next().map(str::to_owned))
}

/// Opens `path`, reads the safetensors header length and header, parses it, and reads the
/// tensor `seed` picks (checked against the registry's copy after the clock stops).
fn first_tensor(path: &Path, seed: u64, weight: &Weight) -> anyhow::Result<FirstTensor> {
    let start = Instant::now();
    let (tensor, bytes, at) = read_first_tensor(path, seed)
        .with_context(|| format!("read the first tensor of {}", path.display()))?;
    let read = start.elapsed();
    let mut expected = vec![0u8; bytes.len()];
    File::open(&weight.registry_file)
        .and_then(|f| f.read_exact_at(&mut expected, at))
        .with_context(|| format!("read {}", weight.registry_file.display()))?;
    if bytes != expected {
        bail!(
            "{}: tensor {} ({} bytes at {at}) differs from the registry's blob",
            path.display(),
            tensor.name,
            bytes.len()
        );
    }
    Ok(FirstTensor { read })
}

fn read_first_tensor(path: &Path, seed: u64) -> anyhow::Result<(TensorInfo, Vec<u8>, u64)> {
    let file = File::open(path).context("open")?;
    let mut len = [0u8; 8];
    file.read_exact_at(&mut len, 0)
        .context("read the header length")?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        bail!("header length {n} is not plausible");
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact_at(&mut header, 8)
        .context("read the header")?;
    let tensors = parse_safetensors_header(&header).map_err(anyhow::Error::msg)?;
    if tensors.is_empty() {
        bail!("no tensors in the header");
    }
    let tensor = tensors[(splitmix(seed) % tensors.len() as u64) as usize].clone();
    let at = 8 + n + tensor.begin;
    let mut bytes = vec![0u8; (tensor.end - tensor.begin) as usize];
    file.read_exact_at(&mut bytes, at)
        .with_context(|| format!("read tensor {}", tensor.name))?;
    Ok((tensor, bytes, at))
}

fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Reads `path` sequentially and checks it is `weight`'s bytes.
fn check_sum(path: &Path, weight: &Weight) -> anyhow::Result<()> {
    let (sum, len) = checksum_file(path)?;
    if len != weight.size || sum != weight.checksum {
        bail!(
            "{}: {len} bytes, checksum {sum:016x}; expected {} bytes, {:016x} (the registry's {})",
            path.display(),
            weight.size,
            weight.checksum,
            weight.digest
        );
    }
    Ok(())
}

/// A position-dependent checksum of the file (Fletcher-like over 64-bit words; far faster
/// than the reads it checks) and its length, read in [`READ_BUF`] pieces.
fn checksum_file(path: &Path) -> anyhow::Result<(u64, u64)> {
    let mut file = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut buf = vec![0u8; READ_BUF];
    let (mut a, mut b, mut len) = (0u64, 0u64, 0u64);
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            let n = file
                .read(&mut buf[filled..])
                .with_context(|| format!("read {} at {}", path.display(), len + filled as u64))?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        let words = buf[..filled].chunks_exact(8);
        let tail = words.remainder();
        for w in words {
            a = a.wrapping_add(u64::from_le_bytes(w.try_into().expect("8 bytes")));
            b = b.wrapping_add(a);
        }
        for &byte in tail {
            a = a.wrapping_add(u64::from(byte));
            b = b.wrapping_add(a);
        }
        len += filled as u64;
        if filled < buf.len() {
            break;
        }
    }
    Ok((a ^ b.rotate_left(32), len))
}

/// The weight files' digests (from the pushed manifest's filepath annotations), their
/// blob files in the registry's storage, and their checksums (read once: this also puts
/// them in the page cache).
fn registry_weights(
    registry: &RegistryServer,
    generated: &[strata_testdata::model::WeightFile],
) -> anyhow::Result<Vec<Weight>> {
    let path = format!("/v2/{REPO}/manifests/{TAG}");
    let r = registry
        .client()
        .get(&path, &[("Accept", MANIFEST_ACCEPT)])
        .with_context(|| format!("GET {path}"))?;
    if r.status != 200 {
        bail!("GET {path}: status {}: {}", r.status, r.text());
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&r.body).context("the pushed manifest is not JSON")?;
    let layers = manifest["layers"]
        .as_array()
        .context("the pushed manifest has no layers")?;
    let mut weights = Vec::new();
    for g in generated {
        let layer = layers
            .iter()
            .find(|l| {
                let a = &l["annotations"];
                a["org.cncf.model.filepath"].as_str() == Some(g.name.as_str())
                    || a["org.opencontainers.image.title"].as_str() == Some(g.name.as_str())
            })
            .with_context(|| format!("no layer for {} in the pushed manifest", g.name))?;
        let digest = layer["digest"]
            .as_str()
            .context("layer without a digest")?
            .to_owned();
        let registry_file = registry.blob_data_path(&digest);
        let (checksum, len) = checksum_file(&registry_file)?;
        if len != g.size {
            bail!(
                "{}: {len} bytes in the registry, {} written",
                g.name,
                g.size
            );
        }
        weights.push(Weight {
            name: g.name.clone(),
            digest,
            size: g.size,
            registry_file,
            checksum,
        });
    }
    Ok(weights)
}

struct CountingSink(u64);

impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
mod host;
mod report;

use host::*;
use report::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_column_is_read_by_the_header() {
        let out = "TARGET      IMAGE           SUBPATH  SNAPSHOTTER  MODE         STATE\n\
                   /tmp/a/mnt  r:1             /                     whole-blobs  mounted\n\
                   /tmp/b/mnt  r:2             /        overlayfs    snapshot     mounted\n";
        assert_eq!(
            parse_mode(out, "/tmp/a/mnt").as_deref(),
            Some("whole-blobs")
        );
        assert_eq!(parse_mode(out, "/tmp/b/mnt").as_deref(), Some("snapshot"));
        assert_eq!(parse_mode(out, "/tmp/c/mnt"), None);
    }

    #[test]
    fn cache_bound() {
        let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(cache_bound_mib(&v(&[])), DEFAULT_CACHE_MIB);
        assert_eq!(
            cache_bound_mib(&v(&["--passthrough", "--cache-size=512"])),
            512
        );
        assert_eq!(cache_bound_mib(&v(&["--cache-size", "64"])), 64);
    }

    #[test]
    fn tc_rates() {
        assert_eq!(tc_rate_bytes("100mbit"), Some(12.5e6));
        assert_eq!(tc_rate_bytes("1gbit"), Some(125e6));
        assert_eq!(tc_rate_bytes("10mbps"), Some(10e6));
        assert_eq!(tc_rate_bytes("fast"), None);
    }

    #[test]
    fn checksum_depends_on_position() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, [1u8, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        fs::write(&b, [2u8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_ne!(checksum_file(&a).unwrap(), checksum_file(&b).unwrap());
        assert_eq!(checksum_file(&a).unwrap().1, 16);
    }
}
