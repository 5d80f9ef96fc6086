//! `strata image …`: image records and archive import.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use strata_formats::filters::Filter;

use super::format;

#[derive(Debug, Subcommand)]
pub(crate) enum ImageCommand {
    /// Import an OCI image layout (directory or tar) or a `docker save` tar.
    ///
    /// Every blob is verified against its digest on the way in. One image record is
    /// created per name in the archive (`org.opencontainers.image.ref.name` annotations,
    /// or RepoTags for docker-save archives); a bare tag such as `1.0` is prefixed with
    /// --base-name (default: the archive's file name without extension). Names are
    /// normalised as docker and containerd do (`sample:1.0` → docker.io/library/sample:1.0);
    /// every command also finds an image by its short name.
    #[command(after_help = "Examples:\n  strata image import ./alpine-oci/\n  \
        strata image import --base-name registry.local/app ./app-oci.tar\n  docker save busybox | strata image import /dev/stdin")]
    Import {
        /// The OCI layout directory, OCI layout tar, or docker-save tar.
        path: PathBuf,
        /// Name prefix for entries that carry only a tag.
        #[arg(long)]
        base_name: Option<String>,
    },

    /// List image records, optionally filtered (`name~=^docker.io/`, `labels.k==v`).
    #[command(after_help = "Examples:\n  strata image ls\n  strata image ls -q 'name~=sample'")]
    Ls {
        /// Print names only.
        #[arg(short, long)]
        quiet: bool,
        /// containerd filters on `name`, `target.digest`, `target.mediatype`, `labels.<k>`.
        filters: Vec<String>,
    },

    /// Remove image records (their content is removed by the next `strata content gc`).
    #[command(
        after_help = "Example:\n  strata image rm docker.io/library/sample:1.0 && strata content gc"
    )]
    Rm {
        /// Image names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

pub(crate) fn run(root: &Path, cmd: &ImageCommand) -> anyhow::Result<()> {
    let store = super::open_store(root)?;
    match cmd {
        ImageCommand::Import { path, base_name } => {
            let opts = strata::image::ImportOptions {
                base_name: base_name.clone(),
                ..Default::default()
            };
            // The importer's errors already name the archive.
            let imported = strata::image::import(&store, path, &opts)?;
            for img in &imported.images {
                println!("{}  {}", img.name, img.target.digest());
            }
            eprintln!(
                "imported {} ({}, {})",
                format::count(imported.images.len(), "image", "images"),
                format::count(imported.blobs, "blob", "blobs"),
                format::size(imported.bytes)
            );
            Ok(())
        }
        ImageCommand::Ls { quiet, filters } => {
            let filter = Filter::parse_any(filters).context("parse filter")?;
            let images = store.metadata().images(&filter)?;
            if *quiet {
                for i in images {
                    println!("{}", i.name);
                }
                return Ok(());
            }
            println!(
                "{:<48}  {:<50}  {:<71}  {:>10}",
                "NAME", "TYPE", "DIGEST", "SIZE"
            );
            for i in images {
                println!(
                    "{:<48}  {:<50}  {:<71}  {:>10}",
                    i.name,
                    i.target.media_type().to_string(),
                    i.target.digest().to_string(),
                    format::size(image_size(&store, &i)),
                );
            }
            Ok(())
        }
        ImageCommand::Rm { names } => {
            for n in names {
                let record = strata::image::find_image(&store, n)
                    .with_context(|| format!("remove image {n:?}"))?;
                store
                    .metadata()
                    .delete_image(&record.name)
                    .with_context(|| format!("remove image {:?}", record.name))?;
                println!("{}", record.name);
            }
            Ok(())
        }
    }
}

/// Total size of the blobs an image's record reaches through GC labels (what `image ls`
/// shows; blobs missing locally count as zero).
fn image_size(store: &strata::store::Store, image: &strata::metadata::ImageRecord) -> u64 {
    let mut seen = std::collections::BTreeSet::new();
    let mut stack = vec![image.target.digest().to_string()];
    let mut total = 0;
    while let Some(d) = stack.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        let Ok(digest) = d.parse() else { continue };
        let Ok(info) = store.content().info(&digest) else {
            continue;
        };
        total += info.size;
        for (k, v) in &info.labels {
            if k.starts_with(strata::content::LABEL_GC_REF_CONTENT_PREFIX) {
                stack.push(v.clone());
            }
        }
    }
    total
}
