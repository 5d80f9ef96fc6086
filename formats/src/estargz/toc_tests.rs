//! Unit tests for TOC parsing, serialization and index validation.

use super::*;

const D1: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000001";
const D2: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000002";

fn reg(name: &str, size: i64, offset: i64) -> TocEntry {
    TocEntry {
        name: name.into(),
        entry_type: EntryType::Reg,
        size,
        offset,
        chunk_digest: if size > 0 { D1.into() } else { String::new() },
        ..TocEntry::default()
    }
}

fn chunk(name: &str, offset: i64, chunk_offset: i64, chunk_size: i64) -> TocEntry {
    TocEntry {
        name: name.into(),
        entry_type: EntryType::Chunk,
        offset,
        chunk_offset,
        chunk_size,
        chunk_digest: D2.into(),
        ..TocEntry::default()
    }
}

fn toc(entries: Vec<TocEntry>) -> Jtoc {
    Jtoc {
        version: 1,
        entries,
    }
}

#[test]
fn serializes_like_go_with_omitempty() {
    let mut e = reg("a/b", 5, 100);
    e.modtime = "2023-11-14T22:13:20Z".into();
    e.mode = 0o644;
    e.xattrs.insert("user.k".into(), b"v\x00".to_vec());
    e.digest = D2.into();
    let json = String::from_utf8(toc(vec![e]).to_json()).unwrap();
    let expected = format!(
        "{{\n\t\"version\": 1,\n\t\"entries\": [\n\t\t{{\n\t\t\t\"name\": \"a/b\",\n\t\t\t\"type\": \"reg\",\n\t\t\t\"size\": 5,\n\t\t\t\"modtime\": \"2023-11-14T22:13:20Z\",\n\t\t\t\"mode\": 420,\n\t\t\t\"offset\": 100,\n\t\t\t\"xattrs\": {{\n\t\t\t\t\"user.k\": \"dgA=\"\n\t\t\t}},\n\t\t\t\"digest\": \"{D2}\",\n\t\t\t\"chunkDigest\": \"{D1}\"\n\t\t}}\n\t]\n}}"
    );
    assert_eq!(json, expected);
    let back = Jtoc::parse(json.as_bytes()).unwrap();
    assert_eq!(back.entries[0].xattrs["user.k"], b"v\x00");
    assert_eq!(back.entries[0].mtime_unix(), Some(1_700_000_000));
}

#[test]
fn parse_ignores_unknown_fields_and_rejects_garbage() {
    let t = Jtoc::parse(
        br#"{"version":1,"entries":[{"name":"x","type":"dir","NumLink":3}],"extra":1}"#,
    )
    .unwrap();
    assert_eq!(t.entries[0].entry_type, EntryType::Dir);
    assert!(
        Jtoc::parse(br#"{"version":1,"entries":null}"#)
            .unwrap()
            .entries
            .is_empty()
    );
    for bad in [
        &b"{"[..],
        br#"{"version":1,"entries":[{"name":"x","type":"socket"}]}"#,
        br#"{"version":1,"entries":[{"name":"x","type":"reg","xattrs":{"a":"!!"}}]}"#,
    ] {
        let err = Jtoc::parse(bad).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidArgument);
    }
}

#[test]
fn builds_index_with_chunks_implicit_dirs_and_hardlinks() {
    let mut link = TocEntry {
        name: "./x/../l".into(),
        entry_type: EntryType::Hardlink,
        ..TocEntry::default()
    };
    link.link_name = "/d/f".into();
    let mut f = reg("d/f", 10, 50);
    f.chunk_size = 4;
    let idx = TocIndex::build(
        &toc(vec![f, chunk("d/f", 80, 4, 0), link, reg("e", 0, 0)]),
        200,
    )
    .unwrap();
    let n = idx.get("d/f").unwrap();
    assert_eq!(n.chunks.len(), 2);
    assert_eq!((n.chunks[0].chunk_size, n.chunks[0].next_offset), (4, 80));
    assert_eq!(
        (
            n.chunks[1].chunk_offset,
            n.chunks[1].chunk_size,
            n.chunks[1].next_offset
        ),
        (4, 6, 200)
    );
    assert_eq!(idx.get("d").unwrap().entry_type(), EntryType::Dir);
    assert_eq!(n.chunk_for(0).unwrap().chunk_offset, 0);
    assert_eq!(n.chunk_for(3).unwrap().chunk_offset, 0);
    assert_eq!(n.chunk_for(4).unwrap().chunk_offset, 4);
    assert_eq!(n.chunk_for(9).unwrap().chunk_offset, 4);
    assert!(n.chunk_for(10).is_none());
    assert_eq!(idx.resolve("l").unwrap().path, "d/f");
    assert_eq!(idx.get("l").unwrap().path, "l");
    assert_eq!(
        idx.nodes()[0].children.keys().collect::<Vec<_>>(),
        ["d", "e", "l"]
    );
}

#[test]
fn rejects_inconsistent_tocs() {
    let mut bad_version = toc(vec![]);
    bad_version.version = 2;
    let mut f = reg("f", 10, 50);
    f.chunk_size = 4;
    let mut gap = f.clone();
    gap.chunk_size = 3;
    let dangling = TocEntry {
        name: "l".into(),
        entry_type: EntryType::Hardlink,
        link_name: "nope".into(),
        ..TocEntry::default()
    };
    let cycle = TocEntry {
        name: "l".into(),
        entry_type: EntryType::Hardlink,
        link_name: "l".into(),
        ..TocEntry::default()
    };
    let mut neg = reg("f", 1, 1);
    neg.uid = -1;
    let mut no_digest = reg("f", 1, 1);
    no_digest.chunk_digest.clear();
    let cases = vec![
        bad_version,
        toc(vec![reg("f", 10, 500)]),         // offset past payload end
        toc(vec![f.clone()]),                 // chunk list shorter than size
        toc(vec![gap, chunk("f", 80, 4, 0)]), // gap between chunks
        toc(vec![f.clone(), chunk("f", 80, 4, 7)]), // sum exceeds size
        toc(vec![f, chunk("g", 80, 4, 0)]),   // chunk of another file
        toc(vec![chunk("f", 80, 0, 0)]),      // orphan chunk
        toc(vec![reg("a", 10, 50), reg("b", 10, 50)]), // overlap in one member
        toc(vec![dangling]),
        toc(vec![cycle]),
        toc(vec![neg]),
        toc(vec![no_digest]),
        toc(vec![reg("f", 0, 0), reg("f/g", 0, 0)]), // file used as a dir
        toc(vec![TocEntry {
            name: "s".into(),
            entry_type: EntryType::Symlink,
            ..TocEntry::default()
        }]),
        toc(vec![reg("/", 0, 0)]), // root not a dir
        toc(vec![reg("a\0b", 0, 0)]),
    ];
    for (i, t) in cases.iter().enumerate() {
        let err = TocIndex::build(t, 100).expect_err(&format!("case {i} accepted"));
        assert_eq!(
            err.kind(),
            crate::ErrorKind::InvalidArgument,
            "case {i}: {err}"
        );
    }
}

#[test]
fn shared_member_with_inner_offsets_is_fine() {
    let mut b = reg("b", 10, 50);
    b.inner_offset = 10;
    let idx = TocIndex::build(&toc(vec![reg("a", 10, 50), b]), 100).unwrap();
    assert_eq!(idx.get("b").unwrap().chunks[0].inner_offset, 10);
}

#[test]
fn clean_names() {
    assert_eq!(clean_name("./a//b/./c/").unwrap(), "a/b/c");
    assert_eq!(clean_name("../../etc/passwd").unwrap(), "etc/passwd");
    assert_eq!(clean_name("/").unwrap(), "");
    assert!(clean_name(&"x".repeat(256)).is_err());
}
