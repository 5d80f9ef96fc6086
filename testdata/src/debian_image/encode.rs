//! Encoding the planned layers: deterministic tars (GNU headers, PAX
//! `SCHILY.xattr.*` records for xattrs), their gzip blobs (built in
//! parallel), the image config and manifest, and the OCI image layout.
//!
//! [`LayerSpec`](crate::LayerSpec) has no devices, fifos or xattrs, so the
//! fixture writes its own tars; the blobs, digests and JSON follow the same
//! conventions as the rest of the crate (`layer::gzip`, `canonical_json`),
//! and the result is a [`BuiltImage`] that the registry harness can push.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;

use oci_spec::image::{
    ANNOTATION_REF_NAME, Arch, Config, Descriptor, HistoryBuilder, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, RootFsBuilder,
};
use tar::{EntryType, Header};

use super::{Content, Error, LayerPlan, Node, NodeKind, Result};
use crate::image::{
    BlobRef, BuiltImage, DEFAULT_CREATED, MEDIA_TYPE_CONFIG, MEDIA_TYPE_MANIFEST, Platform,
};
use crate::layer::{BuiltLayer, WHITEOUT_PREFIX, gzip};
use crate::{canonical_json, digest_hex, sha256_digest};

/// Encodes every layer (one thread each) and builds the config and manifest.
pub(super) fn build_image(plans: &[LayerPlan]) -> Result<BuiltImage> {
    let layers = std::thread::scope(|scope| {
        let handles: Vec<_> = plans
            .iter()
            .map(|plan| scope.spawn(|| encode_layer(plan)))
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let platform = Platform::new("linux", host_arch(), None);
    let config_json = config_json(&platform, &layers)?;
    let config = BlobRef::of(MEDIA_TYPE_CONFIG, &config_json);
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config.to_descriptor()?)
        .layers(
            layers
                .iter()
                .map(|layer| layer.blob_ref().to_descriptor())
                .collect::<crate::Result<Vec<_>>>()?,
        )
        .build()
        .map_err(crate::Error::from)?;
    let manifest_json = canonical_json(&manifest)?;
    Ok(BuiltImage {
        platform,
        manifest: BlobRef::of(MEDIA_TYPE_MANIFEST, &manifest_json),
        manifest_json,
        config,
        config_json,
        layers,
    })
}

/// The OCI architecture name of this host (the files are this host's).
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn config_json(platform: &Platform, layers: &[BuiltLayer]) -> Result<Vec<u8>> {
    let mut runtime = Config::default();
    runtime.set_env(Some(vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
    ]));
    runtime.set_cmd(Some(vec!["/bin/bash".to_owned()]));
    let history = layers
        .iter()
        .map(|layer| {
            let mut entry = HistoryBuilder::default().created(DEFAULT_CREATED);
            if let Some(created_by) = &layer.created_by {
                entry = entry.created_by(created_by.clone());
            }
            entry.build()
        })
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(crate::Error::from)?;
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(
            layers
                .iter()
                .map(|layer| layer.diff_id.clone())
                .collect::<Vec<_>>(),
        )
        .build()
        .map_err(crate::Error::from)?;
    let config = ImageConfigurationBuilder::default()
        .created(DEFAULT_CREATED)
        .os(Os::from(platform.os.as_str()))
        .architecture(Arch::from(platform.architecture.as_str()))
        .config(runtime)
        .rootfs(rootfs)
        .history(history)
        .build()
        .map_err(crate::Error::from)?;
    Ok(canonical_json(&config)?)
}

/// Writes `image` as an OCI image layout at `dir` whose `index.json` names
/// its manifest `ref_name`.
pub(super) fn write_layout(dir: &Path, ref_name: &str, image: &BuiltImage) -> Result<()> {
    let blobs = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).map_err(Error::io(&blobs))?;
    for (digest, bytes) in image.blobs() {
        let path = blobs.join(digest_hex(digest));
        fs::write(&path, bytes).map_err(Error::io(&path))?;
    }
    let mut manifest: Descriptor = image.manifest.to_descriptor()?;
    manifest.set_annotations(Some(HashMap::from([(
        ANNOTATION_REF_NAME.to_owned(),
        ref_name.to_owned(),
    )])));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest])
        .build()
        .map_err(crate::Error::from)?;
    let oci_layout = OciLayoutBuilder::default()
        .image_layout_version("1.0.0")
        .build()
        .map_err(crate::Error::from)?;
    for (name, value) in [
        ("index.json", canonical_json(&index)?),
        ("oci-layout", canonical_json(&oci_layout)?),
    ] {
        let path = dir.join(name);
        fs::write(&path, value).map_err(Error::io(&path))?;
    }
    Ok(())
}

/// The name of `path` in the tar: `dir/.wh.name` for a whiteout of `dir/name`.
fn archive_name(path: &str, node: &Node) -> String {
    match node.kind {
        NodeKind::Whiteout => match path.rsplit_once('/') {
            Some((dir, name)) => format!("{dir}/{WHITEOUT_PREFIX}{name}"),
            None => format!("{WHITEOUT_PREFIX}{path}"),
        },
        _ => path.to_owned(),
    }
}

fn encode_layer(plan: &LayerPlan) -> Result<BuiltLayer> {
    let mut entries: Vec<(String, &Node)> = plan
        .nodes
        .iter()
        .map(|(path, node)| (archive_name(path, node), node))
        .collect();
    // Path order puts parents first; hardlinks go last so their targets precede them.
    entries.sort_by(|(a, an), (b, bn)| {
        let link = |node: &Node| matches!(node.kind, NodeKind::Hardlink(_));
        (link(an), a).cmp(&(link(bn), b))
    });
    let mut builder = tar::Builder::new(Vec::new());
    for (name, node) in entries {
        append(&mut builder, &name, node, plan.mtime)?;
    }
    let tar = builder
        .into_inner()
        .map_err(crate::Error::encode("end of archive"))?;
    let gzip = gzip(&tar).map_err(crate::Error::encode("gzip stream"))?;
    Ok(BuiltLayer {
        diff_id: sha256_digest(&tar),
        digest: sha256_digest(&gzip),
        size: gzip.len() as u64,
        uncompressed_size: tar.len() as u64,
        tar,
        gzip,
        created_by: Some(plan.created_by.clone()),
    })
}

fn append(builder: &mut tar::Builder<Vec<u8>>, name: &str, node: &Node, mtime: u64) -> Result<()> {
    let encode = |source: io::Error| crate::Error::Encode {
        entry: name.to_owned(),
        source,
    };
    if !node.xattrs.is_empty() {
        let keys: Vec<String> = node
            .xattrs
            .iter()
            .map(|(key, _)| format!("SCHILY.xattr.{key}"))
            .collect();
        let records = keys
            .iter()
            .map(String::as_str)
            .zip(node.xattrs.iter().map(|(_, value)| value.as_slice()));
        builder.append_pax_extensions(records).map_err(encode)?;
    }
    let mut header = Header::new_gnu();
    header.set_mode(node.mode);
    header.set_uid(node.uid);
    header.set_gid(node.gid);
    header.set_mtime(mtime);
    header.set_size(0);
    let empty = io::empty();
    let result = match &node.kind {
        NodeKind::Dir => {
            header.set_entry_type(EntryType::Directory);
            builder.append_data(&mut header, name, empty)
        }
        NodeKind::File(content) => {
            let bytes = match content {
                Content::Host(path) => fs::read(path).map_err(Error::io(path))?,
                Content::Bytes(bytes) => bytes.clone(),
            };
            header.set_entry_type(EntryType::Regular);
            header.set_size(bytes.len() as u64);
            builder.append_data(&mut header, name, bytes.as_slice())
        }
        NodeKind::Symlink(target) => {
            header.set_entry_type(EntryType::Symlink);
            builder.append_link(&mut header, name, target)
        }
        NodeKind::Hardlink(target) => {
            header.set_entry_type(EntryType::Link);
            builder.append_link(&mut header, name, target)
        }
        NodeKind::CharDevice { major, minor } => {
            header.set_entry_type(EntryType::Char);
            header.set_device_major(*major).map_err(encode)?;
            header.set_device_minor(*minor).map_err(encode)?;
            builder.append_data(&mut header, name, empty)
        }
        NodeKind::Fifo => {
            header.set_entry_type(EntryType::Fifo);
            builder.append_data(&mut header, name, empty)
        }
        NodeKind::Whiteout | NodeKind::Opaque => {
            header.set_entry_type(EntryType::Regular);
            builder.append_data(&mut header, name, empty)
        }
    };
    result.map_err(encode)?;
    Ok(())
}
