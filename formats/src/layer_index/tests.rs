use super::raw::RawBlobFile;
use super::*;

fn dir(path: &str) -> Entry {
    Entry::new(path, EntryKind::Dir)
}

fn chunk(offset: u64, size: u64, encoding: Encoding) -> FileChunk {
    FileChunk {
        offset,
        size,
        extent: Extent {
            offset: 1000 + offset,
            len: size,
            encoding,
        },
        digest: Digest::of(&offset.to_le_bytes()),
    }
}

fn file(path: &str, chunks: Vec<FileChunk>) -> Entry {
    Entry {
        size: chunks.last().map_or(0, FileChunk::end),
        chunks: chunks.into(),
        ..Entry::new(path, EntryKind::Reg)
    }
}

fn refused(entries: Vec<Entry>, why: &str) {
    let err = LayerIndex::new(entries).unwrap_err().to_string();
    assert!(err.contains(why), "{err:?} does not say {why:?}");
}

#[test]
fn parents_targets_and_chunk_lookup() {
    let mut link = Entry::new("a/h", EntryKind::Hardlink);
    link.link_target = "a/f".into();
    let f = file(
        "a/f",
        vec![chunk(0, 4, Encoding::Raw), chunk(4, 3, Encoding::Raw)],
    );
    let index = LayerIndex::new(vec![dir(""), dir("a"), f, link]).unwrap();
    assert_eq!(
        (index.parent(1), index.parent(2), index.parent(3)),
        (0, 1, 1)
    );
    assert_eq!((index.target(3), index.target(2)), (2, 2));
    let chunks = &index.entries()[2].chunks;
    assert_eq!(chunk_at(chunks, 0).unwrap().offset, 0);
    assert_eq!(chunk_at(chunks, 3).unwrap().offset, 0);
    assert_eq!(chunk_at(chunks, 4).unwrap().offset, 4);
    assert_eq!(chunk_at(chunks, 6).unwrap().offset, 4);
    assert!(chunk_at(chunks, 7).is_none());
}

#[test]
fn malformed_indexes_are_refused() {
    refused(vec![], "root");
    refused(vec![dir("x")], "root");
    refused(vec![dir(""), dir("a/b")], "parent");
    refused(vec![dir(""), file("f", vec![]), dir("f/g")], "parent");
    refused(vec![dir(""), dir("a"), dir("a")], "twice");
    refused(vec![dir(""), dir("a/../b")], "normalised");
    refused(vec![dir(""), dir("/a")], "normalised");
    refused(vec![dir(""), dir("a\0b")], "NUL");
    refused(vec![dir(""), dir(&"x".repeat(256))], "255");
    let mut link = Entry::new("h", EntryKind::Hardlink);
    link.link_target = "a".into();
    refused(vec![dir(""), dir("a"), link.clone()], "directory");
    link.link_target = "missing".into();
    refused(vec![dir(""), link], "missing");
    refused(
        vec![
            dir(""),
            file(
                "f",
                vec![chunk(0, 4, Encoding::Raw), chunk(5, 1, Encoding::Raw)],
            ),
        ],
        "contiguous",
    );
    let mut short = file("f", vec![chunk(0, 4, Encoding::Raw)]);
    short.size = 5;
    refused(vec![dir(""), short], "cover");
    let mut raw = chunk(0, 4, Encoding::Raw);
    raw.extent.len = 3;
    refused(vec![dir(""), file("f", vec![raw])], "raw extent");
    refused(
        vec![
            dir(""),
            file(
                "f",
                vec![chunk(
                    0,
                    4,
                    Encoding::Compressed {
                        inner: MAX_CHUNK_SIZE + 1,
                    },
                )],
            ),
        ],
        "inner offset",
    );
    let mut with_chunks = dir("d");
    with_chunks.chunks = vec![chunk(0, 1, Encoding::Raw)].into();
    refused(vec![dir(""), with_chunks], "only regular files");
}

#[test]
fn a_raw_blob_is_one_file_in_fixed_chunks() {
    let digests: Vec<Digest> = (0..3u8).map(|i| Digest::of(&[i])).collect();
    let index = RawBlobFile {
        path: "models/m/weights.bin".into(),
        size: 10,
        chunk_size: 4,
        digests: digests.clone(),
        mode: 0o100_644,
        mtime: 7,
    }
    .layer_index()
    .unwrap();
    let paths: Vec<&str> = index.entries().iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["", "models", "models/m", "models/m/weights.bin"]);
    let f = &index.entries()[3];
    assert_eq!(
        (f.kind, f.size, f.mode, f.mtime),
        (EntryKind::Reg, 10, 0o644, 7)
    );
    let cut: Vec<(u64, u64, u64, Encoding)> = f
        .chunks
        .iter()
        .map(|c| (c.offset, c.size, c.extent.offset, c.extent.encoding))
        .collect();
    assert_eq!(
        cut,
        [
            (0, 4, 0, Encoding::Raw),
            (4, 4, 4, Encoding::Raw),
            (8, 2, 8, Encoding::Raw)
        ]
    );
    assert_eq!(
        f.chunks
            .iter()
            .map(|c| c.digest.clone())
            .collect::<Vec<_>>(),
        digests
    );
}

#[test]
fn a_raw_blob_needs_one_digest_per_chunk() {
    let raw = |size, digests: usize, path: &str| RawBlobFile {
        path: path.into(),
        size,
        chunk_size: 4,
        digests: vec![Digest::of(b""); digests],
        mode: 0o644,
        mtime: 0,
    };
    assert!(raw(8, 2, "f").layer_index().is_ok());
    assert!(raw(0, 0, "f").layer_index().is_ok());
    assert!(raw(9, 2, "f").layer_index().is_err());
    assert!(raw(8, 3, "f").layer_index().is_err());
    assert!(raw(8, 2, "/f").layer_index().is_err());
    assert!(raw(8, 2, "a/../f").layer_index().is_err());
}
