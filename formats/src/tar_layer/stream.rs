//! The byte stream under the tar reader: compression undone, the diffID (sha256 of the
//! uncompressed stream) computed on the way, the uncompressed size bounded, and optionally
//! all of that moved to a helper thread so decompressing and hashing overlap with writing.

use std::io::{self, Read};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::{Scope, ScopedJoinHandle};

use crate::estargz::{EstargzError, decompress_layer};
use crate::{Digest, Digester};

/// The error inside the `io::Error` a [`DiffIdReader`] returns when the stream grows past
/// its limit; the tar reader turns it into [`super::TarLayerError::TooLarge`].
#[derive(Debug, thiserror::Error)]
#[error("layer exceeds the limit of {limit} uncompressed bytes")]
pub struct SizeLimitExceeded {
    /// The limit.
    pub limit: u64,
}

/// The layer's uncompressed stream: gzip (one or more members) or zstd when the first
/// bytes say so, otherwise the bytes as they are (a plain tar).
pub fn decompress<'a, R: Read + 'a>(layer: R) -> io::Result<Box<dyn Read + 'a>> {
    decompress_layer(layer).map_err(|e| match e {
        EstargzError::Io { source, .. } => source,
        other => io::Error::other(other.to_string()),
    })
}

/// Hashes and counts what is read through it, failing once more than `max_size` bytes
/// have passed.
#[derive(Debug)]
pub struct DiffIdReader<R> {
    inner: R,
    digester: Digester,
    max_size: Option<u64>,
}

impl<R: Read> DiffIdReader<R> {
    /// Wraps `inner` (the uncompressed stream).
    pub fn new(inner: R, max_size: Option<u64>) -> Self {
        Self {
            inner,
            digester: Digester::new(),
            max_size,
        }
    }

    /// The sha256 of everything read so far.
    pub fn digest(&self) -> Digest {
        self.digester.digest()
    }

    /// Bytes read so far.
    pub fn size(&self) -> u64 {
        self.digester.len()
    }

    /// Reads to the end of the stream (whatever follows the tar is part of the diffID, as
    /// in containerd) and returns the digest and size of the whole stream.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        let mut buf = vec![0u8; 64 << 10];
        while self.read(&mut buf)? != 0 {}
        Ok((self.digest(), self.size()))
    }
}

impl<R: Read> Read for DiffIdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = loop {
            match self.inner.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        self.digester.update(&buf[..n]);
        if let Some(limit) = self.max_size
            && self.digester.len() > limit
        {
            return Err(io::Error::other(SizeLimitExceeded { limit }));
        }
        Ok(n)
    }
}

/// The reading end of [`read_ahead`]: the uncompressed stream, in the chunks the helper
/// thread produced.
#[derive(Debug)]
pub struct ChannelReader {
    chunks: Receiver<io::Result<Vec<u8>>>,
    recycle: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    done: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            if self.done {
                return Ok(0);
            }
            match self.chunks.recv() {
                Ok(Ok(chunk)) => {
                    let spent = std::mem::replace(&mut self.current, chunk);
                    // The producer may have finished; a full recycle queue only costs an allocation.
                    let _ = self.recycle.try_send(spent);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                Err(_) => self.done = true,
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Size of the chunks handed from the helper thread to the reader.
const CHUNK: usize = 1 << 20;
/// Chunks in flight: enough to ride over a slow write without holding much memory.
const DEPTH: usize = 8;

/// Decompresses and hashes `layer` on a thread of `scope`, handing the uncompressed bytes
/// to the returned reader. The thread's result is the diffID and uncompressed size of the
/// whole stream (read to its end); an error is also delivered through the reader. If the
/// reader is dropped early, the thread stops at its next chunk.
pub fn read_ahead<'scope, R: Read + Send + 'scope>(
    scope: &'scope Scope<'scope, '_>,
    layer: R,
    max_size: Option<u64>,
) -> (
    ChannelReader,
    ScopedJoinHandle<'scope, io::Result<(Digest, u64)>>,
) {
    let (chunk_tx, chunk_rx) = sync_channel::<io::Result<Vec<u8>>>(DEPTH);
    let (recycle_tx, recycle_rx) = sync_channel::<Vec<u8>>(DEPTH + 2);
    let handle = scope.spawn(move || {
        let fail = |e: io::Error| {
            let copy = io::Error::new(e.kind(), e.to_string());
            // The original goes to the reader (it may carry SizeLimitExceeded).
            let _ = chunk_tx.send(Err(e));
            Err(copy)
        };
        let mut stream = match decompress(layer) {
            Ok(d) => DiffIdReader::new(d, max_size),
            Err(e) => return fail(e),
        };
        loop {
            let mut chunk = recycle_rx
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
            chunk.resize(CHUNK, 0);
            let mut filled = 0;
            while filled < CHUNK {
                match stream.read(&mut chunk[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) => {
                        // What decompressed before the error goes first, so the reader
                        // meets the error at the entry it belongs to.
                        chunk.truncate(filled);
                        if filled > 0 && chunk_tx.send(Ok(chunk)).is_err() {
                            return Err(e);
                        }
                        return fail(e);
                    }
                }
            }
            chunk.truncate(filled);
            if filled == 0 {
                return Ok((stream.digest(), stream.size()));
            }
            if chunk_tx.send(Ok(chunk)).is_err() {
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the layer reader stopped early",
                ));
            }
        }
    });
    (
        ChannelReader {
            chunks: chunk_rx,
            recycle: recycle_tx,
            current: Vec::new(),
            pos: 0,
            done: false,
        },
        handle,
    )
}
