//! `strata run` overhead (issue #19): `strata run --rm IMAGE sh -c :` — find the image,
//! prepare and mount a snapshot, build the spec, runc, clean up — against `runc run` of a
//! bundle prepared once (the same spec, the same image mounted), alternating, each run a
//! fresh container. The difference of the medians is what Strata adds around runc; the
//! target is ≤ 50 ms. Needs root, runc and docker-registry.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use strata_testdata::registry::RegistryServer;
use strata_testdata::{ImageSpec, LayerSpec, Platform};

use crate::convert::loadavg;
use crate::stats::summarize;

/// The target for the difference of the medians.
const TARGET: Duration = Duration::from_millis(50);

#[derive(Debug, Args)]
pub(crate) struct RunOverheadArgs {
    /// The strata binary.
    #[arg(long, default_value = "target/release/strata")]
    strata: PathBuf,
    /// The runc binary.
    #[arg(long, default_value = "/usr/sbin/runc")]
    runc: PathBuf,
    /// Runs of each.
    #[arg(long, default_value_t = 20)]
    runs: usize,
    /// The snapshotter `strata run` uses.
    #[arg(long, default_value = "overlayfs")]
    snapshotter: String,
    /// Directory for the root and bundle (default: a temp dir under /var/tmp).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// The host's `binary` with the shared libraries `ldd` names, as one layer.
fn host_binary_layer(binary: &str, at: &str) -> anyhow::Result<LayerSpec> {
    let mut layer = LayerSpec::new()
        .created_by(format!("{binary} as {at}"))
        .file(at, 0o755, std::fs::read(binary)?);
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("run ldd")?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            layer = layer.file(path.trim_start_matches('/'), 0o755, std::fs::read(path)?);
        }
    }
    Ok(layer)
}

fn ok(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("start {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn timed(cmd: &mut Command, what: &str) -> anyhow::Result<Duration> {
    let t = Instant::now();
    ok(cmd, what)?;
    Ok(t.elapsed())
}

pub(crate) fn run(args: &RunOverheadArgs) -> anyhow::Result<()> {
    if args.runs == 0 {
        bail!("--runs must be positive");
    }
    if !rustix::process::geteuid().is_root() {
        bail!("run-overhead needs root (containers, mounts)");
    }
    let strata = std::fs::canonicalize(&args.strata)
        .with_context(|| format!("{} (build it first)", args.strata.display()))?;
    let base = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/var/tmp"));
    let work = tempfile::Builder::new()
        .prefix("strata-bench-run.")
        .tempdir_in(&base)?;
    let w = work.path();
    let image = ImageSpec::new(Platform::new("linux", "amd64", None))
        .layer(host_binary_layer("/bin/dash", "bin/sh")?)
        .env("PATH=/bin")
        .cmd(["/bin/sh"])
        .build()?;
    let registry = RegistryServer::start().context("start the registry")?;
    registry.push_image("bench/sh", "1", &image)?;
    let reference = format!("{}/bench/sh:1", registry.host());
    let root = w.join("root");
    let strata_cmd = |args: &[&str]| {
        let mut cmd = Command::new(&strata);
        cmd.arg("--root").arg(&root).args(args);
        cmd
    };
    ok(
        &mut strata_cmd(&[
            "pull",
            "--plain-http",
            "--snapshotter",
            &args.snapshotter,
            &reference,
        ]),
        "strata pull",
    )?;
    // The reference bundle: the spec `strata run` writes, over the image mounted once.
    ok(
        &mut strata_cmd(&[
            "run",
            "--snapshotter",
            &args.snapshotter,
            "--name",
            "spec-source",
            &reference,
            "sh",
            "-c",
            ":",
        ]),
        "strata run (spec source)",
    )?;
    let spec_text = std::fs::read_to_string(root.join("containers/spec-source/config.json"))?;
    let mut spec: serde_json::Value = serde_json::from_str(&spec_text)?;
    let bundle = w.join("bundle");
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    ok(
        &mut strata_cmd(&[
            "mount",
            "--snapshotter",
            &args.snapshotter,
            &reference,
            rootfs.to_str().context("path")?,
        ]),
        "strata mount",
    )?;
    spec["root"]["path"] = rootfs.to_string_lossy().into_owned().into();
    spec["linux"]["cgroupsPath"] = "/strata-bench/runc".into();
    std::fs::write(bundle.join("config.json"), serde_json::to_vec(&spec)?)?;
    let runc_root = w.join("runc");

    let (mut with_strata, mut with_runc) = (Vec::new(), Vec::new());
    let result = (|| -> anyhow::Result<()> {
        for i in 0..args.runs {
            let strata_run = || {
                timed(
                    &mut strata_cmd(&[
                        "run",
                        "--rm",
                        "--snapshotter",
                        &args.snapshotter,
                        &reference,
                        "sh",
                        "-c",
                        ":",
                    ]),
                    "strata run",
                )
            };
            let runc_run = || {
                let mut cmd = Command::new(&args.runc);
                cmd.arg("--root")
                    .arg(&runc_root)
                    .args(["run", "--bundle"])
                    .arg(&bundle)
                    .arg(format!("bench-{i}"));
                timed(&mut cmd, "runc run")
            };
            if i % 2 == 0 {
                with_strata.push(strata_run()?);
                with_runc.push(runc_run()?);
            } else {
                with_runc.push(runc_run()?);
                with_strata.push(strata_run()?);
            }
        }
        Ok(())
    })();
    let _ = ok(
        &mut strata_cmd(&["umount", rootfs.to_str().unwrap_or_default()]),
        "strata umount",
    );
    let _ = ok(&mut strata_cmd(&["rm", "spec-source"]), "strata rm");
    result?;
    let s = summarize(&with_strata);
    let r = summarize(&with_runc);
    let overhead = s.median.saturating_sub(r.median);
    println!(
        "{} runs each, snapshotter {}, load average {}",
        args.runs,
        args.snapshotter,
        loadavg()
    );
    println!("| case | median (min–max) |");
    println!("|---|---|");
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "| `strata run --rm IMAGE sh -c :` | {:.1} ms ({:.1}–{:.1}) |",
        ms(s.median),
        ms(s.min),
        ms(s.max)
    );
    println!(
        "| `runc run` of a prepared bundle | {:.1} ms ({:.1}–{:.1}) |",
        ms(r.median),
        ms(r.min),
        ms(r.max)
    );
    println!(
        "overhead: {:.1} ms (target ≤ {} ms: {})",
        ms(overhead),
        TARGET.as_millis(),
        if overhead <= TARGET { "met" } else { "NOT met" }
    );
    Ok(())
}
