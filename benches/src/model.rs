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
                    s.cache_bytes.push(disk_usage(&cache));
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

/// The registry served through `benches/slow-link.sh`: the script's namespace, and a
/// second docker-registry inside it on the same storage. Torn down on drop.
struct SlowLink {
    script: PathBuf,
    addr: SocketAddr,
    registry: Child,
    rate: String,
    delay_ms: String,
}

impl SlowLink {
    fn up(args: &ModelArgs, registry: &RegistryServer) -> anyhow::Result<SlowLink> {
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

fn report(
    args: &ModelArgs,
    file_size: u64,
    b: &Bench<'_>,
    s: &Samples,
    skopeo_error: Option<&str>,
) {
    let total = b.total();
    let mb = total as f64 / 1e6;
    let mode = s.modes.iter().cloned().collect::<Vec<_>>().join(", ");
    let link = if args.slow_link {
        "the slow link (benches/slow-link.sh)"
    } else {
        "loopback"
    };
    println!(
        "\nModel: {} × {} MiB safetensors ({:.0} MB of weights) + config/tokenizer files, \
         ModelPack with a chunk index, registry on {link}; {} runs, medians (min–max). \
         Volume mode measured (`volume ls`): **{mode}**{}.\n",
        args.files,
        file_size >> 20,
        mb,
        args.runs,
        if args.volume_args.is_empty() {
            String::new()
        } else {
            format!(", `volume mount {}`", args.volume_args.join(" "))
        }
    );
    println!("Time to first tensor (open, header, parse, one tensor at a seeded random index):\n");
    println!("| path | median | min–max | of which mount / pull / copy |");
    println!("|---|---|---|---|");
    let row = |label: &str, v: &[Duration], part: &[Duration]| {
        if v.is_empty() {
            return None;
        }
        let t = summarize(v);
        let p = summarize(part);
        println!(
            "| {label} | {} | {} | {} |",
            fmt_t(t.median),
            fmt_range(&t),
            fmt_t(p.median)
        );
        Some(t.median)
    };
    let lazy = row(
        &format!("`strata volume mount` ({mode}) + first tensor"),
        &s.lazy_ttft,
        &s.lazy_ttft_mount,
    );
    let pull = row("`strata pull` + first tensor", &s.pull_ttft, &s.pull_only);
    let skopeo = row(
        "`skopeo copy docker://… dir:…` + first tensor",
        &s.skopeo_ttft,
        &s.skopeo_copy,
    );
    println!();
    if let (Some(l), Some(p)) = (lazy, pull) {
        println!(
            "- lazy / `strata pull` (target ≤ 0.05×): **{:.3}×**",
            l.as_secs_f64() / p.as_secs_f64()
        );
    }
    if let (Some(l), Some(k)) = (lazy, skopeo) {
        println!(
            "- lazy / `skopeo copy` (target ≤ 0.05×): **{:.3}×**",
            l.as_secs_f64() / k.as_secs_f64()
        );
    }
    if let Some(e) = skopeo_error {
        println!("- skopeo reference missing: {e}");
    }

    println!(
        "\nFull sequential read of all weights ({mb:.0} MB, {READ_BUF} B reads, every byte checked):\n"
    );
    println!("| path | median | min–max | throughput |");
    println!("|---|---|---|---|");
    let sum = |a: &[Duration], b: &[Duration]| -> Vec<Duration> {
        a.iter().zip(b).map(|(x, y)| *x + *y).collect()
    };
    let rate = |d: Duration| mb / d.as_secs_f64();
    let row = |label: &str, v: &[Duration]| {
        if v.is_empty() {
            return None;
        }
        let t = summarize(v);
        println!(
            "| {label} | {} | {} | {:.0} MB/s |",
            fmt_t(t.median),
            fmt_range(&t),
            rate(t.median)
        );
        Some(rate(t.median))
    };
    let lazy_full = row(
        &format!("`strata volume mount` ({mode}) + read through the volume, cold"),
        &s.lazy_full,
    );
    let pull_read = row(
        "`strata pull` + read of the pulled blobs",
        &sum(&s.pull_only, &s.pull_read),
    );
    let pull_only = row("`strata pull` alone", &s.pull_only);
    let get = row(
        "registry GET of each blob, one connection, bytes discarded (link limit)",
        &s.registry_get,
    );
    let warm = row(
        "second read through the volume (page cache dropped: Strata's cache on disk)",
        &s.lazy_warm,
    );
    let disk = row(
        "host disk: the registry's blob files (page cache dropped)",
        &s.host_disk,
    );
    println!();
    if let (Some(l), Some(p)) = (lazy_full, pull_read) {
        println!(
            "- cold read / (`strata pull` + read) throughput (target ≥ 0.9×): **{:.2}×**",
            l / p
        );
    }
    if let (Some(l), Some(p)) = (lazy_full, pull_only) {
        println!("- cold read / `strata pull` alone: {:.2}×", l / p);
    }
    if let (Some(l), Some(g)) = (lazy_full, get) {
        println!("- cold read / registry GET rate: {:.2}×", l / g);
    }
    if let (Some(link), Some(l)) = (b.link_rate, lazy_full) {
        println!(
            "- cold read / link rate ({:.1} MB/s; target ≥ 0.9×): **{:.2}×**",
            link / 1e6,
            l * 1e6 / link
        );
    }
    if let (Some(w), Some(d)) = (warm, disk) {
        println!(
            "- second read / host disk (target ≥ 0.8×): **{:.2}×**",
            w / d
        );
    }
    let rss: Vec<&(u64, String)> = s.rss.iter().flatten().collect();
    if rss.is_empty() {
        println!("- RSS of the process serving the volume: n/a (no separate process serves it)");
    } else {
        let max = rss.iter().map(|(r, _)| *r).max().unwrap_or(0);
        let names: BTreeSet<&str> = rss.iter().map(|(_, n)| n.as_str()).collect();
        println!(
            "- RSS (VmHWM) of the process serving the volume: max {:.1} MiB over {} runs ({}; target ≤ 64 MiB)",
            max as f64 / (1 << 20) as f64,
            rss.len(),
            names.into_iter().collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(max) = s.cache_bytes.iter().max() {
        let bound = cache_bound_mib(&args.volume_args);
        println!(
            "- chunk cache (`<root>/volumes/cache`) after both reads: max {:.0} MB ({:.2}× the weights), \
             bound `--cache-size` {bound} MiB: {}",
            *max as f64 / 1e6,
            *max as f64 / total as f64,
            if *max <= bound << 20 {
                "within"
            } else {
                "**over**"
            }
        );
    } else if let Some(max) = s.root_bytes.iter().max() {
        println!(
            "- the volume's root on disk after both reads: max {:.0} MB ({:.2}× the weights; no chunk cache in this mode)",
            *max as f64 / 1e6,
            *max as f64 / total as f64
        );
    }
    println!(
        "- SHA-256 on this CPU (the verification floor): {:.0} MB/s",
        sha256_rate()
    );
}

/// The `--cache-size` (MiB) among the extra `volume mount` arguments, else the default.
fn cache_bound_mib(args: &[String]) -> u64 {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = match a.strip_prefix("--cache-size") {
            Some("") => it.next().map(String::as_str),
            Some(v) => v.strip_prefix('='),
            None => None,
        };
        if let Some(n) = v.and_then(|v| v.parse().ok()) {
            return n;
        }
    }
    DEFAULT_CACHE_MIB
}

/// A tc rate (`100mbit`, `1gbit`, `512kibit`, `10mbps`) in bytes per second (tc's `mbit`
/// is 10^6 bits, `mbps` 10^6 bytes).
fn tc_rate_bytes(rate: &str) -> Option<f64> {
    let (r, unit) = if let Some(r) = rate.strip_suffix("bit") {
        (r, 8.0)
    } else {
        (rate.strip_suffix("bps")?, 1.0)
    };
    let split = r.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(r.len());
    let mult = match &r[split..] {
        "" => 1.0,
        "k" => 1e3,
        "m" => 1e6,
        "g" => 1e9,
        "ki" => 1024.0,
        "mi" => 1024.0 * 1024.0,
        "gi" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    r[..split].parse::<f64>().ok().map(|n| n * mult / unit)
}

/// SHA-256 throughput of one core over 256 MiB in memory.
fn sha256_rate() -> f64 {
    let buf = strata_testdata::random_bytes(64 << 20, 1);
    let mut d = strata_formats::Digester::new();
    let start = Instant::now();
    for _ in 0..4 {
        d.update(&buf);
    }
    let t = start.elapsed();
    std::hint::black_box(d.digest());
    (256u64 << 20) as f64 / t.as_secs_f64() / 1e6
}

fn fmt_t(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{:.1} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

fn fmt_range(s: &Summary) -> String {
    if s.max < Duration::from_secs(1) {
        format!(
            "{:.1}–{:.1} ms",
            s.min.as_secs_f64() * 1e3,
            s.max.as_secs_f64() * 1e3
        )
    } else {
        format!("{:.2}–{:.2} s", s.min.as_secs_f64(), s.max.as_secs_f64())
    }
}

fn secs(d: Option<&Duration>) -> f64 {
    d.map_or(0.0, Duration::as_secs_f64)
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

fn free_bytes(dir: &Path) -> anyhow::Result<u64> {
    let st = rustix::fs::statvfs(dir).with_context(|| format!("statvfs {}", dir.display()))?;
    Ok(st.f_bavail * st.f_frsize)
}

fn remove(path: &Path) -> anyhow::Result<()> {
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
fn disk_usage(path: &Path) -> u64 {
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
        total += meta.blocks() * 512;
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

fn drop_caches() -> anyhow::Result<()> {
    sync();
    fs::write("/proc/sys/vm/drop_caches", "3").context("drop caches (/proc/sys/vm/drop_caches)")
}

fn sync() {
    let _ = Command::new("sync").status();
}

/// Every process id now.
fn pids() -> BTreeSet<u32> {
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
fn server_rss(root: &Path, target: &Path, before: &BTreeSet<u32>) -> Option<(u64, String)> {
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

fn holds_dev_fuse(pid: u32) -> bool {
    fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|d| {
        d.flatten()
            .any(|e| fs::read_link(e.path()).is_ok_and(|l| l == Path::new("/dev/fuse")))
    })
}

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
