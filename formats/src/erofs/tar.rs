//! Tar layers into EROFS images, read with the crate's own tar reader ([`TarLayer`]: PAX,
//! GNU long names, sparse files, bounded untrusted input, cleaned paths).
//!
//! OCI whiteouts become what overlayfs reads, as containerd's `mkfs.erofs --tar=f --aufs`
//! makes them: `.wh.X` a 0/0 character device named X (its directory marked with
//! `trusted.overlay.origin`), `.wh..wh..opq` `trusted.overlay.opaque=y` on its directory.
//!
//! - [`build_from_tar`]: a self-contained image, file data copied in one streaming pass.
//! - [`build_tar_index`]: containerd's `enable_tar_index` shape, `[index][tar]` in one
//!   file: an image of 512-byte blocks whose files are chunks pointing into the tar
//!   appended after it, so no file data is copied into the index.

use std::cell::Cell;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;

use super::builder::{BuildReport, Builder};
use super::{BuildOptions, Entry, EntryKind, ErofsError};
use crate::tar_layer::{self, TarLayer, TarLayerError};

/// What [`build_tar_index`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TarIndexReport {
    /// The index (the EROFS metadata), in bytes: where the tar starts in the file.
    pub index_bytes: u64,
    /// The tar's length, appended after the index.
    pub tar_bytes: u64,
    /// Inodes in the image.
    pub inodes: u64,
}

/// Reads a tar layer (uncompressed) from `tar` and writes its EROFS image to `out`,
/// streaming each file's data as it comes. Returns `out` (positioned at the image's end)
/// and what was written.
pub fn build_from_tar<R: Read, W: Write + Seek>(
    tar: R,
    out: W,
    opts: &BuildOptions,
) -> Result<(W, BuildReport), ErofsError> {
    let mut builder = Builder::new(out, opts.clone())?;
    let mut layer = TarLayer::new(tar, opts.tar_limits);
    while let Some(entry) = layer.next_entry()? {
        match convert(entry)? {
            Converted::Opaque(dir) => builder.mark_opaque(&dir)?,
            Converted::Entry(e) => {
                let mut payload = Payload {
                    layer: &mut layer,
                    error: None,
                };
                let result = builder.add(e, &mut payload);
                if let Some(tar_error) = payload.error {
                    return Err(ErofsError::Tar(tar_error));
                }
                result?;
            }
        }
    }
    layer.finish()?;
    builder.finish()
}

/// Writes the tar-index image of the tar layer `tar` (uncompressed, read twice: once for
/// its metadata, once to append it) to `out`: `[index][tar]`, as containerd's
/// `enable_tar_index` lays it out. The kernel reads file data straight from the tar part.
pub fn build_tar_index<R: Read + Seek, W: Write + Seek>(
    mut tar: R,
    out: W,
    opts: &BuildOptions,
) -> Result<(W, TarIndexReport), ErofsError> {
    let start = tar
        .stream_position()
        .map_err(|e| ErofsError::Tar(TarLayerError::from_io(tar_layer::Position::Start, e)))?;
    let offset = Rc::new(Cell::new(0u64));
    let counting = CountingReader {
        inner: &mut tar,
        offset: Rc::clone(&offset),
    };
    let mut builder = Builder::new_tar_index(out, opts.clone())?;
    let mut layer = TarLayer::new(counting, opts.tar_limits);
    while let Some(entry) = layer.next_entry()? {
        // The reader has consumed the headers exactly: the payload starts here.
        let payload_at = offset.get();
        match convert(entry)? {
            Converted::Opaque(dir) => builder.mark_opaque(&dir)?,
            Converted::Entry(e) if matches!(e.kind, EntryKind::File { .. }) => {
                builder.add_tar_reference(e, payload_at)?
            }
            Converted::Entry(e) => builder.add(e, &mut io::empty())?,
        }
    }
    layer.finish()?;
    let tar_bytes = offset.get();
    let (mut out, report) = builder.finish_tar_index(tar_bytes)?;
    let index_bytes = report.bytes;
    // Append the tar itself after the index.
    tar.seek(SeekFrom::Start(start))
        .map_err(|e| ErofsError::Tar(TarLayerError::from_io(tar_layer::Position::Trailer, e)))?;
    let copied = io::copy(&mut (&mut tar).take(tar_bytes), &mut out).map_err(ErofsError::Write)?;
    if copied != tar_bytes {
        return Err(ErofsError::Tar(TarLayerError::Truncated {
            at: tar_layer::Position::Trailer,
        }));
    }
    // Whole 512-byte blocks, as the superblock's block count says.
    let pad = tar_bytes.next_multiple_of(512) - tar_bytes;
    out.write_all(&vec![0u8; pad as usize])
        .map_err(ErofsError::Write)?;
    out.flush().map_err(ErofsError::Write)?;
    Ok((
        out,
        TarIndexReport {
            index_bytes,
            tar_bytes,
            inodes: report.inodes,
        },
    ))
}

enum Converted {
    Entry(Entry),
    Opaque(Vec<u8>),
}

/// A tar entry as a builder entry, or an opaque mark for its directory.
fn convert(e: tar_layer::Entry) -> Result<Converted, ErofsError> {
    let path = e.path.as_os_str().as_bytes().to_vec();
    let id = |v: u64, what: &str| {
        u32::try_from(v)
            .map_err(|_| ErofsError::entry(&path, format!("{what} {v} does not fit in 32 bits")))
    };
    let uid = id(e.uid, "uid")?;
    let gid = id(e.gid, "gid")?;
    let (path, kind) = match e.kind {
        tar_layer::EntryKind::File => match e.sparse {
            Some(segments) => (
                path,
                EntryKind::SparseFile {
                    size: e.size,
                    segments,
                },
            ),
            None => (path, EntryKind::File { size: e.size }),
        },
        tar_layer::EntryKind::Dir => (path, EntryKind::Dir),
        tar_layer::EntryKind::Symlink { target } => (
            path,
            EntryKind::Symlink {
                target: target.as_bytes().to_vec(),
            },
        ),
        tar_layer::EntryKind::Hardlink { target } => (
            path,
            EntryKind::Hardlink {
                target: target.as_os_str().as_bytes().to_vec(),
            },
        ),
        tar_layer::EntryKind::CharDevice { major, minor } => {
            (path, EntryKind::CharDevice { major, minor })
        }
        tar_layer::EntryKind::BlockDevice { major, minor } => {
            (path, EntryKind::BlockDevice { major, minor })
        }
        tar_layer::EntryKind::Fifo => (path, EntryKind::Fifo),
        tar_layer::EntryKind::Whiteout { target } => {
            (target.as_os_str().as_bytes().to_vec(), EntryKind::Whiteout)
        }
        tar_layer::EntryKind::OpaqueWhiteout { dir } => {
            return Ok(Converted::Opaque(dir.as_os_str().as_bytes().to_vec()));
        }
    };
    Ok(Converted::Entry(Entry {
        path,
        kind,
        mode: e.mode,
        uid,
        gid,
        mtime: e.mtime,
        xattrs: e
            .xattrs
            .into_iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v))
            .collect(),
    }))
}

/// The current entry's payload as a `Read`, keeping the tar error (with its position) for
/// the caller instead of flattening it into an `io::Error`.
struct Payload<'a, R> {
    layer: &'a mut TarLayer<R>,
    error: Option<TarLayerError>,
}

impl<R: Read> Read for Payload<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.layer.read_data(buf) {
            Ok(n) if n == 0 && !buf.is_empty() => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the entry's payload is shorter than its size",
            )),
            Ok(n) => Ok(n),
            Err(e) => {
                let msg = e.to_string();
                self.error = Some(e);
                Err(io::Error::other(msg))
            }
        }
    }
}

/// Counts the bytes read through it: the tar offset of each payload.
struct CountingReader<'a, R> {
    inner: &'a mut R,
    offset: Rc<Cell<u64>>,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.offset.set(self.offset.get() + n as u64);
        Ok(n)
    }
}
