//! `strata artifact push` and `strata index`: model artifacts and their chunk indexes.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use strata::artifact::{ArtifactEvent, ArtifactFormat, ArtifactPushOptions};
use strata::registry::Reference;
use strata_formats::chunk_index::DEFAULT_CHUNK_SIZE;

use super::progress::Reporter;
use super::transfer::{RegistryArgs, runtime};

#[derive(Debug, Subcommand)]
pub(crate) enum ArtifactCommand {
    /// Push a directory (a model checkout) as an OCI artifact, with its chunk index.
    #[command(after_help = PUSH_HELP)]
    Push(ArtifactPushArgs),
}

const PUSH_HELP: &str = "\
Each file of at least 1 MiB becomes one layer of its own, the blob being the file itself, \
with its path in the `org.cncf.model.filepath` annotation (ModelPack) or \
`org.opencontainers.image.title` (ORAS). ModelPack groups the smaller files by kind into \
uncompressed tar layers; the kind comes from the name: weights (*.safetensors, *.gguf, \
*.bin, *.pt, *.pth, *.ckpt, *.onnx, …), weight config (*config.json, tokenizer*, vocab.*, \
merges.txt), docs (README*, LICENSE*, *.md, *.txt), code (the rest). ORAS pushes every file \
as its own layer. `.git` directories are skipped; symlinks are refused.

Files are never held in memory: each is read once to hash it (and its 4 MiB chunks), and \
once more to upload it unless the registry has it already. The chunk index is pushed as an \
OCI referrer of the manifest (the referrers API, or the `sha256-<hex>` tag where the \
registry lacks it): see docs/chunk-index.md. Prints the manifest's digest.

Examples:
  strata artifact push --plain-http ./Qwen2.5-0.5B 127.0.0.1:5000/models/qwen:0.5b
  strata artifact push --type oras ./data registry.example.com/team/data:v1
  strata pull --plain-http 127.0.0.1:5000/models/qwen:0.5b     # stores it, verified";

/// Which artifact convention to push in.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ArtifactType {
    /// CNCF ModelPack (`application/vnd.cncf.model.manifest.v1+json`).
    Modelpack,
    /// ORAS: one layer per file, named by its title annotation.
    Oras,
}

#[derive(Debug, Args)]
pub(crate) struct ArtifactPushArgs {
    /// The directory to push.
    dir: PathBuf,
    /// Where to push: a registry reference (`host/repository:tag`).
    reference: String,
    /// The artifact convention.
    #[arg(long = "type", value_enum, default_value = "modelpack")]
    artifact_type: ArtifactType,
    /// Blobs uploaded at once.
    #[arg(long, default_value_t = 3)]
    max_concurrent_uploads: usize,
    #[command(flatten)]
    registry: RegistryArgs,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Reads each blob a lazy reader reads by range (raw files, uncompressed tar layers) once, \
streaming, checks it against its digest, and pushes the per-chunk SHA-256 digests as an OCI \
referrer of the manifest (artifactType application/vnd.strata.chunk-index.v1; \
docs/chunk-index.md). An index that is there already is found, not pushed again. Prints the \
referrer's digest. With --check, reads the blobs again and checks every chunk against the \
pushed index instead.

Examples:
  strata index --plain-http 127.0.0.1:5000/models/qwen:0.5b
  strata index --check --plain-http 127.0.0.1:5000/models/qwen:0.5b")]
pub(crate) struct IndexArgs {
    /// The manifest (artifact or single-platform image) to index.
    reference: String,
    /// Check the blobs against the existing index instead of pushing one.
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub(crate) fn run(c: &ArtifactCommand) -> anyhow::Result<()> {
    match c {
        ArtifactCommand::Push(a) => push(a),
    }
}

fn reporter_sink(reporter: Arc<Reporter>) -> strata::artifact::push::ArtifactEventSink {
    Arc::new(move |e: &ArtifactEvent| match e {
        ArtifactEvent::Started { label, key, size } => reporter.start(label.clone(), key, *size, 0),
        ArtifactEvent::Progress { key, bytes } => reporter.advance(key, *bytes),
        ArtifactEvent::Done {
            key,
            label,
            message,
        } => reporter.finish(key, label, message),
    })
}

fn push(args: &ArtifactPushArgs) -> anyhow::Result<()> {
    let target: Reference = args.reference.parse()?;
    let client = args.registry.client()?;
    let format = match args.artifact_type {
        ArtifactType::Modelpack => ArtifactFormat::ModelPack,
        ArtifactType::Oras => ArtifactFormat::Oras,
    };
    let opts = ArtifactPushOptions {
        format,
        chunk_size: DEFAULT_CHUNK_SIZE,
        max_concurrent_uploads: args.max_concurrent_uploads,
        progress: Some(reporter_sink(Arc::new(Reporter::new()))),
    };
    let start = std::time::Instant::now();
    let pushed = runtime()?
        .block_on(strata::artifact::push_dir(
            &client, &args.dir, &target, &opts,
        ))
        .with_context(|| format!("push {} to {target}", args.dir.display()))?;
    eprintln!(
        "pushed {} to {target} in {:.1}s; chunk index {} ({})",
        args.dir.display(),
        start.elapsed().as_secs_f64(),
        pushed.index.digest,
        index_how(&pushed.index),
    );
    println!("{}", pushed.manifest.digest);
    Ok(())
}

fn index_how(i: &strata::artifact::IndexPush) -> &'static str {
    if i.existed {
        "already in the registry"
    } else if i.subject_processed {
        "pushed; the registry lists it as a referrer"
    } else {
        "pushed; listed in the referrers tag"
    }
}

pub(crate) fn index(args: &IndexArgs) -> anyhow::Result<()> {
    let reference: Reference = args.reference.parse()?;
    let client = args.registry.client()?;
    let rt = runtime()?;
    if args.check {
        let found = rt
            .block_on(strata::artifact::fetch_chunk_index(&client, &reference))
            .with_context(|| format!("check {reference}"))?;
        let Some((digest, index)) = found else {
            anyhow::bail!(
                "check {reference}: it has no chunk index (push one with `strata index`)"
            );
        };
        rt.block_on(strata::artifact::check_blobs(&client, &reference, &index))
            .with_context(|| format!("check {reference} against chunk index {digest}"))?;
        let chunks: usize = index.layers.iter().map(|l| l.chunks.len()).sum();
        eprintln!(
            "{reference}: {} blobs, {chunks} chunks match chunk index {digest}",
            index.layers.len()
        );
        println!("{digest}");
        return Ok(());
    }
    let reporter = Arc::new(Reporter::new());
    let r = reporter.clone();
    let started = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let progress: strata::artifact::index::ReadProgress =
        Arc::new(move |d: &strata_formats::Digest, size: u64, n: u64| {
            let key = d.to_string();
            if started
                .lock()
                .expect("invariant: not poisoned")
                .insert(key.clone())
            {
                r.start(format!("read {}", d.short()), &key, size, 0);
            }
            r.advance(&key, n);
        });
    let (pushed, kind) = rt
        .block_on(strata::artifact::index_reference(
            &client,
            &reference,
            DEFAULT_CHUNK_SIZE,
            Some(progress),
        ))
        .with_context(|| format!("index {reference}"))?;
    eprintln!(
        "{reference} ({kind}): chunk index of {} blobs {}",
        pushed.layers,
        index_how(&pushed)
    );
    println!("{}", pushed.digest);
    Ok(())
}
