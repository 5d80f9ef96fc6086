//! [`LayerStack`]: the merged tree of a layer and the layers under it, read from their
//! TOCs alone (no file data), as [`strata_formats::prefetch`] sees a root filesystem: for
//! finding which layer holds the file a path names, after symlinks and whiteouts.

use strata_formats::ReadAt;
use strata_formats::estargz::{EntryType, Node, TocIndex};
use strata_formats::prefetch::{FileKind, RootFs};

/// OCI whiteout prefix (`dir/.wh.name` deletes `dir/name` of the layers below).
const WHITEOUT: &str = ".wh.";
/// OCI opaque marker (`dir/.wh..wh..opq`: nothing of `dir` below shows).
const OPAQUE: &str = ".wh..wh..opq";

/// Layers, top first, merged as overlayfs would show them.
#[derive(Debug)]
pub struct LayerStack<'a> {
    layers: Vec<&'a TocIndex>,
}

impl<'a> LayerStack<'a> {
    /// The stack of `layers`, top first.
    pub fn new(layers: Vec<&'a TocIndex>) -> Self {
        Self { layers }
    }

    /// The layer (its position, 0 the top) and node that `path` (absolute, normalized)
    /// names, hardlinks followed; `None` when no layer has it or an upper one deletes it.
    pub fn locate(&self, path: &str) -> Option<(usize, usize)> {
        let rel = path.trim_start_matches('/');
        for (i, layer) in self.layers.iter().enumerate() {
            if let Some(id) = layer.lookup_id(rel) {
                let node = layer.node(id)?;
                return Some((i, node.link_target.unwrap_or(id)));
            }
            if hides(layer, rel) {
                return None;
            }
        }
        None
    }

    fn node(&self, path: &str) -> Option<&'a Node> {
        let (i, id) = self.locate(path)?;
        self.layers[i].node(id)
    }
}

/// Whether `layer` deletes `rel` for the layers below it: a whiteout of it or of one of
/// its parents, or an opaque marker in one of its parents.
fn hides(layer: &TocIndex, rel: &str) -> bool {
    let mut path = rel;
    loop {
        let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
        let join = |n: &str| {
            if dir.is_empty() {
                n.to_owned()
            } else {
                format!("{dir}/{n}")
            }
        };
        if layer
            .lookup_id(&join(&format!("{WHITEOUT}{name}")))
            .is_some()
            || layer.lookup_id(&join(OPAQUE)).is_some()
        {
            return true;
        }
        if dir.is_empty() {
            return false;
        }
        path = dir;
    }
}

impl RootFs for LayerStack<'_> {
    fn lookup(&self, path: &str) -> Option<FileKind> {
        if path == "/" {
            return Some(FileKind::Dir);
        }
        let node = self.node(path)?;
        Some(match node.entry_type() {
            EntryType::Reg | EntryType::Hardlink => FileKind::Regular,
            EntryType::Symlink => FileKind::Symlink(node.entry.link_name.clone()),
            EntryType::Dir => FileKind::Dir,
            _ => FileKind::Other,
        })
    }

    fn open(&self, _path: &str) -> Option<Box<dyn ReadAt + '_>> {
        // File data is not read through the stack: a guess needs none.
        None
    }

    fn read_dir(&self, path: &str) -> Vec<String> {
        let rel = path.trim_start_matches('/');
        let mut names: Vec<String> = Vec::new();
        let mut deleted: Vec<String> = Vec::new();
        for layer in &self.layers {
            if let Some(dir) = layer.lookup_id(rel).and_then(|id| layer.node(id)) {
                for name in dir.children.keys() {
                    match name.strip_prefix(WHITEOUT) {
                        Some(gone) => deleted.push(gone.to_owned()),
                        None if !names.contains(name) && !deleted.contains(name) => {
                            names.push(name.clone())
                        }
                        None => {}
                    }
                }
                if dir.children.contains_key(OPAQUE) {
                    break;
                }
            } else if hides(layer, rel) {
                break;
            }
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use strata_formats::estargz::{Jtoc, TocEntry};
    use strata_formats::prefetch::resolve;

    use super::*;

    fn entry(name: &str, kind: EntryType, link: &str) -> TocEntry {
        TocEntry {
            name: name.into(),
            entry_type: kind,
            link_name: link.into(),
            mode: 0o755,
            ..TocEntry::default()
        }
    }

    fn index(entries: Vec<TocEntry>) -> TocIndex {
        TocIndex::build(
            &Jtoc {
                version: 1,
                entries,
            },
            1 << 20,
        )
        .unwrap()
    }

    #[test]
    fn paths_resolve_through_symlinks_across_layers_and_whiteouts_hide() {
        let base = index(vec![
            entry("usr/", EntryType::Dir, ""),
            entry("usr/lib/", EntryType::Dir, ""),
            entry("usr/lib/libz.so.1.2", EntryType::Reg, ""),
            entry("usr/lib/libgone.so", EntryType::Reg, ""),
            entry("usr/lib/old/", EntryType::Dir, ""),
            entry("usr/lib/old/a.so", EntryType::Reg, ""),
            entry("lib", EntryType::Symlink, "usr/lib"),
        ]);
        let top = index(vec![
            entry("usr/", EntryType::Dir, ""),
            entry("usr/lib/", EntryType::Dir, ""),
            entry("usr/lib/libz.so.1", EntryType::Symlink, "libz.so.1.2"),
            entry("usr/lib/.wh.libgone.so", EntryType::Reg, ""),
            entry("usr/lib/old/", EntryType::Dir, ""),
            entry("usr/lib/old/.wh..wh..opq", EntryType::Reg, ""),
            entry("usr/lib/hard", EntryType::Hardlink, "usr/lib/libz.so.1"),
        ]);
        let stack = LayerStack::new(vec![&top, &base]);
        let r = resolve(&stack, "/", "/lib/libz.so.1").unwrap();
        assert_eq!(
            (r.path.as_str(), r.kind),
            ("/usr/lib/libz.so.1.2", FileKind::Regular)
        );
        assert_eq!(
            stack.locate(&r.path).map(|(layer, _)| layer),
            Some(1),
            "the file is in the base layer"
        );
        assert_eq!(stack.locate("/usr/lib/libgone.so"), None, "whited out");
        assert_eq!(
            stack.locate("/usr/lib/old/a.so"),
            None,
            "under an opaque directory"
        );
        assert!(
            stack.locate("/usr/lib/old").is_some(),
            "the opaque directory itself is there"
        );
        let mut names = stack.read_dir("/usr/lib");
        names.sort();
        assert_eq!(names, ["hard", "libz.so.1", "libz.so.1.2", "old"]);
    }
}
