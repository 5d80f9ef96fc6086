//! Interop with stargz-snapshotter: blobs written by `ctr-remote image convert` 0.12
//! (`--estargz` and `--zstdchunked`, `--estargz-chunk-size 100000`) from `testdata/src.tar.gz`
//! are read, verified and compared with what our writer makes of the same source.

use std::io::Read;

use super::*;

const GO_GZIP: &[u8] = include_bytes!("testdata/go-esgz.tar.gz");
const GO_ZSTD: &[u8] = include_bytes!("testdata/go-zstdchunked.tar.zst");
const SOURCE_GZ: &[u8] = include_bytes!("testdata/src.tar.gz");
// The layer annotations ctr-remote wrote.
const GO_GZIP_TOC: &str = "sha256:340aaa4335f97049042036bc2e7bd6efb7d9420b97f9b9b802084473153bf743";
const GO_ZSTD_TOC: &str = "sha256:195f6a95072d0e73210f49a31ac46bf47d7f5ebd723adea3e84884458b03b5be";

fn source() -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(SOURCE_GZ)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Every regular file of the source, path → bytes.
fn source_files() -> Vec<(String, Vec<u8>)> {
    let src = source();
    let mut out = Vec::new();
    for e in tar::Archive::new(&src[..]).entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type() == tar::EntryType::Regular {
            let p = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let mut d = Vec::new();
            e.read_to_end(&mut d).unwrap();
            out.push((p, d));
        }
    }
    out
}

fn check_go_blob(blob: &[u8], toc: &str, kind: FooterKind) {
    let r = EstargzReader::open(blob.to_vec(), Some(&toc.parse().unwrap())).unwrap();
    assert_eq!(r.footer().kind, kind);
    r.verify_all().unwrap();
    for (p, data) in source_files() {
        assert_eq!(r.read_file(&p).unwrap(), data, "{p}");
    }
    assert_eq!(r.read_file("a/hard").unwrap(), b"hello eStargz\n");
    assert!(r.index().get("a/big.bin").unwrap().chunks.len() == 3);
    assert_eq!(
        r.index().get("a/xattr").unwrap().entry.xattrs["user.tag"],
        b"v<&>"
    );
    // Re-marshalling the parsed TOC reproduces Go's bytes exactly.
    assert_eq!(Digest::of(&r.toc().to_json()), *r.toc_digest());
}

#[test]
fn reads_gzip_estargz_written_by_stargz_snapshotter() {
    check_go_blob(GO_GZIP, GO_GZIP_TOC, FooterKind::Gzip);
}

#[test]
fn reads_zstdchunked_written_by_stargz_snapshotter() {
    check_go_blob(GO_ZSTD, GO_ZSTD_TOC, FooterKind::ZstdChunked);
    // ctr-remote's manifest-position annotation was "1884:963:3806:1".
    let f = *EstargzReader::open(GO_ZSTD.to_vec(), None)
        .unwrap()
        .footer();
    assert_eq!(
        (f.toc_offset, f.toc_compressed_len, f.toc_uncompressed_len),
        (1884, 963, 3806)
    );
}

#[test]
fn our_toc_matches_stargz_except_offsets() {
    for (go, compression) in [(GO_GZIP, Compression::Gzip), (GO_ZSTD, Compression::Zstd)] {
        let theirs = EstargzReader::open(go.to_vec(), None).unwrap();
        let o = WriteOptions {
            chunk_size: 100_000,
            compression,
            level: None,
            prioritized_files: Vec::new(),
            threads: 1,
        };
        let mut blob = Vec::new();
        let report = convert(&source()[..], &mut blob, &o).unwrap();
        let ours = EstargzReader::open(blob, Some(&report.toc_digest)).unwrap();
        // Offsets depend on the deflate/zstd implementation. Owner names depend on how
        // stargz split the layer for parallel compression: each part restarts the
        // "only when changed" rule, so Go repeats names at part starts.
        let strip = |t: &Jtoc| {
            let mut t = t.clone();
            for e in &mut t.entries {
                e.offset = 0;
                e.user_name.clear();
                e.group_name.clear();
            }
            t
        };
        assert_eq!(strip(ours.toc()), strip(theirs.toc()));
    }
}
