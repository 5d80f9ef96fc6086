//! [`LayerImageBuilder`] with Strata's own EROFS writer (`strata_formats::erofs`): the
//! directory is walked (parents before children, names sorted) and each object handed to
//! the entry-based [`Builder`] as it is met, so memory holds metadata only; file data are
//! streamed from the file into the image. Compared with `mkfs.erofs` 1.5 it takes
//! 255-byte names and keeps the holes of sparse files (found with `SEEK_DATA`/`SEEK_HOLE`)
//! as holes, and needs no external process.
//!
//! Everything is copied as it is: a 0/0 character device (an overlay whiteout in an upper
//! directory) stays one, `trusted.overlay.*` xattrs are kept, as `mkfs.erofs` does.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use strata_formats::erofs::{BuildOptions, Builder, Entry, EntryKind, Xattrs};
use strata_formats::tar_layer::{SparseSegment, Timestamp};

use super::builder::{BuildError, LayerImageBuilder};

/// Builds layer images with `strata_formats::erofs` (4 KiB blocks; file tails not
/// inlined, as containerd's `-Enoinline_data`).
#[derive(Debug, Clone, Default)]
pub struct StrataErofsWriter;

impl LayerImageBuilder for StrataErofsWriter {
    fn build_from_dir(&self, dir: &Path, out: &Path) -> Result<(), BuildError> {
        let io_err = |context: String| move |source| BuildError::Io { context, source };
        let file = File::create(out).map_err(io_err(format!("create {}", out.display())))?;
        let opts = BuildOptions {
            inline_data: false,
            ..BuildOptions::default()
        };
        let mut builder = Builder::new(BufWriter::new(file), opts).map_err(|e| BuildError::Io {
            context: format!("start {}", out.display()),
            source: io::Error::other(e.to_string()),
        })?;
        let mut walk = Walk {
            builder: &mut builder,
            links: HashMap::new(),
        };
        walk.add(dir, Vec::new())?;
        let (writer, _) = builder.finish().map_err(|e| BuildError::Io {
            context: format!("write {}", out.display()),
            source: io::Error::other(e.to_string()),
        })?;
        let file = writer.into_inner().map_err(|e| BuildError::Io {
            context: format!("write {}", out.display()),
            source: e.into_error(),
        })?;
        file.sync_all()
            .map_err(io_err(format!("sync {}", out.display())))
    }
}

struct Walk<'b, W: io::Write + Seek> {
    builder: &'b mut Builder<W>,
    /// (dev, ino) of files with several links → the first path added.
    links: HashMap<(u64, u64), Vec<u8>>,
}

impl<W: io::Write + Seek> Walk<'_, W> {
    /// Adds `path` (at `rel` in the image) and, for a directory, everything below it.
    fn add(&mut self, path: &Path, rel: Vec<u8>) -> Result<(), BuildError> {
        let io_err = |what: &str, source| BuildError::Io {
            context: format!("{what} {}", path.display()),
            source,
        };
        let meta = std::fs::symlink_metadata(path).map_err(|e| io_err("stat", e))?;
        let ft = meta.file_type();
        let mut data: Option<Box<dyn Read>> = None;
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            let target = std::fs::read_link(path).map_err(|e| io_err("read link", e))?;
            EntryKind::Symlink {
                target: target.as_os_str().as_bytes().to_vec(),
            }
        } else if meta.nlink() > 1
            && let Some(first) = self.links.get(&(meta.dev(), meta.ino()))
        {
            EntryKind::Hardlink {
                target: first.clone(),
            }
        } else if ft.is_file() {
            let file = File::open(path).map_err(|e| io_err("open", e))?;
            let size = meta.len();
            let kind = match sparse_segments(&file, size, meta.blocks()) {
                Some(segments) => {
                    data = Some(Box::new(SegmentReader::new(file, segments.clone())));
                    EntryKind::SparseFile { size, segments }
                }
                None => {
                    data = Some(Box::new(file.take(size)));
                    EntryKind::File { size }
                }
            };
            if meta.nlink() > 1 {
                self.links.insert((meta.dev(), meta.ino()), rel.clone());
            }
            kind
        } else {
            let (major, minor) = (
                rustix::fs::major(meta.rdev()),
                rustix::fs::minor(meta.rdev()),
            );
            let kind = if ft.is_char_device() {
                EntryKind::CharDevice { major, minor }
            } else if ft.is_block_device() {
                EntryKind::BlockDevice { major, minor }
            } else if ft.is_fifo() {
                EntryKind::Fifo
            } else {
                EntryKind::Socket
            };
            if meta.nlink() > 1 {
                self.links.insert((meta.dev(), meta.ino()), rel.clone());
            }
            kind
        };
        let entry = Entry {
            path: rel.clone(),
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            mtime: Timestamp {
                secs: meta.mtime(),
                nanos: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
            },
            xattrs: read_xattrs(path).map_err(|e| io_err("read xattrs of", e))?,
        };
        let mut empty = io::empty();
        let reader: &mut dyn Read = match data.as_mut() {
            Some(r) => r.as_mut(),
            None => &mut empty,
        };
        self.builder
            .add(entry, reader)
            .map_err(|e| BuildError::Io {
                context: format!("add {}", path.display()),
                source: io::Error::other(e.to_string()),
            })?;
        if ft.is_dir() {
            let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(path)
                .map_err(|e| io_err("list", e))?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<Result<_, _>>()
                .map_err(|e| io_err("list", e))?;
            names.sort();
            for name in names {
                let mut child = rel.clone();
                if !child.is_empty() {
                    child.push(b'/');
                }
                child.extend_from_slice(name.as_bytes());
                self.add(&path.join(&name), child)?;
            }
        }
        Ok(())
    }
}

/// Every xattr of `path` (not following a symlink), names in the order listed.
fn read_xattrs(path: &Path) -> io::Result<Xattrs> {
    let mut names = vec![0u8; 1024];
    let len = loop {
        match rustix::fs::llistxattr(path, &mut names) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for name in names[..len].split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let mut value = vec![0u8; 256];
        let n = loop {
            match rustix::fs::lgetxattr(path, name, &mut value) {
                Ok(n) => break n,
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 4, 0),
                Err(e) => return Err(e.into()),
            }
        };
        value.truncate(n);
        out.push((name.to_vec(), value));
    }
    Ok(out)
}

/// The data segments of a file whose allocated blocks cover less than its size (it has
/// holes), found with `SEEK_DATA`/`SEEK_HOLE`; `None` for a dense file or when the
/// filesystem cannot say.
fn sparse_segments(file: &File, size: u64, blocks: u64) -> Option<Vec<SparseSegment>> {
    if size == 0 || blocks.saturating_mul(512) >= size {
        return None;
    }
    let mut segments = Vec::new();
    let mut at = 0u64;
    while at < size {
        let start = match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(at)) {
            Ok(s) => s,
            Err(rustix::io::Errno::NXIO) => break, // only a hole from here on
            Err(_) => return None,
        };
        let end = rustix::fs::seek(file, rustix::fs::SeekFrom::Hole(start))
            .ok()?
            .min(size);
        if end > start {
            segments.push(SparseSegment {
                offset: start,
                length: end - start,
            });
        }
        at = end;
    }
    Some(segments)
}

/// Reads the bytes of `segments` of a file, back to back.
struct SegmentReader {
    file: File,
    segments: std::vec::IntoIter<SparseSegment>,
    left: u64,
}

impl SegmentReader {
    fn new(file: File, segments: Vec<SparseSegment>) -> Self {
        SegmentReader {
            file,
            segments: segments.into_iter(),
            left: 0,
        }
    }
}

impl Read for SegmentReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.left == 0 {
            let Some(next) = self.segments.next() else {
                return Ok(0);
            };
            self.file.seek(SeekFrom::Start(next.offset))?;
            self.left = next.length;
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while it was read",
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}
