//! Classic `docker save` archives (the pre-OCI "docker-archive" format).
//!
//! Entries, in this order: per layer `<id>/`, `<id>/VERSION` (`1.0`),
//! `<id>/json` (legacy v1 metadata) and `<id>/layer.tar` (the uncompressed
//! layer, so its sha256 is the diffID); then the config as `<hex>.json`,
//! `repositories` (omitted without repo tags) and `manifest.json` **last**,
//! as some docker versions do, so readers cannot rely on reading the
//! manifest first. Layer ids are derived from the diffID chain, like (but
//! not byte-equal to) docker's v1 ids.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde::Serialize;
use serde_json::json;

use crate::image::ImageSpec;
use crate::layout::TarWriter;
use crate::{Error, Result, canonical_json, digest_hex, sha256_hex};

/// What [`write_docker_save_tar`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerSaveSummary {
    /// `sha256:<hex>` of the config (docker's image id).
    pub config_digest: String,
    /// Archive path of the config, `<hex>.json`.
    pub config_path: String,
    /// `rootfs.diff_ids`, bottom layer first (sha256 of each `layer.tar`).
    pub diff_ids: Vec<String>,
    /// Archive paths of the layers, `<id>/layer.tar`, bottom first.
    pub layer_paths: Vec<String>,
    /// The repo tags, as given.
    pub repo_tags: Vec<String>,
    /// The bytes of `manifest.json`.
    pub manifest_json: Vec<u8>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestItem<'a> {
    config: &'a str,
    repo_tags: Option<&'a [String]>,
    layers: &'a [String],
}

/// Splits `name:tag` at the last `:` that follows the last `/`.
fn split_repo_tag(repo_tag: &str) -> Result<(&str, &str)> {
    let bad = || Error::InvalidRepoTag(repo_tag.to_owned());
    let slash = repo_tag.rfind('/').map_or(0, |i| i + 1);
    let colon = repo_tag[slash..].rfind(':').ok_or_else(bad)? + slash;
    let (name, tag) = (&repo_tag[..colon], &repo_tag[colon + 1..]);
    if name.is_empty() || tag.is_empty() || repo_tag.contains('@') || name.ends_with('/') {
        return Err(bad());
    }
    Ok((name, tag))
}

/// Builds a `docker save` tar of `image` in memory.
///
/// `repo_tags` are `name:tag` strings written verbatim to `RepoTags`
/// (e.g. `sample:1.0` or `example.com/team/app:v2`); with none, `RepoTags`
/// is `null` and `repositories` is omitted, as when docker saves by id.
pub fn docker_save_tar_bytes(
    image: &ImageSpec,
    repo_tags: &[&str],
) -> Result<(Vec<u8>, DockerSaveSummary)> {
    let mut repositories: BTreeMap<&str, BTreeMap<&str, String>> = BTreeMap::new();
    let parsed = repo_tags
        .iter()
        .map(|t| split_repo_tag(t))
        .collect::<Result<Vec<_>>>()?;
    let built = image.build()?;

    let mut tar = TarWriter::new();
    let mut layer_paths = Vec::new();
    let mut parent: Option<String> = None;
    for layer in &built.layers {
        let id = sha256_hex(
            format!("{}\n{}", parent.as_deref().unwrap_or(""), layer.diff_id).as_bytes(),
        );
        let mut v1 = json!({
            "id": id,
            "created": image.created,
            "container_config": { "Cmd": null, "Entrypoint": null, "Env": null, "Image": "" },
            "os": image.platform.os,
            "architecture": image.platform.architecture,
        });
        if let Some(parent) = &parent {
            v1["parent"] = json!(parent);
        }
        tar.dir(&id)?;
        tar.file(&format!("{id}/VERSION"), b"1.0")?;
        tar.file(&format!("{id}/json"), &canonical_json(&v1)?)?;
        let path = format!("{id}/layer.tar");
        tar.file(&path, &layer.tar)?;
        layer_paths.push(path);
        parent = Some(id);
    }

    let config_path = format!("{}.json", digest_hex(&built.config.digest));
    tar.file(&config_path, &built.config_json)?;

    let repo_tags: Vec<String> = repo_tags.iter().map(|t| (*t).to_owned()).collect();
    if let Some(top) = &parent {
        for (name, tag) in &parsed {
            repositories
                .entry(name)
                .or_default()
                .insert(tag, top.clone());
        }
    }
    if !parsed.is_empty() {
        tar.file("repositories", &serde_json::to_vec(&repositories)?)?;
    }
    let manifest_json = serde_json::to_vec(&[ManifestItem {
        config: &config_path,
        repo_tags: (!repo_tags.is_empty()).then_some(repo_tags.as_slice()),
        layers: &layer_paths,
    }])?;
    tar.file("manifest.json", &manifest_json)?;

    let summary = DockerSaveSummary {
        config_digest: built.config.digest.clone(),
        config_path,
        diff_ids: built.diff_ids(),
        layer_paths,
        repo_tags,
        manifest_json,
    };
    Ok((tar.finish()?, summary))
}

/// Writes a `docker save` tar of `image` to `out`; see [`docker_save_tar_bytes`].
pub fn write_docker_save_tar(
    out: &Path,
    image: &ImageSpec,
    repo_tags: &[&str],
) -> Result<DockerSaveSummary> {
    let (bytes, summary) = docker_save_tar_bytes(image, repo_tags)?;
    fs::write(out, bytes).map_err(Error::io(out))?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample_image;
    use crate::sha256_digest;
    use crate::testutil::{tar_entries, tar_file};
    use oci_spec::image::ImageConfiguration;
    use serde_json::Value;

    #[test]
    fn manifest_references_existing_entries() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("save.tar");
        let image = sample_image(3);
        let summary =
            write_docker_save_tar(&out, &image, &["sample:1.0", "sample:latest"]).unwrap();
        let tar = fs::read(&out).unwrap();
        let entries = tar_entries(&tar);
        assert_eq!(entries.last().unwrap().path, "manifest.json");

        let manifest_bytes = tar_file(&tar, "manifest.json");
        assert_eq!(manifest_bytes, summary.manifest_json);
        let manifest: Value = serde_json::from_slice(&manifest_bytes).unwrap();
        assert!(
            manifest_bytes.starts_with(br#"[{"Config":"#),
            "docker's key order"
        );
        let item = &manifest.as_array().unwrap()[0];
        assert_eq!(item["RepoTags"], json!(["sample:1.0", "sample:latest"]));
        let config_path = item["Config"].as_str().unwrap();
        assert_eq!(config_path, summary.config_path);
        let config_bytes = tar_file(&tar, config_path);
        assert_eq!(sha256_digest(&config_bytes), summary.config_digest);
        assert_eq!(
            format!("{}.json", digest_hex(&summary.config_digest)),
            config_path
        );
        let config = ImageConfiguration::from_reader(config_bytes.as_slice()).unwrap();
        assert_eq!(config.rootfs().diff_ids(), &summary.diff_ids);

        let layers: Vec<&str> = item["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap())
            .collect();
        assert_eq!(layers, summary.layer_paths);
        assert_eq!(layers.len(), image.layers.len());
        for (path, diff_id) in layers.iter().zip(&summary.diff_ids) {
            assert_eq!(&sha256_digest(&tar_file(&tar, path)), diff_id);
            let dir = path.strip_suffix("/layer.tar").unwrap();
            assert_eq!(tar_file(&tar, &format!("{dir}/VERSION")), b"1.0");
            let v1: Value =
                serde_json::from_slice(&tar_file(&tar, &format!("{dir}/json"))).unwrap();
            assert_eq!(v1["id"], dir);
        }
        let repositories: Value = serde_json::from_slice(&tar_file(&tar, "repositories")).unwrap();
        let top = layers.last().unwrap().strip_suffix("/layer.tar").unwrap();
        assert_eq!(repositories, json!({"sample": {"1.0": top, "latest": top}}));
    }

    #[test]
    fn deterministic_and_untagged() {
        let a = docker_save_tar_bytes(&sample_image(3), &["x/y:z"]).unwrap();
        let b = docker_save_tar_bytes(&sample_image(3), &["x/y:z"]).unwrap();
        assert_eq!(a, b);
        let (tar, summary) = docker_save_tar_bytes(&sample_image(3), &[]).unwrap();
        let manifest: Value = serde_json::from_slice(&tar_file(&tar, "manifest.json")).unwrap();
        assert_eq!(manifest[0]["RepoTags"], Value::Null);
        assert!(summary.repo_tags.is_empty());
        assert!(!tar_entries(&tar).iter().any(|e| e.path == "repositories"));
    }

    #[test]
    fn repo_tags_are_validated() {
        assert_eq!(
            split_repo_tag("localhost:5000/app:v1").unwrap(),
            ("localhost:5000/app", "v1")
        );
        assert_eq!(split_repo_tag("sample:1.0").unwrap(), ("sample", "1.0"));
        for bad in [
            "sample",
            "localhost:5000/app",
            ":tag",
            "name:",
            "a@sha256:00:x",
        ] {
            assert!(split_repo_tag(bad).is_err(), "{bad}");
        }
    }
}
