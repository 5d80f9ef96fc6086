//! `strata convert`: an image in the store to eStargz or EROFS, or `--check` of one.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::error::ErrorKind;
use clap::{Args, CommandFactory as _};
use std::sync::Arc;

use strata::image::convert::{ConvertEvent, ConvertOptions, LayerFormat, check, convert};
use strata_formats::estargz::{Compression, WriteOptions};

use super::format;
use super::progress::Reporter;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  strata convert docker.io/library/sample:1.0 docker.io/library/sample:1.0-esgz\n  \
    strata convert --zstd --chunk-size 1048576 app:1 app:1-zstd\n  \
    strata convert --prioritize /usr/bin/python3 --prioritize /usr/lib/libpython3.so app:1 app:1-esgz\n  \
    strata convert --prioritize-auto app:1 app:1-esgz\n  \
    strata convert --check docker.io/library/sample:1.0-esgz\n  \
    strata convert --erofs app:1 app:1-erofs\n  \
    strata convert --plain-http --push 127.0.0.1:5000/app:1 127.0.0.1:5000/app:1-esgz"
)]
pub(crate) struct ConvertArgs {
    /// The local image to convert (`strata image ls`), or with --check the one to verify.
    /// One not in the store is pulled first if SRC names its registry host
    /// (registry.example.com/app:1) or --pull is given.
    src: String,
    /// The name of the converted image.
    #[arg(required_unless_present = "check")]
    dst: Option<String>,
    /// Verify a converted image instead: per eStargz layer the TOC digest and every chunk
    /// digest; per EROFS layer the blob digest and the image's structure.
    #[arg(long)]
    check: bool,
    /// Native EROFS layers instead of eStargz (`application/vnd.erofs.layer.v1`, as
    /// containerd 2.x's erofs snapshotter reads them; whiteouts as overlayfs marks, 4 KiB
    /// blocks, the UUID derived from each layer's diffID), for `--snapshotter erofs`.
    #[arg(long, conflicts_with_all = ["zstd", "level", "prioritize", "prioritize_from", "prioritize_auto"])]
    erofs: bool,
    /// zstd:chunked instead of gzip eStargz.
    #[arg(long)]
    zstd: bool,
    /// Largest uncompressed chunk of a file per compressed member, in bytes (at least 1).
    #[arg(long, default_value_t = 4 << 20, value_parser = parse_chunk_size)]
    chunk_size: u64,
    /// Compression level (gzip 0–9, default 7; zstd 1–22, default 3).
    #[arg(long)]
    level: Option<u32>,
    /// A file to prefetch first, in access order (repeatable); it must be in the image.
    #[arg(long = "prioritize", value_name = "PATH")]
    prioritize: Vec<String>,
    /// A file listing paths to prefetch first, one per line.
    #[arg(long, value_name = "LIST", conflicts_with = "prioritize")]
    prioritize_from: Option<PathBuf>,
    /// Prefetch first the files the image's entrypoint/cmd reads at start (the command, its
    /// `#!` interpreters, ELF loader and libraries), derived from the config and layers.
    #[arg(long, conflicts_with_all = ["prioritize", "prioritize_from"])]
    prioritize_auto: bool,
    /// Pull SRC from its registry if it is not in the store, even when it does not name a
    /// registry host (docker.io is then assumed).
    #[arg(long, conflicts_with = "check")]
    pull: bool,
    /// Push DST to its registry after converting (DST must then be a registry reference).
    #[arg(long)]
    push: bool,
    #[command(flatten)]
    registry: super::transfer::RegistryArgs,
    /// Layers converted at once (default: one per CPU).
    #[arg(long, default_value_t = 0)]
    parallelism: usize,
}

/// `--chunk-size`: a positive number of bytes.
fn parse_chunk_size(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(0) => Err("a chunk holds at least 1 byte".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("not a number of bytes ({e})")),
    }
}

impl ConvertArgs {
    /// What clap cannot check flag by flag: the level's range depends on --zstd.
    fn validate(&self) -> Result<(), clap::Error> {
        let Some(level) = self.level.filter(|_| !self.check) else {
            return Ok(());
        };
        let (name, low, high) = if self.zstd {
            ("zstd", 1, 22)
        } else {
            ("gzip", 0, 9)
        };
        if (low..=high).contains(&level) {
            return Ok(());
        }
        let mut cli = super::Cli::command();
        cli.build();
        let convert = cli
            .find_subcommand_mut("convert")
            .expect("invariant: convert is a subcommand");
        Err(convert.error(
            ErrorKind::ValueValidation,
            format!(
                "invalid value '{level}' for '--level <LEVEL>': {name} levels are {low}–{high}"
            ),
        ))
    }
}

/// Whether `reference` names its registry host (`registry.example.com/app:1`,
/// `localhost:5000/app`), as Docker decides it: a first component with a `.` or `:`, or
/// `localhost`.
fn names_registry(reference: &str) -> bool {
    reference.split_once('/').is_some_and(|(first, _)| {
        first.contains('.') || first.contains(':') || first == "localhost"
    })
}

/// The source image: the local one named `args.src` (as given or fully qualified), or
/// pulled when SRC names a registry or --pull is given.
fn source_image(
    root: &Path,
    store: &strata::store::Store,
    args: &ConvertArgs,
) -> anyhow::Result<strata::metadata::ImageRecord> {
    let not_found =
        |e: &strata::metadata::MetadataError| e.kind() == strata_formats::ErrorKind::NotFound;
    match strata::image::find_image(store, &args.src) {
        Ok(img) => return Ok(img),
        Err(e) if not_found(&e) => {}
        Err(e) => return Err(e).with_context(|| format!("convert: image {:?}", args.src)),
    }
    let Ok(reference) = args.src.parse::<strata::registry::Reference>() else {
        bail!(
            "convert: image {:?} is not in the store (see `strata image ls`)",
            args.src
        );
    };
    let full = reference.to_string();
    if args.check {
        bail!(
            "convert --check: image {:?} is not in the store (see `strata image ls`)",
            args.src
        );
    }
    if !(args.pull || names_registry(&args.src)) {
        bail!(
            "convert: image {:?} is not in the store (see `strata image ls`); \
             to convert {full} from its registry, pass --pull or run `strata pull {full}` first",
            args.src
        );
    }
    eprintln!("{} is not in the store: pulling {full}", args.src);
    super::transfer::pull_reference(root, &args.src, &args.registry)?;
    store
        .metadata()
        .image(&full)
        .with_context(|| format!("convert: image {full}"))
}

pub(crate) fn run(root: &Path, args: &ConvertArgs) -> anyhow::Result<()> {
    if let Err(e) = args.validate() {
        e.exit();
    }
    let store = super::open_store(root)?;
    let src = source_image(root, &store, args)?;
    if args.check {
        let results = check(&store, &src)?;
        let mut bad = 0;
        for r in &results {
            match &r.result {
                Ok(()) if r.format == LayerFormat::Erofs => println!(
                    "ok       {}  EROFS, {} inodes, blob digest and image structure verified",
                    r.digest, r.entries
                ),
                Ok(()) => println!(
                    "ok       {}  {} entries, every chunk verified",
                    r.digest, r.entries
                ),
                Err(e) => {
                    bad += 1;
                    println!("INVALID  {}  {e}", r.digest);
                }
            }
        }
        if bad > 0 {
            bail!(
                "{bad} of {} layers of {} are not valid (eStargz or EROFS)",
                results.len(),
                args.src
            );
        }
        return Ok(());
    }
    let mut prioritized = args.prioritize.clone();
    if let Some(list) = &args.prioritize_from {
        let text =
            std::fs::read_to_string(list).with_context(|| format!("read {}", list.display()))?;
        prioritized.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    let opts = ConvertOptions {
        format: if args.erofs {
            LayerFormat::Erofs
        } else {
            LayerFormat::Estargz
        },
        write: WriteOptions {
            chunk_size: args.chunk_size,
            compression: if args.zstd {
                Compression::Zstd
            } else {
                Compression::Gzip
            },
            level: args.level,
            prioritized_files: prioritized,
            threads: 0,
        },
        parallelism: args.parallelism,
        prioritize_auto: args.prioritize_auto,
        progress: Some(progress_sink()),
    };
    // Named as every record Strata creates: normalised (`app:1` → docker.io/library/app:1).
    let dst = strata::image::local::record_name(
        args.dst
            .as_deref()
            .expect("invariant: clap requires DST without --check"),
    );
    let dst = dst.as_str();
    let start = std::time::Instant::now();
    let converted = convert(&store, &src, dst, &opts)?;
    for (manifest, files) in &converted.prioritized {
        eprintln!(
            "manifest {}: {} prioritized files",
            manifest.short(),
            files.len()
        );
        for f in files {
            eprintln!("  {f}");
        }
    }
    eprintln!(
        "converted {} to {} in {:.1}s",
        args.src,
        dst,
        start.elapsed().as_secs_f64()
    );
    if args.push {
        super::transfer::push_reference(root, dst, dst, &args.registry)?;
    }
    println!("{}", converted.image.target.digest());
    Ok(())
}

/// Bars per layer on a terminal (compressed source bytes read), a line per layer otherwise.
fn progress_sink() -> Arc<dyn Fn(&ConvertEvent) + Send + Sync> {
    let reporter = Reporter::new();
    Arc::new(move |e: &ConvertEvent| match e {
        ConvertEvent::LayerStarted { layer, size } => {
            let key = layer.to_string();
            reporter.start(format!("layer {}", layer.short()), &key, *size, 0);
            reporter.message(&key, &format!("layer {}", layer.short()), "converting");
        }
        ConvertEvent::LayerProgress { layer, read } => reporter.advance(&layer.to_string(), *read),
        ConvertEvent::LayerDone(l) => {
            let label = format!("layer {}", l.source.short());
            let key = l.source.to_string();
            if l.passed_through {
                let format = if l.toc_digest.is_empty() {
                    "EROFS"
                } else {
                    "eStargz"
                };
                reporter.finish(&key, &label, &format!("already {format}, kept"));
            } else if l.toc_digest.is_empty() {
                reporter.finish(
                    &key,
                    &label,
                    &format!("-> {} ({})", l.converted.short(), format::size(l.size)),
                );
            } else {
                let toc = l.toc_digest.get(..19).unwrap_or(&l.toc_digest);
                reporter.finish(
                    &key,
                    &label,
                    &format!(
                        "-> {} ({}, toc {toc})",
                        l.converted.short(),
                        format::size(l.size)
                    ),
                );
            }
        }
    })
}
