//! [`ReadAt`]: random access to an immutable blob, the seam between formats and storage.
//!
//! Formats never open files or sockets; they are handed a `ReadAt`. The hub implements it
//! for committed blobs in the content store and for remote blobs behind the range fetcher,
//! so one eStargz or tar reader serves both.

use std::io;

/// Random, position-independent reads of an immutable blob of known size.
///
/// Implementations must be safe to call from many threads at once (`&self`): FUSE threads
/// read the same layer concurrently. A read never moves a cursor.
pub trait ReadAt: Send + Sync {
    /// The blob's total size in bytes.
    fn size(&self) -> u64;

    /// Reads up to `buf.len()` bytes at `offset`, returning how many were read. Returns 0
    /// only at or past the end of the blob (or for an empty `buf`).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Fills `buf` from `offset`, or fails with `UnexpectedEof` if the blob ends first.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            match self.read_at(buf, offset) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "read past end of blob (offset {offset}, size {})",
                            self.size()
                        ),
                    ));
                }
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Reads `[offset, offset + len)` into a new vector; `len` is clamped to the blob's end.
    fn read_range(&self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        let end = offset.saturating_add(len).min(self.size());
        let len = usize::try_from(end.saturating_sub(offset))
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "range too large"))?;
        let mut buf = vec![0; len];
        self.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }
}

impl ReadAt for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let Ok(start) = usize::try_from(offset) else {
            return Ok(0);
        };
        if start >= self.len() {
            return Ok(0);
        }
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

impl ReadAt for Vec<u8> {
    fn size(&self) -> u64 {
        self.as_slice().size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.as_slice().read_at(buf, offset)
    }
}

/// A file is read with `pread`, so concurrent readers never race on a cursor. Its size is
/// taken once, at construction: the blobs this serves are immutable.
#[derive(Debug)]
pub struct FileReadAt {
    file: std::fs::File,
    size: u64,
}

impl FileReadAt {
    /// Wraps an open file, recording its current size.
    pub fn new(file: std::fs::File) -> io::Result<Self> {
        let size = file.metadata()?.len();
        Ok(Self { file, size })
    }

    /// The underlying file.
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }
}

impl ReadAt for FileReadAt {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        if offset >= self.size {
            return Ok(0);
        }
        let max = usize::try_from(self.size - offset)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        self.file.read_at(&mut buf[..max], offset)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for std::sync::Arc<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        (**self).read_at(buf, offset)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Box<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        (**self).read_at(buf, offset)
    }
}

/// A `std::io::Read + Seek` view of a [`ReadAt`], for consumers that want a stream
/// (e.g. a tar reader over a committed blob).
#[derive(Debug)]
pub struct ReadAtCursor<R> {
    inner: R,
    pos: u64,
}

impl<R: ReadAt> ReadAtCursor<R> {
    /// A cursor at offset 0.
    pub fn new(inner: R) -> Self {
        Self { inner, pos: 0 }
    }
}

impl<R: ReadAt> io::Read for ReadAtCursor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: ReadAt> io::Seek for ReadAtCursor<R> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        let new = match pos {
            io::SeekFrom::Start(p) => Some(p),
            io::SeekFrom::End(d) => self.inner.size().checked_add_signed(d),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos =
            new.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before start"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};

    #[test]
    fn slice_reads_clamp_at_end() {
        let data = b"hello world".to_vec();
        let mut buf = [0u8; 8];
        assert_eq!(data.read_at(&mut buf, 6).unwrap(), 5);
        assert_eq!(&buf[..5], b"world");
        assert_eq!(data.read_at(&mut buf, 11).unwrap(), 0);
        assert_eq!(data.read_at(&mut buf, u64::MAX).unwrap(), 0);
        assert_eq!(data.read_range(6, 100).unwrap(), b"world");
        let err = data.read_exact_at(&mut buf, 6).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn file_reads_and_cursor() {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, b"0123456789").unwrap();
        let r = FileReadAt::new(f).unwrap();
        assert_eq!(r.size(), 10);
        assert_eq!(r.read_range(3, 4).unwrap(), b"3456");
        let mut c = ReadAtCursor::new(r);
        c.seek(SeekFrom::End(-2)).unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        assert_eq!(s, "89");
        assert!(c.seek(SeekFrom::Current(-100)).is_err());
    }
}
