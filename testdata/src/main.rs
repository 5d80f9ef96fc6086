//! `strata-testdata`: writes Strata's generated test fixtures (OCI layouts,
//! OCI layout tars, `docker save` tars, random files) from the command line.
//!
//! Every command prints one tab-separated line per thing written: the path
//! (with `#<ref>` for references inside an archive or layout), its
//! `sha256:` digest, and for references the target media type.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use sha2::{Digest as _, Sha256};
use strata_testdata::{
    ImageSpec, LayoutImage, LayoutSummary, digest_hex, docker_save_tar_bytes, oci_layout_tar_bytes,
    parse_size, random::copy_random, sample_image, sample_multiplatform, sha256_digest,
    write_oci_layout,
};

/// Generates deterministic container-image fixtures for Strata's tests and demos.
#[derive(Debug, Parser)]
#[command(
    name = "strata-testdata",
    version,
    after_help = "Examples:\n  strata-testdata oci-layout /tmp/sample-oci --multi-platform\n  strata-testdata docker-save /tmp/sample.tar --tag sample:1.0\n  strata-testdata random /tmp/big.bin --size 1GiB --seed 3"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write an OCI image-layout directory holding the sample image.
    #[command(
        after_help = "Example:\n  strata-testdata oci-layout /tmp/sample-oci --multi-platform --name docker.io/library/sample:1.0 --seed 7\n\nPrints `PATH<TAB>DIGEST` per blob, oci-layout and index.json, then\n`DIR/index.json#REF<TAB>DIGEST<TAB>MEDIA-TYPE` per reference."
    )]
    OciLayout {
        /// Layout directory (created if missing).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        #[command(flatten)]
        image: ImageArgs,
    },
    /// Write the same OCI image layout as a tar archive.
    #[command(
        after_help = "Example:\n  strata-testdata oci-tar /tmp/sample-oci.tar --name 1.0 --seed 7\n\nPrints `FILE<TAB>DIGEST`, then `FILE#REF<TAB>DIGEST<TAB>MEDIA-TYPE` per reference."
    )]
    OciTar {
        /// Output tar file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        #[command(flatten)]
        image: ImageArgs,
    },
    /// Write the sample image as a classic `docker save` tar (manifest.json last).
    #[command(
        after_help = "Example:\n  strata-testdata docker-save /tmp/sample-docker.tar --tag sample:1.0 --tag sample:latest --seed 7\n\nPrints `FILE<TAB>DIGEST`, `FILE#TAG<TAB>CONFIG-DIGEST` per tag and\n`FILE:LAYER-PATH<TAB>DIFF-ID` per layer."
    )]
    DockerSave {
        /// Output tar file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Repo tag `name:tag` recorded in manifest.json (repeatable).
        #[arg(long = "tag", value_name = "NAME:TAG", default_value = "sample:1.0")]
        tags: Vec<String>,
        /// Seed of the sample image's contents.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Write a file of fast, seeded pseudo-random bytes.
    #[command(
        after_help = "Example:\n  strata-testdata random /tmp/big.bin --size 256MiB --seed 3\n\nSizes: plain bytes (4096), binary units (64K, 256MiB, 1GiB) or decimal units (10MB).\nPrints `FILE<TAB>DIGEST<TAB>SIZE`."
    )]
    Random {
        /// Output file (truncated if it exists).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Number of bytes, e.g. 4096, 256MiB, 1GiB.
        #[arg(long, value_parser = size_arg)]
        size: u64,
        /// Seed of the byte stream.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Skip computing the sha256 (prints `-` instead).
        #[arg(long)]
        no_digest: bool,
    },
}

/// Which sample image to write and under which names.
#[derive(Debug, Args)]
struct ImageArgs {
    /// Write an image index with linux/amd64 and linux/arm64/v8 manifests.
    #[arg(long)]
    multi_platform: bool,
    /// `org.opencontainers.image.ref.name` of the index.json entry (repeatable).
    #[arg(
        long = "name",
        value_name = "REF",
        default_value = "docker.io/library/sample:1.0"
    )]
    names: Vec<String>,
    /// Seed of the sample image's contents.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl ImageArgs {
    fn images(&self) -> Vec<(&str, LayoutImage)> {
        let image = || -> LayoutImage {
            if self.multi_platform {
                sample_multiplatform(self.seed).into()
            } else {
                sample_image(self.seed).into()
            }
        };
        self.names.iter().map(|n| (n.as_str(), image())).collect()
    }
}

fn size_arg(text: &str) -> Result<u64, String> {
    parse_size(text).map_err(|e| e.to_string())
}

fn print_refs(prefix: &str, summary: &LayoutSummary) {
    for r in &summary.refs {
        println!(
            "{prefix}#{}\t{}\t{}",
            r.name, r.target.digest, r.target.media_type
        );
    }
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    println!("{}\t{}", path.display(), sha256_digest(bytes));
    Ok(())
}

fn oci_layout(dir: &Path, image: &ImageArgs) -> Result<()> {
    let summary = write_oci_layout(dir, &image.images())
        .with_context(|| format!("writing OCI layout {}", dir.display()))?;
    for digest in &summary.blobs {
        let path = dir.join("blobs/sha256").join(digest_hex(digest));
        println!("{}\t{digest}", path.display());
    }
    let oci_layout = std::fs::read(dir.join("oci-layout")).context("reading back oci-layout")?;
    println!(
        "{}\t{}",
        dir.join("oci-layout").display(),
        sha256_digest(&oci_layout)
    );
    let index = dir.join("index.json");
    println!(
        "{}\t{}",
        index.display(),
        sha256_digest(&summary.index_json)
    );
    print_refs(&index.display().to_string(), &summary);
    Ok(())
}

fn oci_tar(file: &Path, image: &ImageArgs) -> Result<()> {
    let (bytes, summary) =
        oci_layout_tar_bytes(&image.images()).context("building OCI layout tar")?;
    write_file(file, &bytes)?;
    print_refs(&file.display().to_string(), &summary);
    Ok(())
}

fn docker_save(file: &Path, tags: &[String], seed: u64) -> Result<()> {
    let image: ImageSpec = sample_image(seed);
    let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
    let (bytes, summary) =
        docker_save_tar_bytes(&image, &tags).context("building docker save tar")?;
    write_file(file, &bytes)?;
    for tag in &summary.repo_tags {
        println!("{}#{tag}\t{}", file.display(), summary.config_digest);
    }
    for (path, diff_id) in summary.layer_paths.iter().zip(&summary.diff_ids) {
        println!("{}:{path}\t{diff_id}", file.display());
    }
    Ok(())
}

fn random(file: &Path, size: u64, seed: u64, no_digest: bool) -> Result<()> {
    let mut out = File::create(file).with_context(|| format!("creating {}", file.display()))?;
    let mut hasher = (!no_digest).then(Sha256::new);
    copy_random(&mut out, size, seed, |chunk| {
        if let Some(hasher) = hasher.as_mut() {
            hasher.update(chunk);
        }
    })
    .with_context(|| format!("writing {}", file.display()))?;
    let digest = match hasher {
        Some(hasher) => format!("sha256:{}", hex::encode(hasher.finalize())),
        None => "-".to_owned(),
    };
    println!("{}\t{digest}\t{size}", file.display());
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::OciLayout { dir, image } => oci_layout(&dir, &image),
        Command::OciTar { file, image } => oci_tar(&file, &image),
        Command::DockerSave { file, tags, seed } => docker_save(&file, &tags, seed),
        Command::Random {
            file,
            size,
            seed,
            no_digest,
        } => random(&file, size, seed, no_digest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
        for sub in Cli::command().get_subcommands() {
            let help = sub
                .get_after_help()
                .map(ToString::to_string)
                .unwrap_or_default();
            assert!(
                help.contains("Example:"),
                "{} lacks an example",
                sub.get_name()
            );
        }
    }

    #[test]
    fn parses_commands() {
        let cli =
            Cli::try_parse_from(["strata-testdata", "random", "f", "--size", "256MiB"]).unwrap();
        assert!(matches!(cli.command, Command::Random { size, seed: 1, .. } if size == 256 << 20));
        let cli = Cli::try_parse_from([
            "strata-testdata",
            "oci-layout",
            "d",
            "--multi-platform",
            "--name",
            "1.0",
            "--seed",
            "4",
        ])
        .unwrap();
        let Command::OciLayout { image, .. } = cli.command else {
            panic!()
        };
        assert!(image.multi_platform);
        assert_eq!(image.names, ["1.0"]);
        assert!(Cli::try_parse_from(["strata-testdata", "random", "f", "--size", "lots"]).is_err());
    }
}
