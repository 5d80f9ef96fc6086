use std::io::{Read, Write};

use super::*;
use crate::Digest;

fn header(kind: tar::EntryType, size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(mode);
    h.set_uid(1000);
    h.set_gid(2000);
    h.set_mtime(1_700_000_000);
    h
}

/// A tar with one entry of every kind, PAX and GNU extensions included.
fn every_kind() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(
        &mut header(tar::EntryType::Directory, 0, 0o755),
        "dir/",
        &b""[..],
    )
    .unwrap();
    b.append_pax_extensions([
        ("SCHILY.xattr.user.k", &b"v"[..]),
        ("mtime", &b"1700000000.123456789"[..]),
    ])
    .unwrap();
    b.append_data(
        &mut header(tar::EntryType::Regular, 5, 0o4755),
        "./dir/file",
        &b"hello"[..],
    )
    .unwrap();
    let long = format!("dir/{}", "n".repeat(200));
    b.append_data(
        &mut header(tar::EntryType::Regular, 1, 0o644),
        &long,
        &b"x"[..],
    )
    .unwrap();
    let mut h = header(tar::EntryType::Symlink, 0, 0o777);
    b.append_link(&mut h, "dir/abs", "/etc/passwd").unwrap();
    let mut h = header(tar::EntryType::Link, 0, 0o644);
    b.append_link(&mut h, "dir/hard", "/../dir/file").unwrap();
    let mut h = header(tar::EntryType::Char, 0, 0o600);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    b.append_data(&mut h, "dir/null", &b""[..]).unwrap();
    let mut h = header(tar::EntryType::Block, 0, 0o600);
    h.set_device_major(8).unwrap();
    h.set_device_minor(1).unwrap();
    b.append_data(&mut h, "dir/sda1", &b""[..]).unwrap();
    b.append_data(
        &mut header(tar::EntryType::Fifo, 0, 0o644),
        "dir/fifo",
        &b""[..],
    )
    .unwrap();
    b.append_data(
        &mut header(tar::EntryType::Regular, 0, 0o644),
        "dir/.wh.gone",
        &b""[..],
    )
    .unwrap();
    b.append_data(
        &mut header(tar::EntryType::Regular, 0, 0o644),
        "dir/.wh..wh..opq",
        &b""[..],
    )
    .unwrap();
    b.into_inner().unwrap()
}

fn entries(tar: &[u8]) -> Vec<(Entry, Vec<u8>)> {
    let mut layer = TarLayer::new(tar, Limits::default());
    let mut out = Vec::new();
    while let Some(e) = layer.next_entry().unwrap() {
        let mut data = vec![0u8; layer.remaining() as usize];
        layer.read_data_exact(&mut data).unwrap();
        out.push((e, data));
    }
    layer.finish().unwrap();
    out
}

#[test]
fn every_entry_kind_is_classified() {
    let got = entries(&every_kind());
    let kinds: Vec<(String, EntryKind)> = got
        .iter()
        .map(|(e, _)| (e.display_path(), e.kind.clone()))
        .collect();
    let long = format!("dir/{}", "n".repeat(200));
    assert_eq!(
        kinds,
        vec![
            ("dir".into(), EntryKind::Dir),
            ("dir/file".into(), EntryKind::File),
            (long, EntryKind::File),
            (
                "dir/abs".into(),
                EntryKind::Symlink {
                    target: "/etc/passwd".into()
                }
            ),
            (
                "dir/hard".into(),
                EntryKind::Hardlink {
                    target: "dir/file".into()
                }
            ),
            (
                "dir/null".into(),
                EntryKind::CharDevice { major: 1, minor: 3 }
            ),
            (
                "dir/sda1".into(),
                EntryKind::BlockDevice { major: 8, minor: 1 }
            ),
            ("dir/fifo".into(), EntryKind::Fifo),
            (
                "dir/.wh.gone".into(),
                EntryKind::Whiteout {
                    target: "dir/gone".into()
                }
            ),
            (
                "dir/.wh..wh..opq".into(),
                EntryKind::OpaqueWhiteout { dir: "dir".into() }
            ),
        ]
    );
    let (file, data) = &got[1];
    assert_eq!(data, b"hello");
    assert_eq!(
        (file.mode, file.uid, file.gid, file.size),
        (0o4755, 1000, 2000, 5)
    );
    assert_eq!(
        file.mtime,
        Timestamp {
            secs: 1_700_000_000,
            nanos: 123_456_789
        }
    );
    assert_eq!(file.xattrs, vec![("user.k".into(), b"v".to_vec())]);
    assert_eq!(
        got[0].0.mtime,
        Timestamp {
            secs: 1_700_000_000,
            nanos: 0
        }
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn diff_id_covers_the_uncompressed_stream_and_its_trailer() {
    let mut tar = every_kind();
    tar.extend_from_slice(&[0u8; 4096]);
    tar.extend_from_slice(b"trailing junk");
    for blob in [
        tar.clone(),
        gzip(&tar),
        zstd::encode_all(&tar[..], 3).unwrap(),
    ] {
        for threaded in [false, true] {
            let (digest, size, count) = if threaded {
                std::thread::scope(|s| {
                    let (r, handle) = read_ahead(s, &blob[..], None);
                    let mut layer = TarLayer::new(r, Limits::default());
                    let mut count = 0;
                    while layer.next_entry().unwrap().is_some() {
                        count += 1;
                    }
                    drop(layer.finish().unwrap());
                    let (d, n) = handle.join().unwrap().unwrap();
                    (d, n, count)
                })
            } else {
                let mut layer = TarLayer::new(
                    DiffIdReader::new(decompress(&blob[..]).unwrap(), None),
                    Limits::default(),
                );
                let mut count = 0;
                while layer.next_entry().unwrap().is_some() {
                    count += 1;
                }
                let (d, n) = layer.finish().unwrap().finish().unwrap();
                (d, n, count)
            };
            assert_eq!(count, 10);
            assert_eq!((digest.clone(), size), (Digest::of(&tar), tar.len() as u64));
        }
    }
}

#[test]
fn size_limit_stops_a_bomb() {
    let mut b = tar::Builder::new(Vec::new());
    let big = vec![0u8; 4 << 20];
    b.append_data(
        &mut header(tar::EntryType::Regular, big.len() as u64, 0o644),
        "zeros",
        &big[..],
    )
    .unwrap();
    let gz = gzip(&b.into_inner().unwrap());
    assert!(gz.len() < 64 << 10);
    let run = |threaded: bool| -> TarLayerError {
        std::thread::scope(|s| {
            let r: Box<dyn Read> = if threaded {
                Box::new(read_ahead(s, &gz[..], Some(1 << 20)).0)
            } else {
                Box::new(DiffIdReader::new(
                    decompress(&gz[..]).unwrap(),
                    Some(1 << 20),
                ))
            };
            let mut layer = TarLayer::new(r, Limits::default());
            layer.next_entry().unwrap().unwrap();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                if let Err(e) = layer.read_data(&mut buf) {
                    return e;
                }
            }
        })
    };
    for threaded in [false, true] {
        let e = run(threaded);
        assert!(
            matches!(e, TarLayerError::TooLarge { limit: 1048576, .. }),
            "{e}"
        );
        assert_eq!(e.position(), &Position::Entry("zeros".into()));
    }
}

#[test]
fn truncation_and_corruption_name_the_entry() {
    let tar = every_kind();
    // Cut inside dir/file's payload: dir header, PAX header and data, file header, then data.
    let mut layer = TarLayer::new(&tar[..2048 + 2], Limits::default());
    layer.next_entry().unwrap();
    layer.next_entry().unwrap();
    let e = layer.next_entry().unwrap_err();
    assert!(matches!(e, TarLayerError::Truncated { .. }), "{e}");
    assert!(e.to_string().contains("dir/file"), "{e}");

    let mut corrupt = tar.clone();
    corrupt[512 + 10] ^= 0x40; // inside the PAX header of dir/file
    let mut layer = TarLayer::new(&corrupt[..], Limits::default());
    layer.next_entry().unwrap();
    let e = layer.next_entry().unwrap_err();
    assert!(e.to_string().contains("after \"dir/\""), "{e}");
    assert!(e.to_string().contains("checksum"), "{e}");

    let mut gz = gzip(&tar);
    let mid = gz.len() / 2;
    gz[mid] ^= 0xff;
    gz[mid + 1] ^= 0xff;
    let mut layer = TarLayer::new(
        DiffIdReader::new(decompress(&gz[..]).unwrap(), None),
        Limits::default(),
    );
    let mut err = None;
    for _ in 0..20 {
        match layer.next_entry() {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    if let Some(e) = err {
        assert!(e.to_string().contains("entry"), "{e}");
    } else {
        // Corruption the inflater did not notice is caught at the end by the gzip CRC.
        assert!(layer.finish().is_err());
    }
}

#[test]
fn hostile_names_are_cleaned_or_refused() {
    let raw = |name: &[u8], kind: tar::EntryType, link: &[u8]| {
        let mut h = header(kind, 0, 0o644);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        h.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&h, &b""[..]).unwrap();
        b.into_inner().unwrap()
    };
    let one = |tar: Vec<u8>| TarLayer::new(&tar[..], Limits::default()).next_entry();
    let e = one(raw(b"../../x", tar::EntryType::Regular, b""))
        .unwrap()
        .unwrap();
    assert_eq!(e.path, std::path::Path::new("x"));
    let e = one(raw(b"/etc/shadow", tar::EntryType::Regular, b""))
        .unwrap()
        .unwrap();
    assert_eq!(e.path, std::path::Path::new("etc/shadow"));
    let e = one(raw(b"h", tar::EntryType::Link, b"../../host/secret"))
        .unwrap()
        .unwrap();
    assert_eq!(
        e.kind,
        EntryKind::Hardlink {
            target: "host/secret".into()
        }
    );
    assert!(one(raw(b"h", tar::EntryType::Link, b"../..")).is_err());
    assert!(one(raw(b"a/.wh..", tar::EntryType::Regular, b"")).is_err());

    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("SCHILY.xattr.user.big", &vec![b'x'; 70_000][..])])
        .unwrap();
    b.append_data(
        &mut header(tar::EntryType::Regular, 0, 0o644),
        "f",
        &b""[..],
    )
    .unwrap();
    let e = one(b.into_inner().unwrap()).unwrap_err();
    assert!(e.to_string().contains("user.big"), "{e}");

    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::new(b'L'), 2 << 20, 0);
    h.set_cksum();
    b.append(&h, &vec![b'a'; 2 << 20][..]).unwrap();
    let e = one(b.into_inner().unwrap()).unwrap_err();
    assert!(e.to_string().contains("exceeds the limit"), "{e}");
}

fn octal(field: &mut [u8], value: u64) {
    let text = format!("{value:0width$o}", width = field.len() - 1);
    field[..text.len()].copy_from_slice(text.as_bytes());
}

/// An old-GNU sparse entry (`S`) whose map needs one extension block.
fn gnu_sparse(real_size: u64, segments: &[(u64, &[u8])]) -> Vec<u8> {
    let stored: u64 = segments.iter().map(|s| s.1.len() as u64).sum();
    let mut h = header(tar::EntryType::GNUSparse, stored, 0o644);
    h.set_path("sparse").unwrap();
    let gnu = h.as_gnu_mut().unwrap();
    octal(&mut gnu.realsize, real_size);
    for (slot, (offset, data)) in gnu.sparse.iter_mut().zip(segments) {
        octal(&mut slot.offset, *offset);
        octal(&mut slot.numbytes, data.len() as u64);
    }
    let mut ext = tar::GnuExtSparseHeader::new();
    for (slot, (offset, data)) in ext.sparse.iter_mut().zip(segments.iter().skip(4)) {
        octal(&mut slot.offset, *offset);
        octal(&mut slot.numbytes, data.len() as u64);
    }
    gnu.isextended[0] = u8::from(segments.len() > 4);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    if segments.len() > 4 {
        out.extend_from_slice(ext.as_bytes());
    }
    for (_, data) in segments {
        out.extend_from_slice(data);
    }
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

#[test]
fn sparse_entries_keep_their_holes() {
    let segments: Vec<(u64, &[u8])> = (0..6u64).map(|i| (i * (1 << 30), &b"data"[..])).collect();
    let tar = gnu_sparse(10 << 30, &segments);
    let got = entries(&tar);
    let (e, data) = &got[0];
    assert_eq!(e.size, 10 << 30);
    assert_eq!(data, &b"data".repeat(6));
    let map = e.sparse.as_ref().unwrap();
    assert_eq!(map.len(), 6);
    assert_eq!(
        map[5],
        SparseSegment {
            offset: 5 << 30,
            length: 4
        }
    );

    // PAX 1.0: the map is at the start of the payload.
    let mut b = tar::Builder::new(Vec::new());
    let real = (10u64 << 30).to_string();
    b.append_pax_extensions([
        ("GNU.sparse.major", &b"1"[..]),
        ("GNU.sparse.minor", &b"0"[..]),
        ("GNU.sparse.name", &b"big"[..]),
        ("GNU.sparse.realsize", real.as_bytes()),
    ])
    .unwrap();
    let mut payload = b"2\n0\n3\n1073741824\n3\n".to_vec();
    payload.resize(512, 0);
    payload.extend_from_slice(b"abcdef");
    b.append_data(
        &mut header(tar::EntryType::Regular, payload.len() as u64, 0o600),
        "GNUSparseFile.0/big",
        &payload[..],
    )
    .unwrap();
    let got = entries(&b.into_inner().unwrap());
    let (e, data) = &got[0];
    assert_eq!(
        (e.display_path().as_str(), e.size, data.as_slice()),
        ("big", 10 << 30, &b"abcdef"[..])
    );
    assert_eq!(
        e.sparse.as_ref().unwrap()[1],
        SparseSegment {
            offset: 1 << 30,
            length: 3
        }
    );

    // A map that does not add up to the stored bytes is refused.
    let mut bad = gnu_sparse(100, &[(0, b"ab")]);
    octal(&mut bad[124..136], 3);
    let h = tar::Header::from_byte_slice(&bad[..512]).clone();
    let mut h = h;
    h.set_cksum();
    bad[..512].copy_from_slice(h.as_bytes());
    assert!(
        TarLayer::new(&bad[..], Limits::default())
            .next_entry()
            .is_err()
    );
}
