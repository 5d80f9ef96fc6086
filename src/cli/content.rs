//! `strata content …`: the content store from the command line.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use strata::content::{IngestSource, StreamSource};
use strata::metadata::gc::GcOptions;
use strata_formats::filters::Filter;
use strata_formats::{Digest, Digester};

use super::format;

#[derive(Debug, Subcommand)]
pub(crate) enum ContentCommand {
    /// Add a file (or standard input) to the store and print its digest.
    ///
    /// The ingest is resumable: if an ingest of the same file was interrupted (even
    /// killed), running the same command again continues where it stopped. With
    /// --expected, the content is committed only if it hashes to that digest.
    #[command(after_help = "Examples:\n  strata content ingest ./layer.tar.gz\n  \
        curl -s https://… | strata content ingest --expected sha256:4a5e… -\n  \
        strata content ingest --label containerd.io/gc.root=yes ./config.json")]
    Ingest(IngestArgs),

    /// List committed blobs, optionally filtered (containerd filter syntax; several
    /// filters match if any matches).
    #[command(
        after_help = "Examples:\n  strata content ls\n  strata content ls -q\n  \
        strata content ls 'labels.\"containerd.io/gc.root\"'\n  strata content ls 'size==1024,labels.app==web'"
    )]
    Ls {
        /// Print digests only.
        #[arg(short, long)]
        quiet: bool,
        /// Filters such as `digest==sha256:…` or `labels."containerd.io/gc.root"`.
        filters: Vec<String>,
    },

    /// Show a blob's size, times and labels (as JSON).
    #[command(
        after_help = "Example:\n  strata content info sha256:4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b"
    )]
    Info {
        /// The blob's digest.
        digest: Digest,
    },

    /// Set or remove labels on a blob (`KEY=` removes KEY).
    #[command(
        after_help = "Examples:\n  strata content label sha256:4a5e… containerd.io/gc.root=pinned\n  \
        strata content label sha256:4a5e… containerd.io/gc.root="
    )]
    Label {
        /// The blob's digest.
        digest: Digest,
        /// `KEY=VALUE` to set, `KEY=` to remove.
        #[arg(required = true)]
        labels: Vec<String>,
    },

    /// Delete blobs (whatever references them).
    #[command(after_help = "Example:\n  strata content rm sha256:4a5e…")]
    Rm {
        /// Digests to delete.
        #[arg(required = true)]
        digests: Vec<Digest>,
    },

    /// Re-hash committed blobs and report any whose bytes no longer match their digest.
    #[command(
        after_help = "Examples:\n  strata content verify\n  strata content verify sha256:4a5e…"
    )]
    Verify {
        /// Digests to verify (default: every blob).
        digests: Vec<Digest>,
    },

    /// Remove blobs no image, lease or gc.root label reaches, and stale ingests.
    #[command(
        after_help = "Examples:\n  strata content gc --dry-run\n  strata content gc --ingest-grace 0s"
    )]
    Gc {
        /// Show what would be removed without removing anything.
        #[arg(long)]
        dry_run: bool,
        /// Keep ingests written to within this long (e.g. 30s, 15m, 2h, 7d).
        #[arg(long, default_value = "1h", value_parser = format::parse_duration)]
        ingest_grace: Duration,
    },

    /// List in-progress (or interrupted) ingests.
    #[command(after_help = "Example:\n  strata content active")]
    Active,

    /// Discard an in-progress ingest.
    #[command(after_help = "Example:\n  strata content abort file-3f2a…")]
    Abort {
        /// The ingest's ref (see `strata content active`).
        reference: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct IngestArgs {
    /// The file to ingest, or `-` for standard input.
    input: PathBuf,
    /// Commit only if the content has this digest.
    #[arg(long)]
    expected: Option<Digest>,
    /// Commit only if the content has this size.
    #[arg(long)]
    size: Option<u64>,
    /// The ingest ref (default: derived from the file, so a rerun resumes it).
    #[arg(long = "ref")]
    reference: Option<String>,
    /// Labels for the new blob, `KEY=VALUE`.
    #[arg(long = "label", value_parser = format::parse_label)]
    labels: Vec<(String, String)>,
    /// How long to wait for another writer of the same ref before giving up.
    #[arg(long, default_value = "5m", value_parser = format::parse_duration)]
    lock_wait: Duration,
}

pub(crate) fn run(root: &Path, cmd: &ContentCommand) -> anyhow::Result<()> {
    let store = super::open_store(root)?;
    let content = store.content();
    match cmd {
        ContentCommand::Ingest(args) => ingest(content, args),
        ContentCommand::Ls { quiet, filters } => {
            let filter = Filter::parse_any(filters).context("parse filter")?;
            let blobs = content.walk(&filter).context("list content")?;
            if *quiet {
                for b in blobs {
                    println!("{}", b.digest);
                }
                return Ok(());
            }
            println!("{:<71}  {:>10}  {:<16}  LABELS", "DIGEST", "SIZE", "AGE");
            for b in blobs {
                let labels: Vec<String> =
                    b.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!(
                    "{:<71}  {:>10}  {:<16}  {}",
                    b.digest.to_string(),
                    format::size(b.size),
                    format::age(b.created),
                    labels.join(",")
                );
            }
            Ok(())
        }
        ContentCommand::Info { digest } => {
            let info = content.info(digest)?;
            let json = serde_json::json!({
                "digest": info.digest.to_string(),
                "size": info.size,
                "created": format::timestamp(info.created),
                "updated": format::timestamp(info.updated),
                "labels": info.labels,
                "path": content.blob_path(digest),
            });
            println!("{}", serde_json::to_string_pretty(&json)?);
            Ok(())
        }
        ContentCommand::Label { digest, labels } => {
            let mut changes = BTreeMap::new();
            for l in labels {
                let (k, v) = l
                    .split_once('=')
                    .with_context(|| format!("invalid label {l:?} (expected KEY=VALUE or KEY=)"))?;
                if k.is_empty() {
                    bail!("invalid label {l:?}: empty key");
                }
                changes.insert(k.to_owned(), (!v.is_empty()).then(|| v.to_owned()));
            }
            let info = content.update_labels(digest, &changes)?;
            for (k, v) in &info.labels {
                println!("{k}={v}");
            }
            Ok(())
        }
        ContentCommand::Rm { digests } => {
            for d in digests {
                content.delete(d)?;
                println!("{d}");
            }
            Ok(())
        }
        ContentCommand::Verify { digests } => verify(content, digests),
        ContentCommand::Gc {
            dry_run,
            ingest_grace,
        } => {
            let report = store.gc(&GcOptions {
                ingest_grace: *ingest_grace,
                dry_run: *dry_run,
            })?;
            let verb = if *dry_run { "would remove" } else { "removed" };
            for d in &report.removed_blobs {
                println!("{verb} blob {d}");
            }
            for r in &report.removed_ingests {
                println!("{verb} ingest {r:?}");
            }
            for l in &report.expired_leases {
                println!("{verb} expired lease {l:?}");
            }
            eprintln!(
                "gc: kept {} blobs; {verb} {} blobs ({}), {} ingests, {} expired leases",
                report.kept,
                report.removed_blobs.len(),
                format::size(report.removed_bytes),
                report.removed_ingests.len(),
                report.expired_leases.len()
            );
            Ok(())
        }
        ContentCommand::Active => {
            println!("{:<48}  {:>10}  {:>10}  UPDATED", "REF", "OFFSET", "TOTAL");
            for s in content.list_statuses(&Filter::always())? {
                println!(
                    "{:<48}  {:>10}  {:>10}  {}",
                    s.reference,
                    s.offset,
                    s.total.map_or_else(|| "-".into(), |t| t.to_string()),
                    format::age(s.updated)
                );
            }
            Ok(())
        }
        ContentCommand::Abort { reference } => {
            content.abort(reference)?;
            Ok(())
        }
    }
}

/// A source that reports progress to a bar as it is read.
struct Progress<S> {
    inner: S,
    bar: Option<indicatif::ProgressBar>,
}

impl<S: Read> Read for Progress<S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(b) = &self.bar {
            b.inc(n as u64);
        }
        Ok(n)
    }
}

impl<S: IngestSource> IngestSource for Progress<S> {
    fn resume_at(&mut self, offset: u64) -> std::io::Result<bool> {
        let resumed = self.inner.resume_at(offset)?;
        if let (true, Some(b)) = (resumed, &self.bar) {
            b.set_position(offset);
        }
        Ok(resumed)
    }
}

fn progress_bar(total: Option<u64>) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = match total {
        Some(t) => indicatif::ProgressBar::new(t),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} ingest [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("invariant: valid template")
        .progress_chars("=> "),
    );
    Some(bar)
}

fn ingest(content: &strata::content::LocalContentStore, args: &IngestArgs) -> anyhow::Result<()> {
    let labels: BTreeMap<String, String> = args.labels.iter().cloned().collect();
    let (digest, size) = if args.input.as_os_str() == "-" {
        let reference = args.reference.clone().unwrap_or_else(|| {
            format!(
                "stdin-{}-{}",
                std::process::id(),
                strata::metadata::unique_suffix()
            )
        });
        let bar = progress_bar(args.size);
        let mut src = Progress {
            inner: StreamSource(std::io::stdin().lock()),
            bar: bar.clone(),
        };
        let r = content.ingest(
            &reference,
            &mut src,
            args.size,
            args.expected.as_ref(),
            labels,
            args.lock_wait,
        );
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        match r {
            Err(strata::content::ContentError::Overflow { total, .. }) => {
                anyhow::bail!("ingest standard input: it is larger than --size {total}")
            }
            r => r.context("ingest standard input")?,
        }
    } else {
        let path = &args.input;
        let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
        let meta = file
            .metadata()
            .with_context(|| format!("stat {}", path.display()))?;
        if let Some(size) = args.size
            && meta.is_file()
            && meta.len() != size
        {
            let than = if meta.len() > size {
                "larger"
            } else {
                "smaller"
            };
            anyhow::bail!(
                "ingest {}: the file is {than} than --size {size} ({} bytes)",
                path.display(),
                meta.len()
            );
        }
        let total = args.size.or(meta.is_file().then_some(meta.len()));
        // Same file, same ref: a rerun after an interruption resumes the ingest.
        let reference = match &args.reference {
            Some(r) => r.clone(),
            None => {
                let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
                format!(
                    "file-{}",
                    &Digest::of(abs.as_os_str().as_encoded_bytes()).encoded()[..32]
                )
            }
        };
        let bar = progress_bar(total);
        let mut src = Progress {
            inner: file,
            bar: bar.clone(),
        };
        let r = content.ingest(
            &reference,
            &mut src,
            total,
            args.expected.as_ref(),
            labels,
            args.lock_wait,
        );
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        r.with_context(|| format!("ingest {}", path.display()))?
    };
    tracing::info!(%digest, size, "committed");
    println!("{digest}");
    Ok(())
}

fn verify(content: &strata::content::LocalContentStore, digests: &[Digest]) -> anyhow::Result<()> {
    let all;
    let digests = if digests.is_empty() {
        all = content.list_digests()?;
        &all
    } else {
        digests
    };
    let mut bad = 0;
    for d in digests {
        let path = content.blob_path(d);
        let mut file = std::fs::File::open(&path)
            .with_context(|| format!("content {d}: open {}", path.display()))?;
        let mut g = Digester::new();
        std::io::copy(&mut file, &mut g)
            .with_context(|| format!("content {d}: read {}", path.display()))?;
        let actual = g.digest();
        if actual == *d {
            println!("ok       {d}  {}", format::size(g.len()));
        } else {
            println!("CORRUPT  {d}  (bytes hash to {actual})");
            bad += 1;
        }
    }
    if bad > 0 {
        bail!("{bad} of {} blobs failed verification", digests.len());
    }
    eprintln!("verified {} blobs", digests.len());
    Ok(())
}
