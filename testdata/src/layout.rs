//! OCI image-layout writers: a directory ([`write_oci_layout`]) or the same
//! files in a tar ([`write_oci_layout_tar`], [`oci_layout_tar_bytes`]).
//!
//! A layout holds `oci-layout`, `index.json` and `blobs/sha256/<hex>`. Each
//! reference becomes one `index.json` entry annotated with
//! `org.opencontainers.image.ref.name`; it points at a manifest
//! ([`LayoutImage::Single`]) or at an image index listing one manifest per
//! platform ([`LayoutImage::Multi`]). Blobs shared between images (e.g. a
//! common top layer) are written once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::Path;

use oci_spec::image::{ANNOTATION_REF_NAME, ImageIndexBuilder, MediaType, OciLayoutBuilder};

use crate::image::{BlobRef, ImageSpec, ImageSummary, MEDIA_TYPE_INDEX};
use crate::layer::DEFAULT_MTIME;
use crate::{Error, Result, canonical_json, digest_hex};

/// What one reference of a layout points at.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "built once per fixture; boxing would only complicate matching"
)]
pub enum LayoutImage {
    /// A single-platform image: the `index.json` entry is its manifest.
    Single(ImageSpec),
    /// A multi-platform image: the `index.json` entry is an image index
    /// listing each image's manifest with its `platform`.
    Multi(Vec<ImageSpec>),
}

impl From<ImageSpec> for LayoutImage {
    fn from(image: ImageSpec) -> Self {
        LayoutImage::Single(image)
    }
}

impl From<Vec<ImageSpec>> for LayoutImage {
    fn from(images: Vec<ImageSpec>) -> Self {
        LayoutImage::Multi(images)
    }
}

/// What a layout writer wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutSummary {
    /// Every blob digest written under `blobs/sha256/`, sorted, without duplicates.
    pub blobs: Vec<String>,
    /// One entry per reference, in the order given.
    pub refs: Vec<RefSummary>,
    /// The bytes of `index.json`.
    pub index_json: Vec<u8>,
}

/// One reference of a layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefSummary {
    /// The `org.opencontainers.image.ref.name` annotation, as given.
    pub name: String,
    /// The `index.json` descriptor: a manifest or an image index.
    pub target: BlobRef,
    /// The platform images (one for a single-platform reference).
    pub images: Vec<ImageSummary>,
}

/// A layout assembled in memory.
struct Layout {
    blobs: BTreeMap<String, Vec<u8>>,
    oci_layout: Vec<u8>,
    summary: LayoutSummary,
}

fn build_layout(images: &[(&str, LayoutImage)]) -> Result<Layout> {
    let mut blobs = BTreeMap::new();
    let mut refs = Vec::new();
    let mut entries = Vec::new();
    let mut names = BTreeSet::new();
    for (name, image) in images {
        if !names.insert(*name) {
            return Err(Error::DuplicateRef((*name).to_owned()));
        }
        let (target, summaries) = match image {
            LayoutImage::Single(spec) => {
                let built = spec.build()?;
                add_blobs(&mut blobs, built.blobs());
                (built.manifest.clone(), vec![built.summary()])
            }
            LayoutImage::Multi(specs) => {
                if specs.is_empty() {
                    return Err(Error::EmptyIndex((*name).to_owned()));
                }
                let mut manifests = Vec::new();
                let mut summaries = Vec::new();
                for spec in specs {
                    let built = spec.build()?;
                    add_blobs(&mut blobs, built.blobs());
                    let mut descriptor = built.manifest.to_descriptor()?;
                    descriptor.set_platform(Some(built.platform.to_oci()?));
                    manifests.push(descriptor);
                    summaries.push(built.summary());
                }
                let index = ImageIndexBuilder::default()
                    .schema_version(2u32)
                    .media_type(MediaType::ImageIndex)
                    .manifests(manifests)
                    .build()?;
                let index_json = canonical_json(&index)?;
                let target = BlobRef::of(MEDIA_TYPE_INDEX, &index_json);
                blobs.insert(target.digest.clone(), index_json);
                (target, summaries)
            }
        };
        let mut descriptor = target.to_descriptor()?;
        descriptor.set_annotations(Some(HashMap::from([(
            ANNOTATION_REF_NAME.to_owned(),
            (*name).to_owned(),
        )])));
        entries.push(descriptor);
        refs.push(RefSummary {
            name: (*name).to_owned(),
            target,
            images: summaries,
        });
    }
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(entries)
        .build()?;
    let oci_layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()?;
    Ok(Layout {
        summary: LayoutSummary {
            blobs: blobs.keys().cloned().collect(),
            refs,
            index_json: canonical_json(&index)?,
        },
        oci_layout: canonical_json(&oci_layout)?,
        blobs,
    })
}

fn add_blobs(blobs: &mut BTreeMap<String, Vec<u8>>, new: Vec<(&str, &[u8])>) {
    for (digest, bytes) in new {
        blobs
            .entry(digest.to_owned())
            .or_insert_with(|| bytes.to_vec());
    }
}

/// Writes an OCI image-layout directory at `dir` (created if missing; an
/// existing `index.json` is replaced, existing blobs are kept).
///
/// `images` pairs each `org.opencontainers.image.ref.name` value (a full
/// reference like `docker.io/library/sample:1.0` or a bare tag like `1.0`,
/// used verbatim) with what it points at.
pub fn write_oci_layout(dir: &Path, images: &[(&str, LayoutImage)]) -> Result<LayoutSummary> {
    let layout = build_layout(images)?;
    let blob_dir = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blob_dir).map_err(Error::io(&blob_dir))?;
    for (digest, bytes) in &layout.blobs {
        let path = blob_dir.join(digest_hex(digest));
        fs::write(&path, bytes).map_err(Error::io(&path))?;
    }
    let path = dir.join("oci-layout");
    fs::write(&path, &layout.oci_layout).map_err(Error::io(&path))?;
    let path = dir.join("index.json");
    fs::write(&path, &layout.summary.index_json).map_err(Error::io(&path))?;
    Ok(layout.summary)
}

/// Builds the layout of [`write_oci_layout`] as tar bytes: `oci-layout`,
/// `index.json`, `blobs/`, `blobs/sha256/`, then the blobs sorted by digest.
pub fn oci_layout_tar_bytes(images: &[(&str, LayoutImage)]) -> Result<(Vec<u8>, LayoutSummary)> {
    let layout = build_layout(images)?;
    let mut tar = TarWriter::new();
    tar.file("oci-layout", &layout.oci_layout)?;
    tar.file("index.json", &layout.summary.index_json)?;
    tar.dir("blobs")?;
    tar.dir("blobs/sha256")?;
    for (digest, bytes) in &layout.blobs {
        tar.file(&format!("blobs/sha256/{}", digest_hex(digest)), bytes)?;
    }
    Ok((tar.finish()?, layout.summary))
}

/// Writes the layout of [`write_oci_layout`] as a tar archive at `out`.
pub fn write_oci_layout_tar(out: &Path, images: &[(&str, LayoutImage)]) -> Result<LayoutSummary> {
    let (bytes, summary) = oci_layout_tar_bytes(images)?;
    fs::write(out, bytes).map_err(Error::io(out))?;
    Ok(summary)
}

/// A deterministic in-memory tar of plain files and directories
/// (GNU headers, owner 0:0, mtime [`DEFAULT_MTIME`]).
pub(crate) struct TarWriter(tar::Builder<Vec<u8>>);

impl TarWriter {
    pub(crate) fn new() -> Self {
        TarWriter(tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(DEFAULT_MTIME);
        header.set_size(size);
        header
    }

    pub(crate) fn file(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
        self.0
            .append_data(&mut header, name, bytes)
            .map_err(Error::encode(name))
    }

    pub(crate) fn dir(&mut self, name: &str) -> Result<()> {
        let mut header = Self::header(tar::EntryType::Directory, 0o755, 0);
        self.0
            .append_data(&mut header, name, std::io::empty())
            .map_err(Error::encode(name))
    }

    pub(crate) fn finish(self) -> Result<Vec<u8>> {
        self.0.into_inner().map_err(Error::encode("end of archive"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{gunzip, tar_entries};
    use crate::{sample_image, sample_multiplatform, sha256_digest};
    use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

    fn images() -> Vec<(&'static str, LayoutImage)> {
        vec![
            ("docker.io/library/sample:1.0", sample_image(1).into()),
            ("multi", sample_multiplatform(1).into()),
        ]
    }

    /// Reads a blob and checks it hashes to its name and has the expected size.
    fn blob(dir: &Path, digest: &str, size: u64) -> Vec<u8> {
        let bytes = fs::read(dir.join("blobs/sha256").join(digest_hex(digest))).unwrap();
        assert_eq!(sha256_digest(&bytes), digest);
        assert_eq!(bytes.len() as u64, size, "{digest}");
        bytes
    }

    /// Walks index.json → (index →) manifest → config + layers, checking every hop.
    fn check_manifest(dir: &Path, digest: &str, size: u64, summary: &ImageSummary) {
        let manifest = ImageManifest::from_reader(blob(dir, digest, size).as_slice()).unwrap();
        assert_eq!(manifest.schema_version(), 2);
        assert_eq!(manifest.media_type(), &Some(MediaType::ImageManifest));
        let config_desc = manifest.config();
        assert_eq!(config_desc.media_type(), &MediaType::ImageConfig);
        let config_bytes = blob(dir, config_desc.digest().as_ref(), config_desc.size());
        let config = ImageConfiguration::from_reader(config_bytes.as_slice()).unwrap();
        assert_eq!(
            config.architecture().to_string(),
            summary.platform.architecture
        );
        assert_eq!(config.rootfs().diff_ids().len(), manifest.layers().len());
        for (layer, diff_id) in manifest.layers().iter().zip(config.rootfs().diff_ids()) {
            assert_eq!(layer.media_type(), &MediaType::ImageLayerGzip);
            let gz = blob(dir, layer.digest().as_ref(), layer.size());
            assert_eq!(&sha256_digest(&gunzip(&gz)), diff_id);
        }
        assert_eq!(config.rootfs().diff_ids(), &summary.diff_ids);
        assert_eq!(config_desc.digest().to_string(), summary.config.digest);
    }

    #[test]
    fn layout_is_complete_and_consistent() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let summary = write_oci_layout(dir, &images()).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join("oci-layout")).unwrap(),
            r#"{"imageLayoutVersion":"1.0.0"}"#
        );
        // Every file under blobs/sha256 hashes to its name and is listed, and vice versa.
        let mut on_disk: Vec<String> = fs::read_dir(dir.join("blobs/sha256"))
            .unwrap()
            .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        on_disk.sort();
        assert_eq!(on_disk, summary.blobs);
        for digest in &on_disk {
            let bytes = fs::read(dir.join("blobs/sha256").join(digest_hex(digest))).unwrap();
            assert_eq!(&sha256_digest(&bytes), digest);
        }

        let index_bytes = fs::read(dir.join("index.json")).unwrap();
        assert_eq!(index_bytes, summary.index_json);
        let index = ImageIndex::from_reader(index_bytes.as_slice()).unwrap();
        assert_eq!(index.manifests().len(), 2);
        for (desc, r) in index.manifests().iter().zip(&summary.refs) {
            let annotations = desc.annotations().as_ref().unwrap();
            assert_eq!(annotations[ANNOTATION_REF_NAME], r.name);
            assert_eq!(desc.digest().to_string(), r.target.digest);
            assert_eq!(desc.size(), r.target.size);
            assert_eq!(desc.media_type().to_string(), r.target.media_type);
        }

        let single = &summary.refs[0];
        assert_eq!(single.target.media_type, crate::image::MEDIA_TYPE_MANIFEST);
        assert_eq!(single.target, single.images[0].manifest);
        check_manifest(
            dir,
            &single.target.digest,
            single.target.size,
            &single.images[0],
        );

        let multi = &summary.refs[1];
        assert_eq!(multi.target.media_type, MEDIA_TYPE_INDEX);
        let bytes = blob(dir, &multi.target.digest, multi.target.size);
        let platform_index = ImageIndex::from_reader(bytes.as_slice()).unwrap();
        assert_eq!(platform_index.media_type(), &Some(MediaType::ImageIndex));
        assert_eq!(platform_index.manifests().len(), 2);
        for (desc, image) in platform_index.manifests().iter().zip(&multi.images) {
            let platform = desc.platform().as_ref().unwrap();
            assert_eq!(
                platform.architecture().to_string(),
                image.platform.architecture
            );
            assert_eq!(platform.os().to_string(), "linux");
            assert_eq!(desc.media_type(), &MediaType::ImageManifest);
            check_manifest(dir, desc.digest().as_ref(), desc.size(), image);
        }
        let arches: Vec<&str> = multi
            .images
            .iter()
            .map(|i| i.platform.architecture.as_str())
            .collect();
        assert_eq!(arches, ["amd64", "arm64"]);
        // The platform images share their top layer: it is stored once.
        assert_eq!(multi.images[0].layers.last(), multi.images[1].layers.last());
    }

    #[test]
    fn layout_is_deterministic() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let sa = write_oci_layout(a.path(), &images()).unwrap();
        let sb = write_oci_layout(b.path(), &images()).unwrap();
        assert_eq!(sa, sb);
        for name in ["oci-layout", "index.json"] {
            assert_eq!(
                fs::read(a.path().join(name)).unwrap(),
                fs::read(b.path().join(name)).unwrap()
            );
        }
        for digest in &sa.blobs {
            let rel = Path::new("blobs/sha256").join(digest_hex(digest));
            assert_eq!(
                fs::read(a.path().join(&rel)).unwrap(),
                fs::read(b.path().join(&rel)).unwrap()
            );
        }
        assert_eq!(
            oci_layout_tar_bytes(&images()).unwrap(),
            oci_layout_tar_bytes(&images()).unwrap()
        );
        let other = write_oci_layout(b.path(), &[("x", sample_image(2).into())]).unwrap();
        assert_ne!(other.refs[0].target, sa.refs[0].target);
    }

    #[test]
    fn tar_matches_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("layout.tar");
        let summary = write_oci_layout_tar(&out, &images()).unwrap();
        let entries = tar_entries(&fs::read(&out).unwrap());
        let names: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            &names[..4],
            ["oci-layout", "index.json", "blobs", "blobs/sha256"]
        );
        assert_eq!(names.len(), 4 + summary.blobs.len());
        let dir = tmp.path().join("dir");
        let dir_summary = write_oci_layout(&dir, &images()).unwrap();
        assert_eq!(summary, dir_summary);
        for entry in entries.iter().filter(|e| e.kind == tar::EntryType::Regular) {
            assert_eq!(
                entry.data,
                fs::read(dir.join(&entry.path)).unwrap(),
                "{}",
                entry.path
            );
        }
    }

    #[test]
    fn bad_inputs_are_rejected() {
        let dup = [("a", sample_image(1).into()), ("a", sample_image(2).into())];
        assert!(matches!(
            oci_layout_tar_bytes(&dup),
            Err(Error::DuplicateRef(_))
        ));
        let empty = [("e", LayoutImage::Multi(Vec::new()))];
        assert!(matches!(
            oci_layout_tar_bytes(&empty),
            Err(Error::EmptyIndex(_))
        ));
    }
}
