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
pub(super) fn compress_member(
    compression: Compression,
    level: u32,
    piece: &Piece,
) -> io::Result<Vec<u8>> {
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
        Compression::Gzip => gzip_member(level, &piece.data),
        Compression::Zstd => {
            let e = zstd::stream::write::Encoder::new(Vec::new(), level as i32)?;
            feed(e, piece)?.finish()
        }
    }
}

/// One gzip member of `data` at `level` (0–9), compressed by libdeflate: whole-buffer
/// compression is how members are made anyway, and libdeflate at level 7 is both faster
/// than zlib at 6 and smaller than zlib (and Go's `compress/flate`) at 9.
///
/// Incompressible data (already-compressed files, which images are full of) is stored
/// rather than run through the match finder, which would find nothing and cost as much
/// as compressing text; see [`looks_incompressible`].
pub(super) fn gzip_member(level: u32, data: &[u8]) -> io::Result<Vec<u8>> {
    thread_local! {
        static COMPRESSORS: std::cell::RefCell<Vec<(u32, libdeflater::Compressor)>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let level = level.min(9);
    COMPRESSORS.with_borrow_mut(|compressors| {
        if level > 0 && looks_incompressible(compressor_for(compressors, 1)?, data)? {
            return Ok(stored_gzip_member(level, data));
        }
        let compressor = compressor_for(compressors, level)?;
        let mut out = vec![0; compressor.gzip_compress_bound(data.len())];
        let n = compressor
            .gzip_compress(data, &mut out)
            .map_err(|e| io::Error::other(format!("gzip compression: {e:?}")))?;
        out.truncate(n);
        Ok(out)
    })
}

/// The cached compressor for `level`, created on first use.
fn compressor_for(
    compressors: &mut Vec<(u32, libdeflater::Compressor)>,
    level: u32,
) -> io::Result<&mut libdeflater::Compressor> {
    let index = match compressors.iter().position(|(l, _)| *l == level) {
        Some(i) => i,
        None => {
            let lvl = libdeflater::CompressionLvl::new(level as i32).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("gzip level {level}: {e:?}"),
                )
            })?;
            compressors.push((level, libdeflater::Compressor::new(lvl)));
            compressors.len() - 1
        }
    };
    Ok(&mut compressors[index].1)
}

/// Size of each probe [`looks_incompressible`] compresses.
const PROBE: usize = 16 << 10;

/// Whether `data` is (almost) incompressible: probes at its start, middle and end, each
/// compressed at level 1, all save less than 1 %. Only members of at least four probes'
/// size are probed; small ones are cheap to compress anyway. The decision depends on the
/// bytes alone, so the output stays deterministic.
fn looks_incompressible(fast: &mut libdeflater::Compressor, data: &[u8]) -> io::Result<bool> {
    if data.len() < 4 * PROBE {
        return Ok(false);
    }
    let mut out = vec![0; fast.deflate_compress_bound(PROBE)];
    for start in [0, data.len() / 2 - PROBE / 2, data.len() - PROBE] {
        let n = fast
            .deflate_compress(&data[start..start + PROBE], &mut out)
            .map_err(|e| io::Error::other(format!("gzip compression probe: {e:?}")))?;
        if n * 100 < PROBE * 99 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A gzip member holding `data` in stored (uncompressed) deflate blocks, with the same
/// header libdeflate writes at `level`.
fn stored_gzip_member(level: u32, data: &[u8]) -> Vec<u8> {
    const MAX_STORED: usize = 65535;
    let blocks = data.len().div_ceil(MAX_STORED).max(1);
    let mut out = Vec::with_capacity(10 + data.len() + 5 * blocks + 8);
    let xfl = if level < 2 {
        4
    } else if level >= 8 {
        2
    } else {
        0
    };
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 255]);
    let mut rest = data;
    loop {
        let n = rest.len().min(MAX_STORED);
        let last = n == rest.len();
        out.push(u8::from(last));
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.extend_from_slice(&(!(n as u16)).to_le_bytes());
        out.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        if last {
            break;
        }
    }
    let mut crc = libdeflater::Crc::new();
    crc.update(data);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
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
        let mut pool = Self {
            compression,
            level,
            jobs: None,
            queue: VecDeque::new(),
            max_queued: 2 * threads.max(1),
        };
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
                jobs.send((piece, reply))
                    .map_err(|_| io::Error::other("compression workers exited"))?;
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

#[cfg(test)]
mod gzip_member_tests {
    use std::io::Read;

    use rand::{RngCore, SeedableRng};

    use super::*;

    fn gunzip(member: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(member)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn incompressible_members_are_stored_and_decode() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for size in [4 * PROBE, 65535, 65536, 3 * 65535, 200_000, 4 << 20] {
            let mut data = vec![0u8; size];
            rng.fill_bytes(&mut data);
            let member = gzip_member(7, &data).unwrap();
            assert_eq!(
                member.len(),
                10 + size + 5 * size.div_ceil(65535) + 8,
                "size {size}: stored"
            );
            assert_eq!(gunzip(&member), data, "size {size}");
        }
    }

    #[test]
    fn compressible_members_are_compressed() {
        // Random bytes at the probes, text in between: probes decide, so a member is
        // stored only when all three probes are incompressible.
        let mut rng = rand::rngs::SmallRng::seed_from_u64(8);
        let mut data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("line {i} of a log\n").into_bytes())
            .collect();
        rng.fill_bytes(&mut data[..PROBE]);
        let member = gzip_member(6, &data).unwrap();
        assert!(
            member.len() < data.len() / 3,
            "{} of {}",
            member.len(),
            data.len()
        );
        assert_eq!(gunzip(&member), data);
        for level in [0, 1, 9] {
            assert_eq!(
                gunzip(&gzip_member(level, &data).unwrap()),
                data,
                "level {level}"
            );
        }
        assert_eq!(gunzip(&gzip_member(6, b"").unwrap()), b"");
    }
}
