//! Round-trip and robustness tests for the eStargz writer and reader: tar → eStargz →
//! every file's bytes and metadata back; the blob stays a valid tar.gz (or zstd stream);
//! hostile blobs are errors, never panics.

use std::collections::BTreeMap;
use std::io::Read;

use proptest::prelude::*;

use super::footer::{GZIP_FOOTER_SIZE, legacy_gzip_footer};
use super::*;

const CHUNK: u64 = 1000;

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_mtime(1_700_000_000);
    h.set_uid(1000);
    h.set_gid(1000);
    h.set_username("user").unwrap();
    h.set_groupname("group").unwrap();
    h
}

/// A layer with every kind of entry the converter must carry.
fn sample_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let dir = |b: &mut tar::Builder<Vec<u8>>, p: &str| {
        let mut h = header(tar::EntryType::Directory, 0, 0o755);
        b.append_data(&mut h, p, &b""[..]).unwrap();
    };
    let file = |b: &mut tar::Builder<Vec<u8>>, p: &str, data: &[u8], mode: u32| {
        let mut h = header(tar::EntryType::Regular, data.len() as u64, mode);
        b.append_data(&mut h, p, data).unwrap();
    };
    dir(&mut b, "a/");
    file(&mut b, "a/empty", b"", 0o644);
    file(&mut b, "a/small.txt", b"hello eStargz\n", 0o600);
    let big: Vec<u8> = (0..3500u32).map(|i| (i * 7 % 251) as u8).collect();
    file(&mut b, "a/big.bin", &big, 0o755);
    file(&mut b, "a/exact.bin", &big[..2000], 0o644);
    b.append_pax_extensions([
        ("SCHILY.xattr.user.tag", &b"v\x00\xff"[..]),
        ("SCHILY.xattr.security.capability", &b"cap"[..]),
    ])
    .unwrap();
    file(&mut b, "a/xattr", b"x", 0o644);
    let mut h = header(tar::EntryType::Symlink, 0, 0o777);
    b.append_link(&mut h, "a/sym", "small.txt").unwrap();
    let mut h = header(tar::EntryType::Link, 0, 0o600);
    b.append_link(&mut h, "a/hard", "a/small.txt").unwrap();
    file(&mut b, "a/.wh.gone", b"", 0);
    dir(&mut b, "opq/");
    file(&mut b, "opq/.wh..wh..opq", b"", 0);
    file(&mut b, "ünïcødé/файл.txt", "содержимое".as_bytes(), 0o644);
    let long = format!("{}/{}", "l".repeat(120), "n".repeat(130));
    file(&mut b, &long, b"long name", 0o644);
    let mut h = header(tar::EntryType::Char, 0, 0o666);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    b.append_data(&mut h, "dev/null", &b""[..]).unwrap();
    let mut h = header(tar::EntryType::Fifo, 0, 0o644);
    b.append_data(&mut h, "fifo", &b""[..]).unwrap();
    b.into_inner().unwrap()
}

/// What the source tar says, per path: (type, mode, uid, gid, mtime, link, dev, xattrs, data).
type Expected = BTreeMap<
    String,
    (
        u8,
        u32,
        u64,
        u64,
        u64,
        String,
        (u32, u32),
        BTreeMap<String, Vec<u8>>,
        Vec<u8>,
    ),
>;

fn expected(tar_bytes: &[u8]) -> Expected {
    let mut out = Expected::new();
    let mut ar = tar::Archive::new(tar_bytes);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = toc::clean_name(std::str::from_utf8(&e.path_bytes()).unwrap()).unwrap();
        let h = e.header().clone();
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8(l.into_owned()).unwrap())
            .unwrap_or_default();
        let mut xattrs = BTreeMap::new();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for ext in exts {
                let ext = ext.unwrap();
                if let Some(k) = ext.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(k.to_owned(), ext.value_bytes().to_vec());
                }
            }
        }
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let dev = (
            h.device_major().ok().flatten().unwrap_or(0),
            h.device_minor().ok().flatten().unwrap_or(0),
        );
        out.insert(
            path,
            (
                h.entry_type().as_byte(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.mtime().unwrap(),
                link,
                dev,
                xattrs,
                data,
            ),
        );
    }
    out
}

fn opts(compression: Compression) -> WriteOptions {
    WriteOptions {
        chunk_size: CHUNK,
        compression,
        level: Some(1),
        prioritized_files: Vec::new(),
        threads: 1,
    }
}

fn convert_bytes(tar_bytes: &[u8], o: &WriteOptions) -> (Vec<u8>, WriteReport) {
    let mut blob = Vec::new();
    let report = convert(tar_bytes, &mut blob, o).unwrap();
    (blob, report)
}

/// Checks every source entry against the reader, and the blob against the report.
fn check_round_trip(tar_bytes: &[u8], blob: &[u8], report: &WriteReport) {
    assert_eq!(report.blob_size, blob.len() as u64);
    assert_eq!(report.blob_digest, Digest::of(blob));
    let r = EstargzReader::open(blob.to_vec(), Some(&report.toc_digest)).unwrap();
    r.verify_all().unwrap();
    for (path, (kind, mode, uid, gid, mtime, link, dev, xattrs, data)) in expected(tar_bytes) {
        let node = r
            .index()
            .get(&path)
            .unwrap_or_else(|| panic!("{path:?} missing"));
        let e = &node.entry;
        let want_type = match kind {
            b'0' => EntryType::Reg,
            b'1' => EntryType::Hardlink,
            b'2' => EntryType::Symlink,
            b'3' => EntryType::Char,
            b'5' => EntryType::Dir,
            b'6' => EntryType::Fifo,
            k => panic!("unexpected type {k}"),
        };
        assert_eq!(e.entry_type, want_type, "{path}");
        assert_eq!(
            (e.mode as u32, e.uid as u64, e.gid as u64),
            (mode, uid, gid),
            "{path}"
        );
        assert_eq!(e.mtime_unix().unwrap_or(0) as u64, mtime, "{path}");
        assert_eq!(e.xattrs, xattrs, "{path}");
        match want_type {
            EntryType::Symlink | EntryType::Hardlink => assert_eq!(e.link_name, link, "{path}"),
            EntryType::Char => assert_eq!((e.dev_major as u32, e.dev_minor as u32), dev),
            _ => {}
        }
        if want_type == EntryType::Reg {
            assert_eq!(r.read_file(&path).unwrap(), data, "{path}");
            assert_eq!(
                node.chunks.len() as u64,
                (data.len() as u64).div_ceil(CHUNK),
                "{path}"
            );
        }
        if want_type == EntryType::Hardlink {
            let target = toc::clean_name(&link).unwrap();
            assert_eq!(r.read_file(&path).unwrap(), r.read_file(&target).unwrap());
        }
    }
}

/// Decompresses the whole blob as a plain consumer would and lists its tar entries.
fn plain_entries(blob: &[u8], compression: Compression) -> (Vec<String>, Vec<u8>) {
    let mut stream = Vec::new();
    match compression {
        Compression::Gzip => flate2::read::MultiGzDecoder::new(blob)
            .read_to_end(&mut stream)
            .unwrap(),
        Compression::Zstd => zstd::stream::read::Decoder::new(blob)
            .unwrap()
            .read_to_end(&mut stream)
            .unwrap(),
    };
    let mut names = Vec::new();
    for e in tar::Archive::new(&stream[..]).entries().unwrap() {
        names.push(String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap());
    }
    (names, stream)
}

#[test]
fn gzip_round_trip_keeps_every_entry() {
    let src = sample_tar();
    let (blob, report) = convert_bytes(&src, &opts(Compression::Gzip));
    check_round_trip(&src, &blob, &report);
    let (names, stream) = plain_entries(&blob, Compression::Gzip);
    let source_names: Vec<String> = tar::Archive::new(&src[..])
        .entries()
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().path_bytes().into_owned()).unwrap())
        .collect();
    let mut want = vec![NO_PREFETCH_LANDMARK.to_owned()];
    want.extend(source_names);
    want.push(TOC_TAR_NAME.to_owned());
    assert_eq!(names, want);
    assert_eq!(report.diff_id, Digest::of(&stream));
    assert_eq!(report.uncompressed_size, stream.len() as u64);
    // The footer is the last 51 bytes and points at the TOC member.
    assert_eq!(
        &blob[blob.len() - GZIP_FOOTER_SIZE..],
        &footer::gzip_footer(report.toc_offset)[..]
    );
    let r = EstargzReader::open(blob.clone(), None).unwrap();
    assert!(r.index().has_no_prefetch_landmark());
    assert_eq!(
        r.read_file(NO_PREFETCH_LANDMARK).unwrap(),
        [LANDMARK_CONTENTS]
    );
    assert_eq!(r.toc().to_json(), {
        // The TOC member's JSON is exactly what we hash.
        let start = stream.len() - 1024 - r.toc().to_json().len().div_ceil(512) * 512;
        stream[start..start + r.toc().to_json().len()].to_vec()
    });
}

#[test]
fn zstd_round_trip_keeps_every_entry() {
    let src = sample_tar();
    let (blob, report) = convert_bytes(&src, &opts(Compression::Zstd));
    check_round_trip(&src, &blob, &report);
    let r = EstargzReader::open(blob.clone(), None).unwrap();
    assert_eq!(r.footer().kind, FooterKind::ZstdChunked);
    let (names, stream) = plain_entries(&blob, Compression::Zstd);
    assert_eq!(
        names.first().map(String::as_str),
        Some(NO_PREFETCH_LANDMARK)
    );
    assert!(!names.contains(&TOC_TAR_NAME.to_owned()));
    assert_eq!(report.diff_id, Digest::of(&stream));
    let ann = report.zstd_chunked_annotations();
    assert_eq!(
        ann[1].1,
        format!(
            "{}:{}:{}:1",
            report.toc_offset,
            r.footer().toc_compressed_len,
            r.footer().toc_uncompressed_len
        )
    );
    assert_eq!(
        report.annotations()[0],
        (TOC_DIGEST_ANNOTATION, r.toc_digest().to_string())
    );
}

#[test]
fn output_is_deterministic_and_accepts_compressed_input() {
    let src = sample_tar();
    let (a, ra) = convert_bytes(&src, &opts(Compression::Gzip));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &src).unwrap();
    let gz = gz.finish().unwrap();
    let mut b = Vec::new();
    let rb = convert(
        decompress_layer(&gz[..]).unwrap(),
        &mut b,
        &opts(Compression::Gzip),
    )
    .unwrap();
    assert_eq!(a, b);
    assert_eq!(ra, rb);
}

#[test]
fn prioritized_files_come_first_then_the_landmark() {
    let src = sample_tar();
    let mut o = opts(Compression::Gzip);
    o.prioritized_files = vec!["a/hard".into(), "ünïcødé/файл.txt".into(), "/nope".into()];
    let (blob, report) = convert_bytes(&src, &o);
    assert_eq!(report.missed_prioritized, ["/nope"]);
    check_round_trip(&src, &blob, &report);
    let r = EstargzReader::open(blob, None).unwrap();
    let names: Vec<&str> = r
        .toc()
        .entries
        .iter()
        .map(|e| e.name.as_str())
        .take(5)
        .collect();
    assert_eq!(
        names,
        [
            "a/",
            "a/small.txt",
            "a/hard",
            "ünïcødé/файл.txt",
            PREFETCH_LANDMARK
        ]
    );
    let landmark = r.index().prefetch_landmark_offset().unwrap();
    assert!(r.index().get("a/small.txt").unwrap().chunks[0].offset < landmark);
    assert!(r.index().get("a/big.bin").unwrap().chunks[0].offset > landmark);
    assert!(!r.index().has_no_prefetch_landmark());
    assert_eq!(
        report.prefetch_end,
        Some(landmark),
        "the prefetch-end hint is the landmark's offset"
    );
    let toc_offset = r.footer().toc_offset;
    assert_eq!(
        report.strata_annotations(),
        [
            (super::BLOB_SIZE_ANNOTATION, report.blob_size.to_string()),
            (super::TOC_OFFSET_ANNOTATION, toc_offset.to_string()),
            (super::PREFETCH_END_ANNOTATION, landmark.to_string()),
        ]
    );
    let (_, plain) = convert_bytes(&src, &opts(Compression::Gzip));
    assert!(
        plain.prefetch_end.is_none(),
        "no prefetch hint without prioritized files"
    );
    assert!(
        plain
            .strata_annotations()
            .iter()
            .all(|(k, _)| *k != super::PREFETCH_END_ANNOTATION)
    );
}

#[test]
fn corruption_and_wrong_toc_digest_are_detected() {
    let src = sample_tar();
    let (blob, report) = convert_bytes(&src, &opts(Compression::Gzip));
    let wrong = Digest::of(b"other");
    let err = EstargzReader::open(blob.clone(), Some(&wrong)).unwrap_err();
    assert!(
        matches!(err, EstargzError::TocDigestMismatch { .. }),
        "{err}"
    );
    assert_eq!(err.kind(), crate::ErrorKind::DataCorrupt);
    // Corrupt the member of small.txt: decompression or digest check must fail.
    let r = EstargzReader::open(blob.clone(), None).unwrap();
    let off = r.index().get("a/small.txt").unwrap().chunks[0].offset as usize;
    let mut bad = blob.clone();
    bad[off + 12] ^= 0x55;
    let r = EstargzReader::open(bad, Some(&report.toc_digest)).unwrap();
    let err = r.read_file("a/small.txt").unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::DataCorrupt, "{err}");
    assert!(r.verify_all().is_err());
    assert_eq!(
        r.read_file("nope").unwrap_err().kind(),
        crate::ErrorKind::NotFound
    );
    assert_eq!(
        r.read_file("a").unwrap_err().kind(),
        crate::ErrorKind::InvalidArgument
    );
}

#[test]
fn chunk_digest_mismatch_names_file_and_offset() {
    // A TOC that lies about a chunk digest: rebuild the blob with a patched TOC.
    let src = sample_tar();
    let (blob, _) = convert_bytes(&src, &opts(Compression::Zstd));
    let r = EstargzReader::open(blob.clone(), None).unwrap();
    let mut toc = r.toc().clone();
    let e = toc
        .entries
        .iter_mut()
        .find(|e| e.entry_type == EntryType::Chunk && e.name == "a/big.bin")
        .unwrap();
    e.chunk_digest = Digest::of(b"lie").to_string();
    let json = toc.to_json();
    let payload_end = r.index().payload_end() as usize;
    let mut patched = blob[..payload_end].to_vec();
    let compressed = zstd::bulk::compress(&json, 3).unwrap();
    patched.extend_from_slice(&footer::SKIPPABLE_FRAME_MAGIC);
    patched.extend_from_slice(&(compressed.len() as u32).to_le_bytes());
    let toc_off = patched.len() as u64;
    patched.extend_from_slice(&compressed);
    patched.extend_from_slice(&footer::zstd_footer(
        toc_off,
        compressed.len() as u64,
        json.len() as u64,
    ));
    let r = EstargzReader::open(patched, Some(&Digest::of(&json))).unwrap();
    match r.read_file("a/big.bin").unwrap_err() {
        EstargzError::ChunkDigestMismatch {
            name, chunk_offset, ..
        } => {
            assert_eq!((name.as_str(), chunk_offset), ("a/big.bin", CHUNK))
        }
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn legacy_footer_blobs_open() {
    let src = sample_tar();
    let (blob, report) = convert_bytes(&src, &opts(Compression::Gzip));
    let mut legacy = blob[..blob.len() - GZIP_FOOTER_SIZE].to_vec();
    legacy.extend_from_slice(&legacy_gzip_footer(report.toc_offset));
    let r = EstargzReader::open(legacy, Some(&report.toc_digest)).unwrap();
    assert_eq!(r.footer().kind, FooterKind::LegacyGzip);
    r.verify_all().unwrap();
}

#[test]
fn empty_layer_converts() {
    let src = tar::Builder::new(Vec::new()).into_inner().unwrap();
    for c in [Compression::Gzip, Compression::Zstd] {
        let (blob, report) = convert_bytes(&src, &opts(c));
        let r = EstargzReader::open(blob, Some(&report.toc_digest)).unwrap();
        assert_eq!(r.toc().entries.len(), 1);
    }
}

/// A small random tree: unique file paths under a few directories, with random contents.
fn arb_tree() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let name = "[a-zA-Z0-9é_.-]{1,12}".prop_filter("not . or ..", |s| {
        s != "." && s != ".." && !s.starts_with(".wh")
    });
    let path = (prop::sample::select(vec!["", "d1/", "d1/d2/", "ü/"]), name)
        .prop_map(|(d, n)| format!("{d}{n}"));
    prop::collection::btree_map(path, prop::collection::vec(any::<u8>(), 0..2500), 0..12)
        .prop_map(|m| m.into_iter().collect())
}

fn tree_tar(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (p, data) in files {
        let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644);
        b.append_data(&mut h, p, &data[..]).unwrap();
    }
    if let Some((first, _)) = files.first() {
        // '~' is outside the generated names, so these never collide.
        let mut h = header(tar::EntryType::Symlink, 0, 0o777);
        b.append_link(&mut h, "~sym", first).unwrap();
        let mut h = header(tar::EntryType::Link, 0, 0o644);
        b.append_link(&mut h, "~hard", first).unwrap();
    }
    b.into_inner().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_round_trip(files in arb_tree(), zstd in any::<bool>(), chunk in 1u64..3000) {
        let src = tree_tar(&files);
        let o = WriteOptions { chunk_size: chunk, compression: if zstd { Compression::Zstd } else { Compression::Gzip }, level: Some(1), prioritized_files: Vec::new(), threads: 1 };
        let (blob, report) = convert_bytes(&src, &o);
        let r = EstargzReader::open(blob, Some(&report.toc_digest)).unwrap();
        r.verify_all().unwrap();
        for (p, data) in &files {
            prop_assert_eq!(&r.read_file(p).unwrap(), data);
        }
        if let Some((first, data)) = files.first() {
            prop_assert_eq!(&r.read_file("~hard").unwrap(), data);
            prop_assert_eq!(&r.index().get("~sym").unwrap().entry.link_name, first);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(mut bytes in prop::collection::vec(any::<u8>(), 0..400), footer_kind in 0u8..3, off in any::<u16>()) {
        // Give the parser a real footer often enough to reach the TOC code paths.
        match footer_kind {
            0 => bytes.extend_from_slice(&footer::gzip_footer(u64::from(off) % (bytes.len() as u64 + 1))),
            1 => bytes.extend_from_slice(&footer::zstd_footer(u64::from(off), u64::from(off) / 3, u64::from(off))),
            _ => {}
        }
        if let Ok(r) = EstargzReader::open(bytes, None) {
            let _ = r.verify_all();
        }
    }

    #[test]
    fn mutated_blobs_never_panic(seed in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in any::<prop::sample::Index>(), zstd in any::<bool>(), truncate in any::<bool>()) {
        let src = sample_tar();
        let (mut blob, _) = convert_bytes(&src, &opts(if zstd { Compression::Zstd } else { Compression::Gzip }));
        for (i, v) in seed {
            let i = i.index(blob.len());
            blob[i] ^= v;
        }
        if truncate {
            blob.truncate(cut.index(blob.len()));
        }
        if let Ok(r) = EstargzReader::open(blob, None) {
            let _ = r.verify_all();
            for n in r.index().nodes() {
                let _ = r.read_file(&n.path);
            }
        }
    }
}

/// stargz's `--estargz-min-chunk-size` puts several small payloads in one member and
/// tells them apart by `innerOffset`; build such a blob by hand and read it.
#[test]
fn reads_payloads_sharing_a_member_via_inner_offset() {
    let mut stream = tar::Builder::new(Vec::new());
    for (name, data) in [("a", &b"first"[..]), ("b", &b"second!"[..])] {
        let mut h = header(tar::EntryType::Regular, data.len() as u64, 0o644);
        stream.append_data(&mut h, name, data).unwrap();
    }
    let mut stream = stream.into_inner().unwrap();
    stream.truncate(512 * 4); // drop the end marker: the TOC entry follows
    let mut blob = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut blob, &stream).unwrap();
    let mut blob = blob.finish().unwrap();
    let entry = |name: &str, data: &[u8], inner: i64| TocEntry {
        name: name.into(),
        entry_type: EntryType::Reg,
        size: data.len() as i64,
        offset: 0,
        inner_offset: inner,
        digest: Digest::of(data).to_string(),
        chunk_digest: Digest::of(data).to_string(),
        ..TocEntry::default()
    };
    let toc = Jtoc {
        version: 1,
        entries: vec![entry("a", b"first", 512), entry("b", b"second!", 1536)],
    };
    let json = toc.to_json();
    let toc_offset = blob.len() as u64;
    let mut tocgz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut h = tar::Header::new_ustar();
    h.set_size(json.len() as u64);
    let mut tw = tar::Builder::new(Vec::new());
    tw.append_data(&mut h, TOC_TAR_NAME, &json[..]).unwrap();
    std::io::Write::write_all(&mut tocgz, &tw.into_inner().unwrap()).unwrap();
    blob.extend_from_slice(&tocgz.finish().unwrap());
    blob.extend_from_slice(&footer::gzip_footer(toc_offset));
    let r = EstargzReader::open(blob, Some(&Digest::of(&json))).unwrap();
    assert_eq!(r.read_file("a").unwrap(), b"first");
    assert_eq!(r.read_file("b").unwrap(), b"second!");
    r.verify_all().unwrap();
}
