//! The entry point for the `fuse_request` fuzz target (`fuzz/`): one request as read from
//! `/dev/fuse`, decoded and answered by the same code the server's workers run, against a
//! small fixed layer. Not an API.
//!
//! What is fuzzed is our own decoding (this crate's server, not `fuser`): the header and
//! its length, every opcode's body, names, xattr and readdir requests. INIT's decoding
//! happens once per mount on the device itself and is not reached from here.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::AsFd;
use std::sync::{Arc, OnceLock};

use strata_formats::Digest;
use strata_formats::estargz::{EntryType, Jtoc, TocEntry, TocIndex};
use strata_formats::layer_index::FileChunk;

use crate::ops::Negotiated;
use crate::{ChunkSource, FileRef, LayerFs, LayerTree};

/// Serves zeros for any chunk (the digest is not the point here).
struct Zeros;

impl ChunkSource for Zeros {
    fn chunk(&self, _file: &FileRef<'_>, chunk: &FileChunk) -> io::Result<Arc<[u8]>> {
        let len = usize::try_from(chunk.size.min(1 << 20)).unwrap_or(0);
        Ok(vec![0u8; len].into())
    }
}

fn layer() -> &'static LayerFs {
    static FS: OnceLock<LayerFs> = OnceLock::new();
    FS.get_or_init(|| {
        let entry = |name: &str, entry_type, mode| TocEntry {
            name: name.into(),
            entry_type,
            mode,
            ..TocEntry::default()
        };
        let mut file = entry("d/file", EntryType::Reg, 0o644);
        file.size = 5000;
        file.chunk_size = 4096;
        file.digest = Digest::of(b"").to_string();
        file.chunk_digest = Digest::of(b"0").to_string();
        file.xattrs = BTreeMap::from([("user.k".to_owned(), b"value".to_vec())]);
        let mut chunk = entry("d/file", EntryType::Chunk, 0);
        chunk.chunk_offset = 4096;
        chunk.offset = 4096;
        chunk.chunk_digest = Digest::of(b"1").to_string();
        let mut link = entry("d/link", EntryType::Symlink, 0o777);
        link.link_name = "file".into();
        let mut hard = entry("d/hard", EntryType::Hardlink, 0o644);
        hard.link_name = "d/file".into();
        let toc = Jtoc {
            version: 1,
            entries: vec![
                entry("d/", EntryType::Dir, 0o755),
                file,
                chunk,
                link,
                hard,
                entry("d/.wh.gone", EntryType::Reg, 0),
                entry("o/", EntryType::Dir, 0o755),
                entry("o/.wh..wh..opq", EntryType::Reg, 0),
                entry("fifo", EntryType::Fifo, 0o644),
            ],
        };
        let index = TocIndex::build(&toc, 1 << 20).expect("the fixed TOC is valid");
        let index = index.layer_index().expect("the fixed TOC is valid");
        let tree = LayerTree::build("fuzz", index);
        LayerFs::new(tree, Arc::new(Zeros))
    })
}

/// Answers one raw request; the reply bytes, or `None` when none is due.
pub fn request(msg: &[u8]) -> Option<Vec<u8>> {
    // Passthrough's ioctls go to this pipe and fail there (ENOTTY).
    let (dev, _writer) = io::pipe().ok()?;
    crate::server::answer_request(layer(), msg, dev.as_fd(), Negotiated { passthrough: false })
        .map(|(_, _, bytes)| bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(opcode: u32, nodeid: u64, body: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&(40 + body.len() as u32).to_le_bytes());
        m.extend_from_slice(&opcode.to_le_bytes());
        m.extend_from_slice(&7u64.to_le_bytes());
        m.extend_from_slice(&nodeid.to_le_bytes());
        m.extend_from_slice(&[0u8; 16]);
        m.extend_from_slice(body);
        m
    }

    fn errno(reply: &[u8]) -> i32 {
        i32::from_le_bytes(reply[4..8].try_into().unwrap())
    }

    #[test]
    fn the_fixed_layer_answers_like_a_mount() {
        let lookup = request(&req(1, 1, b"d\0")).unwrap();
        let nodeid = |reply: &[u8]| u64::from_le_bytes(reply[16..24].try_into().unwrap());
        assert_eq!(errno(&lookup), 0);
        assert_ne!(nodeid(&lookup), 0);
        // A missing name is a cached negative entry (node 0), not an error.
        let missing = request(&req(1, 1, b"nope\0")).unwrap();
        assert_eq!((errno(&missing), nodeid(&missing)), (0, 0));
        let mut lying = req(3, 1, b"");
        lying[..4].copy_from_slice(&4096u32.to_le_bytes());
        assert_eq!(errno(&request(&lying).unwrap()), -libc::EINVAL);
        assert!(request(&[0u8; 10]).is_none());
    }
}
