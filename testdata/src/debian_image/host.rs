//! Filling a layer plan from the host: the files `dpkg-query -L` lists for
//! installed packages, with the host's kinds, modes, owners and hardlinks.
//!
//! Listed paths are resolved through symlinked parent directories (Debian 12
//! lists `/bin/bash`, which is `/usr/bin/bash` behind the merged-`/usr`
//! symlink `/bin`), so no layer entry ever sits below a symlink; the
//! symlinks themselves (`/bin` → `usr/bin`) are entries of their own.
//! Devices, fifos and sockets on the host are skipped, and so are listed
//! paths that are not on the host (e.g. docs excluded by dpkg's path-exclude).

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Content, Error, LayerPlan, Node, NodeKind, Result};

/// A directory node with the host's metadata for `/<path>`, or `0755 0:0`
/// when the host has no directory there.
pub(super) fn dir_node(path: &str) -> Node {
    match fs::symlink_metadata(Path::new("/").join(path)) {
        Ok(meta) if meta.is_dir() => Node::new(NodeKind::Dir, meta.mode() & 0o7777)
            .owner(u64::from(meta.uid()), u64::from(meta.gid())),
        _ => Node::new(NodeKind::Dir, 0o755),
    }
}

/// Adds every file of the installed `packages` to `layer`; packages that
/// are not installed are skipped, but at least one must be.
pub(super) fn add_packages(layer: &mut LayerPlan, packages: &[&'static str]) -> Result<()> {
    let mut paths = BTreeMap::new();
    let mut installed = 0;
    let mut parents: HashMap<PathBuf, Option<PathBuf>> = HashMap::new();
    for package in packages {
        let Some(listed) = package_files(package)? else {
            continue;
        };
        installed += 1;
        for path in listed {
            if let Some(rel) = resolve(&path, &mut parents) {
                paths.insert(rel, path);
            }
        }
    }
    if installed == 0 {
        return Err(Error::NoPackages(packages.to_vec()));
    }
    let mut inodes: HashMap<(u64, u64), String> = HashMap::new();
    for rel in paths.keys() {
        add_host_entry(layer, rel, Some(&mut inodes))?;
    }
    Ok(())
}

/// Adds the host's `/<rel>` to `layer` (no hardlink detection); `false`
/// when the host has no such path.
pub(super) fn add_host_path(layer: &mut LayerPlan, rel: &str) -> Result<bool> {
    add_host_entry(layer, rel, None)
}

/// Fails with [`Error::MissingHostFile`] unless `layer` has `path`.
pub(super) fn require(layer: &LayerPlan, path: &str, package: &'static str) -> Result<()> {
    if layer.nodes.contains_key(path) {
        Ok(())
    } else {
        Err(Error::MissingHostFile {
            path: format!("/{path}"),
            package,
        })
    }
}

/// The paths `dpkg-query -L` lists for `package`, or `None` if it is not installed.
fn package_files(package: &str) -> Result<Option<Vec<PathBuf>>> {
    let output = Command::new("dpkg-query")
        .args(["-L", package])
        .output()
        .map_err(|source| Error::Command {
            command: format!("dpkg-query -L {package}"),
            status: format!("could not start: {source}"),
            stderr: String::new(),
        })?;
    if !output.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&output.stdout);
    // Lines other than absolute paths are diversion notes ("diverted by …").
    Ok(Some(
        text.lines()
            .filter(|line| line.starts_with('/') && *line != "/." && *line != "/")
            .map(PathBuf::from)
            .collect(),
    ))
}

/// Resolves symlinks in the parent of the absolute `path`; returns the
/// result without its leading `/`, or `None` if the parent is gone or the
/// name is not UTF-8.
fn resolve(path: &Path, parents: &mut HashMap<PathBuf, Option<PathBuf>>) -> Option<String> {
    let parent = path.parent()?;
    let name = path.file_name()?;
    let real_parent = parents
        .entry(parent.to_path_buf())
        .or_insert_with(|| fs::canonicalize(parent).ok())
        .as_ref()?;
    let real = real_parent.join(name);
    let rel = real.strip_prefix("/").ok()?.to_str()?;
    (!rel.is_empty()).then(|| rel.to_owned())
}

fn add_host_entry(
    layer: &mut LayerPlan,
    rel: &str,
    inodes: Option<&mut HashMap<(u64, u64), String>>,
) -> Result<bool> {
    let host = Path::new("/").join(rel);
    let meta = match fs::symlink_metadata(&host) {
        Ok(meta) => meta,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(source) => return Err(Error::Io { path: host, source }),
    };
    let file_type = meta.file_type();
    let kind = if file_type.is_dir() {
        NodeKind::Dir
    } else if file_type.is_symlink() {
        let target = fs::read_link(&host).map_err(Error::io(&host))?;
        let Some(target) = target.to_str() else {
            return Ok(false);
        };
        NodeKind::Symlink(target.to_owned())
    } else if file_type.is_file() {
        let first = match inodes {
            Some(inodes) if meta.nlink() > 1 => {
                let first = inodes
                    .entry((meta.dev(), meta.ino()))
                    .or_insert_with(|| rel.to_owned());
                (first != rel).then(|| first.clone())
            }
            _ => None,
        };
        match first {
            Some(target) => NodeKind::Hardlink(target),
            None => NodeKind::File(Content::Host(host)),
        }
    } else {
        return Ok(false);
    };
    let node =
        Node::new(kind, meta.mode() & 0o7777).owner(u64::from(meta.uid()), u64::from(meta.gid()));
    layer.put(rel, node);
    Ok(true)
}
