use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsFd;

use strata_formats::estargz::{EntryType, Jtoc, TocEntry, TocIndex};
use strata_formats::layer_index::FileChunk;

use super::*;
use crate::abi::{InHeader, ReadIn};

struct NoData;

impl ChunkSource for NoData {
    fn chunk(&self, _file: &FileRef<'_>, _chunk: &FileChunk) -> io::Result<Arc<[u8]>> {
        Err(io::Error::other("no data in this test"))
    }
}

fn fs() -> LayerFs {
    let mut entries = vec![TocEntry {
        name: "d/".into(),
        entry_type: EntryType::Dir,
        mode: 0o755,
        ..Default::default()
    }];
    for i in 0..50 {
        entries.push(TocEntry {
            name: format!("d/file-{i:02}"),
            entry_type: EntryType::Reg,
            mode: 0o644,
            ..Default::default()
        });
    }
    let mut x = TocEntry {
        name: "x".into(),
        entry_type: EntryType::Reg,
        mode: 0o644,
        ..Default::default()
    };
    x.xattrs = BTreeMap::from([("user.k".to_owned(), b"value".to_vec())]);
    entries.push(x);
    let index = TocIndex::build(
        &Jtoc {
            version: 1,
            entries,
        },
        0,
    )
    .unwrap();
    LayerFs::new(
        LayerTree::build("unit", index.layer_index().unwrap()),
        Arc::new(NoData),
    )
}

fn call(fs: &LayerFs, opcode: u32, nodeid: u64, body: &[u8]) -> Result<Vec<u8>, i32> {
    let dev = File::open("/dev/null").unwrap();
    let h = InHeader {
        opcode,
        nodeid,
        unique: 9,
        ..InHeader::default()
    };
    let reply = fs
        .handle(&h, body, dev.as_fd(), Negotiated::default())?
        .expect("a reply");
    Ok(reply.finish(9)[size_of::<abi::OutHeader>()..].to_vec())
}

fn lookup(fs: &LayerFs, parent: u64, name: &str) -> Result<EntryOut, i32> {
    let mut body = name.as_bytes().to_vec();
    body.push(0);
    let out = call(fs, opcode::LOOKUP, parent, &body)?;
    Ok(take::<EntryOut>(&out).unwrap().0)
}

fn read_in(offset: u64, size: u32) -> Vec<u8> {
    abi::bytes_of(&ReadIn {
        offset,
        size,
        ..ReadIn::default()
    })
    .to_vec()
}

#[test]
fn malformed_requests_are_einval() {
    let fs = fs();
    assert_eq!(
        call(&fs, opcode::LOOKUP, 1, b"no-terminator"),
        Err(libc::EINVAL)
    );
    let d = lookup(&fs, 1, "d").unwrap().nodeid;
    let f = lookup(&fs, d, "file-01").unwrap().nodeid;
    assert_eq!(call(&fs, opcode::READ, f, &[0u8; 10]), Err(libc::EINVAL));
    assert_eq!(call(&fs, opcode::READDIR, d, &[0u8; 3]), Err(libc::EINVAL));
    assert_eq!(
        call(&fs, opcode::GETXATTR, f, &[1, 0, 0]),
        Err(libc::EINVAL)
    );
    assert_eq!(call(&fs, opcode::OPEN, f, &[]), Err(libc::EINVAL));
}

#[test]
fn unknown_and_writing_operations() {
    let fs = fs();
    assert_eq!(call(&fs, 9999, 1, &[]), Err(libc::ENOSYS));
    assert_eq!(call(&fs, opcode::MKDIR, 1, &[0u8; 16]), Err(libc::EROFS));
    assert_eq!(call(&fs, opcode::SETXATTR, 1, &[0u8; 16]), Err(libc::EROFS));
    let miss = lookup(&fs, 1, "missing").unwrap();
    assert_eq!(miss.nodeid, 0, "a miss is a cacheable negative entry");
    assert!(miss.entry_valid > 0);
    let d = lookup(&fs, 1, "d").unwrap().nodeid;
    assert_eq!(lookup(&fs, d, "..").unwrap().nodeid, 1);
    assert_eq!(lookup(&fs, d, ".").unwrap().nodeid, d);
    let x = lookup(&fs, 1, "x").unwrap().nodeid;
    assert_eq!(lookup(&fs, x, "child").unwrap_err(), libc::ENOTDIR);
    assert_eq!(
        call(&fs, opcode::GETATTR, 12345, &[0u8; 16]),
        Err(libc::ENOENT)
    );
    let open_rw = abi::bytes_of(&OpenIn {
        flags: libc::O_RDWR as u32,
        open_flags: 0,
    })
    .to_vec();
    assert_eq!(call(&fs, opcode::OPEN, x, &open_rw), Err(libc::EROFS));
}

#[test]
fn readdir_pages_through_every_entry() {
    let fs = fs();
    let d = lookup(&fs, 1, "d").unwrap().nodeid;
    for plus in [opcode::READDIR, opcode::READDIRPLUS] {
        let mut names = Vec::new();
        let mut offset = 0;
        loop {
            let out = call(&fs, plus, d, &read_in(offset, 300)).unwrap();
            assert!(out.len() <= 300);
            if out.is_empty() {
                break;
            }
            let mut rest = &out[..];
            while !rest.is_empty() {
                if plus == opcode::READDIRPLUS {
                    rest = take::<EntryOut>(rest).unwrap().1;
                }
                let (de, tail) = take::<Dirent>(rest).unwrap();
                names.push(String::from_utf8(tail[..de.namelen as usize].to_vec()).unwrap());
                let rec = (size_of::<Dirent>() + de.namelen as usize).next_multiple_of(8);
                rest = &rest[rec..];
                offset = de.off;
            }
        }
        assert_eq!(names.len(), 52, "{names:?}");
        assert_eq!(&names[..3], [".", "..", "file-00"]);
        assert_eq!(names.last().map(String::as_str), Some("file-49"));
    }
}

#[test]
fn xattr_size_protocol() {
    let fs = fs();
    let x = lookup(&fs, 1, "x").unwrap().nodeid;
    let ask = |size: u32| {
        let mut body = abi::bytes_of(&GetxattrIn { size, padding: 0 }).to_vec();
        body.extend_from_slice(b"user.k\0");
        call(&fs, opcode::GETXATTR, x, &body)
    };
    let len = take::<GetxattrOut>(&ask(0).unwrap()).unwrap().0.size;
    assert_eq!(len, 5);
    assert_eq!(ask(2), Err(libc::ERANGE));
    assert_eq!(ask(64).unwrap(), b"value");
    let list = call(
        &fs,
        opcode::LISTXATTR,
        x,
        abi::bytes_of(&GetxattrIn {
            size: 64,
            padding: 0,
        }),
    )
    .unwrap();
    assert_eq!(list, b"user.k\0");
}

#[test]
fn empty_file_reads_need_no_chunk() {
    let fs = fs();
    let x = lookup(&fs, 1, "x").unwrap().nodeid;
    // An empty file needs no chunk.
    assert_eq!(call(&fs, opcode::READ, x, &read_in(0, 4096)).unwrap(), b"");
}
