//! What `strata artifact push` makes of a directory: its files, each classified, and
//! the layers they become.
//!
//! - ModelPack (the default): a file of at least [`LARGE_FILE`] bytes is one `.raw`
//!   layer with its path in `org.cncf.model.filepath`; the smaller files are grouped,
//!   per kind, into one uncompressed tar layer each (entries at their paths from the
//!   directory's root, deterministic: sorted, owner 0, mtime 0). The kind comes from the
//!   file name ([`FileKind::of`]).
//! - ORAS: every file is one layer named by `org.opencontainers.image.title` (ORAS clients
//!   unpack only gzip directories, so nothing is grouped).
//!
//! Only regular files and directories are pushed; `.git` directories are skipped.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use strata_formats::artifact::{modelpack, oras};

use super::error::ArtifactError;

/// Files of at least this size get a raw layer of their own (1 MiB).
pub const LARGE_FILE: u64 = 1 << 20;

/// Which convention an artifact is pushed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactFormat {
    /// CNCF ModelPack.
    ModelPack,
    /// ORAS (one file per layer, title annotations).
    Oras,
}

/// A ModelPack layer kind, from a file's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileKind {
    /// Weights: `*.safetensors`, `*.gguf`, `*.bin`, `*.pt`, `*.pth`, `*.ckpt`, `*.onnx`,
    /// `*.h5`, `*.msgpack`, `*.tflite`, `*.mlmodel`, `*.npz`.
    Weight,
    /// Model and tokenizer configuration: `*config.json`, `tokenizer*`, `vocab.*`,
    /// `merges.txt`, `special_tokens_map.json`, `*.tiktoken`.
    WeightConfig,
    /// Documentation: `README*`, `LICENSE*`, `NOTICE*`, `*.md`, `*.txt`, `*.rst`, `*.pdf`.
    Doc,
    /// Everything else (code, scripts, other data).
    Code,
}

impl FileKind {
    /// The kind of the file at `rel` (a `/`-separated relative path), by its name.
    pub fn of(rel: &str) -> Self {
        let name = rel.rsplit('/').next().unwrap_or(rel).to_ascii_lowercase();
        let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
        if matches!(
            ext,
            "safetensors"
                | "gguf"
                | "bin"
                | "pt"
                | "pth"
                | "ckpt"
                | "onnx"
                | "h5"
                | "msgpack"
                | "tflite"
                | "mlmodel"
                | "npz"
        ) {
            Self::Weight
        } else if name.ends_with("config.json")
            || name.starts_with("tokenizer")
            || name.starts_with("vocab.")
            || name == "merges.txt"
            || name == "special_tokens_map.json"
            || ext == "tiktoken"
        {
            Self::WeightConfig
        } else if name.starts_with("readme")
            || name.starts_with("license")
            || name.starts_with("notice")
            || matches!(ext, "md" | "txt" | "rst" | "pdf")
        {
            Self::Doc
        } else {
            Self::Code
        }
    }

    /// The kind's name in ModelPack media types.
    pub fn modelpack_name(self) -> &'static str {
        match self {
            Self::Weight => "weight",
            Self::WeightConfig => "weight.config",
            Self::Doc => "doc",
            Self::Code => "code",
        }
    }
}

/// A regular file of the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirFile {
    /// Its path from the directory, `/`-separated.
    pub rel: String,
    /// Its path on disk.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Whether any execute bit is set (kept in tar layers).
    pub executable: bool,
}

/// Where a layer's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerSource {
    /// One file, as it is.
    File(DirFile),
    /// A tar of these files (built into a temporary file before the push).
    Tar(Vec<DirFile>),
}

/// One layer to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedLayer {
    /// Its media type.
    pub media_type: String,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// Its bytes.
    pub source: LayerSource,
}

/// The regular files under `dir`, sorted by path; `.git` directories skipped.
pub fn scan(dir: &Path) -> Result<Vec<DirFile>, ArtifactError> {
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    out.sort_by(|a, b| a.rel.cmp(&b.rel));
    if out.is_empty() {
        return Err(ArtifactError::Empty(dir.to_owned()));
    }
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<DirFile>) -> Result<(), ArtifactError> {
    let read = std::fs::read_dir(dir)
        .map_err(|e| ArtifactError::io(format!("read directory {}", dir.display()), e))?;
    for entry in read {
        let entry =
            entry.map_err(|e| ArtifactError::io(format!("read directory {}", dir.display()), e))?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(ArtifactError::io(
                format!("{}", path.display()),
                io::Error::new(io::ErrorKind::InvalidData, "file name is not UTF-8"),
            ));
        };
        let rel = if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        };
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| ArtifactError::io(format!("stat {}", path.display()), e))?;
        if meta.is_dir() {
            if name != ".git" {
                walk(&path, &rel, out)?;
            }
        } else if meta.is_file() {
            out.push(DirFile {
                rel,
                path,
                size: meta.len(),
                executable: meta.permissions().mode() & 0o111 != 0,
            });
        } else {
            return Err(ArtifactError::NotRegular(path));
        }
    }
    Ok(())
}

/// The layers `files` become in `format`, in a stable order (raw files by path, then the
/// tar layers by kind).
pub fn plan(files: &[DirFile], format: ArtifactFormat) -> Vec<PlannedLayer> {
    let annotated = |key: &str, value: &str| BTreeMap::from([(key.to_owned(), value.to_owned())]);
    match format {
        ArtifactFormat::Oras => files
            .iter()
            .map(|f| PlannedLayer {
                // What `oras push` gives files by default.
                media_type: "application/vnd.oci.image.layer.v1.tar".to_owned(),
                annotations: annotated(oras::TITLE, &f.rel),
                source: LayerSource::File(f.clone()),
            })
            .collect(),
        ArtifactFormat::ModelPack => {
            let mut layers = Vec::new();
            let mut small: BTreeMap<FileKind, Vec<DirFile>> = BTreeMap::new();
            for f in files {
                let kind = FileKind::of(&f.rel);
                if f.size >= LARGE_FILE {
                    layers.push(PlannedLayer {
                        media_type: modelpack::layer(kind.modelpack_name(), "raw"),
                        annotations: annotated(modelpack::FILEPATH, &f.rel),
                        source: LayerSource::File(f.clone()),
                    });
                } else {
                    small.entry(kind).or_default().push(f.clone());
                }
            }
            for (kind, files) in small {
                layers.push(PlannedLayer {
                    media_type: modelpack::layer(kind.modelpack_name(), "tar"),
                    annotations: BTreeMap::new(),
                    source: LayerSource::Tar(files),
                });
            }
            layers
        }
    }
}

/// Writes a deterministic uncompressed tar of `files` (in the given order) to `out`:
/// regular files only, at their relative paths, mode 0644 or 0755, owner 0, mtime 0.
pub fn write_tar(files: &[DirFile], out: impl Write) -> Result<(), ArtifactError> {
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Deterministic);
    for f in files {
        let file = std::fs::File::open(&f.path)
            .map_err(|e| ArtifactError::io(format!("open {}", f.path.display()), e))?;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(f.size);
        header.set_mode(if f.executable { 0o755 } else { 0o644 });
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        // A file that changed size since the scan would make a corrupt tar: read exactly.
        let reader = std::io::Read::take(file, f.size);
        builder
            .append_data(&mut header, &f.rel, reader)
            .map_err(|e| {
                ArtifactError::io(format!("add {} to the tar layer", f.path.display()), e)
            })?;
    }
    builder
        .into_inner()
        .map_err(|e| ArtifactError::io("finish the tar layer", e))?
        .flush()
        .map_err(|e| ArtifactError::io("finish the tar layer", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_name() {
        assert_eq!(
            FileKind::of("model-00001-of-00002.safetensors"),
            FileKind::Weight
        );
        assert_eq!(FileKind::of("sub/pytorch_model.bin"), FileKind::Weight);
        assert_eq!(FileKind::of("config.json"), FileKind::WeightConfig);
        assert_eq!(
            FileKind::of("generation_config.json"),
            FileKind::WeightConfig
        );
        assert_eq!(FileKind::of("tokenizer.json"), FileKind::WeightConfig);
        assert_eq!(FileKind::of("tokenizer.model"), FileKind::WeightConfig);
        assert_eq!(FileKind::of("README.md"), FileKind::Doc);
        assert_eq!(FileKind::of("LICENSE"), FileKind::Doc);
        assert_eq!(FileKind::of("modeling.py"), FileKind::Code);
    }

    #[test]
    fn scan_plan_and_a_deterministic_tar() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::create_dir_all(d.join(".git")).unwrap();
        std::fs::write(d.join(".git/HEAD"), "x").unwrap();
        std::fs::write(d.join("w.safetensors"), vec![7u8; LARGE_FILE as usize]).unwrap();
        std::fs::write(d.join("config.json"), "{}").unwrap();
        std::fs::write(d.join("README.md"), "hi").unwrap();
        std::fs::write(d.join("sub/run.py"), "print()").unwrap();
        let files = scan(d).unwrap();
        let rels: Vec<&str> = files.iter().map(|f| f.rel.as_str()).collect();
        assert_eq!(
            rels,
            ["README.md", "config.json", "sub/run.py", "w.safetensors"]
        );
        let layers = plan(&files, ArtifactFormat::ModelPack);
        let types: Vec<&str> = layers.iter().map(|l| l.media_type.as_str()).collect();
        assert_eq!(
            types,
            [
                "application/vnd.cncf.model.weight.v1.raw",
                "application/vnd.cncf.model.weight.config.v1.tar",
                "application/vnd.cncf.model.doc.v1.tar",
                "application/vnd.cncf.model.code.v1.tar",
            ]
        );
        assert_eq!(layers[0].annotations[modelpack::FILEPATH], "w.safetensors");
        let LayerSource::Tar(code) = &layers[3].source else {
            panic!()
        };
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write_tar(code, &mut a).unwrap();
        write_tar(code, &mut b).unwrap();
        assert_eq!(a, b);
        let mut ar = tar::Archive::new(&a[..]);
        let names: Vec<String> = ar
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["sub/run.py"]);
        assert_eq!(plan(&files, ArtifactFormat::Oras).len(), 4);
    }

    #[test]
    fn symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("p")).unwrap();
        assert!(matches!(
            scan(dir.path()),
            Err(ArtifactError::NotRegular(_))
        ));
    }
}
