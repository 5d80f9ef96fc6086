//! Compresses eStargz members on worker threads and hands them back in submission order.
//!
//! Each member is an independent gzip or zstd stream, so compressing it on another thread
//! gives the same bytes as compressing it inline. [`OrderedPool`] keeps one slot per
//! submitted member in a queue (a finished result, or the receiver its worker will answer
//! on); the writer pops slots from the front, so output order is submission order. The
//! queue is capped at `2 × threads` slots, which bounds the pieces held in memory.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::Scope;

use super::Compression;

/// Members smaller than this (mostly runs of tar headers) are compressed on the calling
/// thread, saving a channel round trip. On 2 cores and a 174 MB tar of Python and docs, 0
/// and 4 KiB measured alike (gzip 1.83–2.11 s vs 1.87–1.94 s), 16 KiB slightly slower
/// (2.02 s) and 256 KiB clearly slower (2.2 s): the calling thread is already busy
/// reading the tar and hashing, so anything sizeable belongs on a worker.
const INLINE_MAX: usize = 4 << 10;

/// One member's uncompressed bytes, and the lengths of the writes that made them up.
///
/// The encoder is fed in those same slices: zlib-rs's deflate output depends on how its
/// input is split (one 150 MB layer came out 1 KiB smaller when each member was written in
/// one call), and replaying the writes keeps the bytes identical to the sequential writer.
#[derive(Default)]
pub(super) struct Piece {
    pub data: Vec<u8>,
    pub writes: Vec<usize>,
}

impl Piece {
    pub(super) fn push(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
        self.writes.push(bytes.len());
    }
}

/// Compresses `piece` as one complete member.
pub(super) fn compress_member(compression: Compression, level: u32, piece: &Piece) -> io::Result<Vec<u8>> {
    fn feed<E: Write>(mut e: E, piece: &Piece) -> io::Result<E> {
        let mut rest = &piece.data[..];
        for &n in &piece.writes {
            let (now, later) = rest.split_at(n);
            e.write_all(now)?;
            rest = later;
        }
        Ok(e)
    }
    match compression {
        Compression::Gzip => {
            let e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
            feed(e, piece)?.finish()
        }
        Compression::Zstd => {
            let e = zstd::stream::write::Encoder::new(Vec::new(), level as i32)?;
            feed(e, piece)?.finish()
        }
    }
}

type Reply = io::Result<Vec<u8>>;

enum Slot {
    Done(Reply),
    Pending(Receiver<Reply>),
}

/// An ordered pool of compression workers living in a [`std::thread::scope`].
pub(super) struct OrderedPool {
    compression: Compression,
    level: u32,
    /// `None` when running single-threaded: every member is compressed inline.
    jobs: Option<SyncSender<(Piece, SyncSender<Reply>)>>,
    queue: VecDeque<Slot>,
    max_queued: usize,
}

impl OrderedPool {
    /// Starts `threads` workers in `scope` (none for `threads <= 1`). They exit once the
    /// pool is dropped.
    pub(super) fn new<'scope>(
        scope: &'scope Scope<'scope, '_>,
        threads: usize,
        compression: Compression,
        level: u32,
    ) -> Self {
        let mut pool =
            Self { compression, level, jobs: None, queue: VecDeque::new(), max_queued: 2 * threads.max(1) };
        if threads > 1 {
            let (tx, rx) = sync_channel::<(Piece, SyncSender<Reply>)>(threads);
            let rx = Arc::new(Mutex::new(rx));
            for _ in 0..threads {
                let rx = Arc::clone(&rx);
                scope.spawn(move || {
                    loop {
                        // The guard is a temporary: the lock is released before compressing.
                        let job = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        let Ok((data, reply)) = job else { break };
                        // The writer may have given up (an error elsewhere); nothing to do then.
                        let _ = reply.send(compress_member(compression, level, &data));
                    }
                });
            }
            pool.jobs = Some(tx);
        }
        pool
    }

    /// Queues one member's uncompressed bytes. Call [`Self::pop`] until it returns `None`
    /// afterwards to keep the queue within its bound.
    pub(super) fn submit(&mut self, piece: Piece) -> io::Result<()> {
        let slot = match &self.jobs {
            Some(jobs) if piece.data.len() >= INLINE_MAX => {
                let (reply, rx) = sync_channel(1);
                jobs.send((piece, reply)).map_err(|_| io::Error::other("compression workers exited"))?;
                Slot::Pending(rx)
            }
            _ => Slot::Done(compress_member(self.compression, self.level, &piece)),
        };
        self.queue.push_back(slot);
        Ok(())
    }

    /// The next member in order, if it may be taken now: waits for it when the queue is
    /// full or `drain` is set, otherwise only returns it if it is already finished.
    pub(super) fn pop(&mut self, drain: bool) -> Option<Reply> {
        let wait = drain || self.queue.len() >= self.max_queued;
        let reply = match self.queue.pop_front()? {
            Slot::Done(r) => r,
            Slot::Pending(rx) => {
                let r = if wait {
                    rx.recv().ok()
                } else {
                    match rx.try_recv() {
                        Ok(r) => Some(r),
                        Err(TryRecvError::Empty) => {
                            self.queue.push_front(Slot::Pending(rx));
                            return None;
                        }
                        Err(TryRecvError::Disconnected) => None,
                    }
                };
                r.unwrap_or_else(|| Err(io::Error::other("a compression worker died")))
            }
        };
        Some(reply)
    }
}
