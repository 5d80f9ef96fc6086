//! [`LayerFetch`]: how a lazily mounted layer gets its file data — the I/O around its
//! [`FetchPlan`], kept thin.
//!
//! A FUSE read of a chunk asks the plan; the requests it returns are started at once, each
//! one range request **streamed**: its body goes, as it arrives, to a decoding thread that
//! walks the request's chunks in blob order, decompresses each member straight into the
//! chunk cache (hashed on the way, renamed into place only when it matches its TOC digest)
//! and marks it local. A read waits for its chunk, not for its request: the first file of
//! a 1 MB read-ahead is served as soon as its own bytes are in. Nothing is ever served
//! that was not verified: reads take their bytes from the cache's checked files.
//!
//! A chunk whose request fails (the fetcher has already retried the body) or whose bytes
//! do not match is absent again; a read waiting for it plans it once more, and a second
//! failure is its error (`EIO` to the reader, logged with layer and file).
//!
//! The prioritized range (`[0, landmark)`) is planned at mount — or adopted from a stream
//! started before the TOC was in (the image's prefetch-end hint) — and reads of it wait
//! for it. The background fetch ([`BackgroundFetch`]) takes the rest of every layer one
//! small request at a time, and only while no read has been waiting anywhere for a while.
//! When a file is complete, the layer tells its [`FileSink`] (the image's hint worker,
//! which prefetches the libraries of an ELF file).

use std::collections::HashMap;
use std::io::{self, BufReader, Read};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use strata_formats::estargz::{Chunk, EstargzReader, FooterKind, chunk_reader};
use strata_formats::layer_index::FileChunk;
use strata_fuse::{ChunkSource, FileRef};
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use super::plan::{ChunkMap, ChunkState, FetchPlan, Kind, PlanOptions, PlanStats, Request};
use crate::cache::ChunkCache;
use crate::registry::range::{RangeFetcher, RangeReader};

/// How layers fetch: the plan's tuning and the background fetch.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// What a miss fetches (see [`PlanOptions`]).
    pub plan: PlanOptions,
    /// Fetch the rest of every layer in the background.
    pub background: bool,
    /// The background fetch's bytes per second (all layers together).
    pub background_rate: u64,
    /// The background fetch starts once no read has waited for this long.
    pub background_idle: Duration,
    /// Size of each background request.
    pub background_request: u64,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            plan: PlanOptions::default(),
            background: true,
            background_rate: 32 << 20,
            background_idle: Duration::from_secs(2),
            background_request: 256 << 10,
        }
    }
}

/// Bulk requests (prioritized range, background fetch) of one layer running at once; the
/// others wait in line. Each holds at most [`STREAM_FRAMES`] frames in memory.
const MAX_BULK_IN_FLIGHT: usize = 2;

fn is_bulk(kind: Kind) -> bool {
    matches!(kind, Kind::Prefetch | Kind::Background)
}

/// Requests one read makes for its chunk at most (each failure is retried once anyway).
const MAX_ROUNDS: u32 = 4;
/// Body frames buffered between a request and its decoder (backpressure beyond).
const STREAM_FRAMES: usize = 64;
/// Frames a stream started before its layer's TOC is in may buffer: it has no decoder yet.
const EARLY_FRAMES: usize = 1 << 14;

/// What every layer of the provider is doing, for the background fetch to keep out of
/// the way of reads.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    /// Reads waiting for a fetch right now, in every layer.
    waiting: AtomicUsize,
    /// Requests in flight that are not the background fetch's.
    busy: AtomicUsize,
    /// When a read last waited (ms since `epoch`).
    last_wait: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            waiting: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            last_wait: AtomicU64::new(0),
        }
    }
}

impl Activity {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether reads wait or requests other than the background fetch's are in flight.
    pub fn busy(&self) -> bool {
        self.waiting.load(Ordering::Relaxed) > 0 || self.busy.load(Ordering::Relaxed) > 0
    }

    /// How long since a read last waited for a fetch.
    pub fn quiet_for(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_wait.load(Ordering::Relaxed)),
        )
    }

    fn note_wait(&self) {
        self.last_wait.store(self.now_ms(), Ordering::Relaxed);
    }
}

/// Counts a read as waiting while it lives.
struct Waiting<'a>(&'a Activity);

impl<'a> Waiting<'a> {
    fn new(activity: &'a Activity) -> Self {
        activity.waiting.fetch_add(1, Ordering::Relaxed);
        activity.note_wait();
        Self(activity)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.note_wait();
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Told when a file of a layer is complete (every chunk local).
pub trait FileSink: Send + Sync {
    /// File `file` (of the layer's [`ChunkMap`]) of `layer` is local.
    fn file_complete(&self, layer: &Arc<LayerFetch>, file: u32);
}

/// A range request started before the layer's chunk map was known: its range and its
/// body on the way.
#[derive(Debug)]
pub struct EarlyStream {
    range: Range<u64>,
    body: Body,
}

impl EarlyStream {
    /// Starts fetching `range` of `fetcher`'s blob on `runtime`, buffering what arrives
    /// until a layer adopts it.
    pub fn start(fetcher: &Arc<dyn RangeFetcher>, range: Range<u64>, runtime: &Handle) -> Self {
        Self {
            body: Body::start(fetcher, range.clone(), runtime, EARLY_FRAMES),
            range,
        }
    }

    /// Where it ends.
    pub fn end(&self) -> u64 {
        self.range.end
    }
}

/// The body of a streamed request, read synchronously on the decoding thread.
#[derive(Debug)]
struct Body {
    frames: mpsc::Receiver<Bytes>,
    result: Option<oneshot::Receiver<Result<(), String>>>,
    current: Bytes,
    /// Blob offset of `current`'s first byte.
    pos: u64,
    /// Why the stream broke, once it did.
    error: Option<String>,
}

impl Body {
    fn start(
        fetcher: &Arc<dyn RangeFetcher>,
        range: Range<u64>,
        runtime: &Handle,
        frames: usize,
    ) -> Self {
        let (tx, rx) = mpsc::channel(frames);
        let (done_tx, done_rx) = oneshot::channel();
        let fetcher = Arc::clone(fetcher);
        let pos = range.start;
        runtime.spawn(async move {
            let result = fetcher
                .fetch_stream(range, tx)
                .await
                .map_err(|e| crate::error_chain::chain(&e));
            let _ = done_tx.send(result);
        });
        Self {
            frames: rx,
            result: Some(done_rx),
            current: Bytes::new(),
            pos,
            error: None,
        }
    }

    fn fail(&mut self, why: String) -> io::Error {
        self.error = Some(why.clone());
        io::Error::other(why)
    }

    /// Skips to blob offset `to` (at or after the current position).
    fn skip_to(&mut self, to: u64) -> io::Result<()> {
        while self.pos < to {
            if self.current.is_empty() && !self.next_frame()? {
                return Err(self.fail(format!(
                    "the response ended at blob offset {}, before {to}",
                    self.pos
                )));
            }
            let n = usize::try_from(to - self.pos)
                .unwrap_or(usize::MAX)
                .min(self.current.len());
            let _ = self.current.split_to(n);
            self.pos += n as u64;
        }
        Ok(())
    }

    /// The next frame into `current`; `false` at the end of the body.
    fn next_frame(&mut self) -> io::Result<bool> {
        if let Some(e) = &self.error {
            return Err(io::Error::other(e.clone()));
        }
        loop {
            match self.frames.blocking_recv() {
                Some(b) if b.is_empty() => {}
                Some(b) => {
                    self.current = b;
                    return Ok(true);
                }
                None => {
                    let result = self.result.take().map(|r| {
                        r.blocking_recv()
                            .unwrap_or_else(|_| Err("the request was cancelled".into()))
                    });
                    return match result {
                        Some(Err(e)) => Err(self.fail(e)),
                        _ => Ok(false),
                    };
                }
            }
        }
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.current.is_empty() && !self.next_frame()? {
            return Ok(0);
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        self.pos += n as u64;
        Ok(n)
    }
}

/// The state behind the layer's one lock.
#[derive(Debug)]
struct Shared {
    plan: FetchPlan,
    /// Chunks whose last fetch failed: (failure number, why).
    failures: HashMap<u32, (u64, Arc<str>)>,
    failed: u64,
    /// Prioritized-range requests not finished yet.
    prefetching: usize,
    /// Bulk requests (prioritized range, background) running, and those waiting for one
    /// of them to end.
    bulk_running: usize,
    queued: std::collections::VecDeque<Request>,
}

/// The chunk source of one lazily mounted layer (see the module docs).
pub struct LayerFetch {
    name: String,
    reader: Arc<EstargzReader<RangeReader>>,
    kind: FooterKind,
    map: Arc<ChunkMap>,
    /// Chunk → (TOC node, chunk number in the node).
    refs: Vec<(usize, usize)>,
    /// Chunk → the other chunks with the same digest (stored once, local together).
    twins: HashMap<u32, Vec<u32>>,
    shared: Mutex<Shared>,
    changed: Condvar,
    fetcher: Arc<dyn RangeFetcher>,
    cache: Arc<ChunkCache>,
    runtime: Handle,
    activity: Arc<Activity>,
    sink: Mutex<Option<Weak<dyn FileSink>>>,
    /// The layers under this one, top first (for hints that name their files).
    lower: Mutex<Vec<Weak<LayerFetch>>>,
    epoch: Instant,
    errors: AtomicU64,
    stop: AtomicBool,
    me: Weak<LayerFetch>,
}

impl std::fmt::Debug for LayerFetch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerFetch")
            .field("layer", &self.name)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl LayerFetch {
    /// The layer `name` (for log lines) whose TOC `reader` holds, fetched through
    /// `fetcher` on `runtime`, its chunks kept in `cache` (those already there are local).
    /// `early`: a stream of the prioritized range started before the TOC was in.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        reader: Arc<EstargzReader<RangeReader>>,
        fetcher: Arc<dyn RangeFetcher>,
        cache: Arc<ChunkCache>,
        runtime: Handle,
        activity: Arc<Activity>,
        plan: PlanOptions,
        early: Option<EarlyStream>,
    ) -> Arc<Self> {
        let index = reader.index();
        let map = Arc::new(ChunkMap::of_index(index));
        let mut refs = vec![(0, 0); map.len()];
        let mut by_digest: HashMap<&strata_formats::Digest, Vec<u32>> = HashMap::new();
        for (node, n) in index.nodes().iter().enumerate() {
            for (nth, c) in n.chunks.iter().enumerate() {
                if let Some(i) = map.chunk_of(node, nth) {
                    refs[i as usize] = (node, nth);
                    by_digest.entry(&c.digest).or_default().push(i);
                }
            }
        }
        let mut plan = FetchPlan::new(Arc::clone(&map), plan);
        for same in by_digest.values() {
            let (node, nth) = refs[same[0] as usize];
            if cache.contains(&index.nodes()[node].chunks[nth].digest) {
                for &c in same {
                    plan.stored(c);
                }
            }
        }
        let twins = by_digest
            .values()
            .filter(|v| v.len() > 1)
            .flat_map(|v| {
                v.iter()
                    .map(move |&c| (c, v.iter().copied().filter(|&o| o != c).collect()))
            })
            .collect();
        let kind = reader.footer().kind;
        let layer = Arc::new_cyclic(|me| Self {
            name,
            kind,
            map,
            refs,
            twins,
            shared: Mutex::new(Shared {
                plan,
                failures: HashMap::new(),
                failed: 0,
                prefetching: 0,
                bulk_running: 0,
                queued: Default::default(),
            }),
            changed: Condvar::new(),
            fetcher,
            cache,
            runtime,
            activity,
            sink: Mutex::new(None),
            lower: Mutex::new(Vec::new()),
            epoch: Instant::now(),
            errors: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            reader,
            me: me.clone(),
        });
        if let Some(early) = early {
            layer.adopt(early);
        }
        layer
    }

    /// The layer's name (its digest).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The layer's TOC.
    pub fn reader(&self) -> &Arc<EstargzReader<RangeReader>> {
        &self.reader
    }

    /// The chunk map the plan works on.
    pub fn map(&self) -> &Arc<ChunkMap> {
        &self.map
    }

    /// Tells `sink` about every file that becomes complete from now on.
    pub fn set_sink(&self, sink: Weak<dyn FileSink>) {
        *lock(&self.sink) = Some(sink);
    }

    /// The layers under this one, top first.
    pub fn set_lower(&self, lower: Vec<Weak<LayerFetch>>) {
        *lock(&self.lower) = lower;
    }

    /// This layer and the ones under it that are still served, top first.
    pub fn stack(self: &Arc<Self>) -> Vec<Arc<LayerFetch>> {
        std::iter::once(Arc::clone(self))
            .chain(lock(&self.lower).iter().filter_map(Weak::upgrade))
            .collect()
    }

    /// Chunk reads that failed (fetch or verification).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Whether every chunk is local.
    pub fn complete(&self) -> bool {
        lock(&self.shared).plan.complete()
    }

    /// Whether the prioritized range is local (or there is none, or it failed).
    pub fn prefetched(&self) -> bool {
        lock(&self.shared).prefetching == 0
    }

    /// The plan's counters.
    pub fn plan_stats(&self) -> PlanStats {
        lock(&self.shared).plan.stats()
    }

    /// Stops fetching (requests end at their next chunk; reads still plan their own).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn chunk(&self, c: u32) -> &Chunk {
        let (node, nth) = self.refs[c as usize];
        &self.reader.index().nodes()[node].chunks[nth]
    }

    /// The path of file `f` of the map.
    pub fn file_path(&self, f: u32) -> &str {
        &self.reader.index().nodes()[self.map.file(f).node].path
    }

    /// Reads `buf` at `offset` of the file `node` of this layer from the cache only, never
    /// fetching: for looking into files that are complete. A part not local is an error.
    pub fn read_local(
        &self,
        node: &strata_formats::estargz::Node,
        offset: u64,
        buf: &mut [u8],
    ) -> io::Result<usize> {
        let size = u64::try_from(node.entry.size).unwrap_or(0);
        let end = offset.saturating_add(buf.len() as u64).min(size);
        let mut out = Vec::with_capacity(usize::try_from(end.saturating_sub(offset)).unwrap_or(0));
        let mut pos = offset;
        while pos < end {
            let chunk = node.chunk_for(pos).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: no chunk at {pos}", node.path),
                )
            })?;
            let from = pos - chunk.chunk_offset;
            let to = end.min(chunk.chunk_offset + chunk.chunk_size) - chunk.chunk_offset;
            if to <= from || !self.cache.read_range(&chunk.digest, from..to, &mut out) {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} at {pos}: not local", node.path),
                ));
            }
            pos = chunk.chunk_offset + to;
        }
        buf[..out.len()].copy_from_slice(&out);
        Ok(out.len())
    }

    /// Starts the prioritized range's requests (`[0, landmark)`), all at once.
    pub fn start_prefetch(&self) {
        let Some(end) = self.reader.index().prefetch_landmark_offset() else {
            return;
        };
        let reqs = {
            let mut s = lock(&self.shared);
            let reqs = s.plan.prefetch(end);
            s.prefetching += reqs.len();
            reqs
        };
        let bytes: u64 = reqs.iter().map(|r| r.range.end - r.range.start).sum();
        if bytes > 0 {
            tracing::debug!(
                layer = self.name,
                bytes,
                requests = reqs.len(),
                "stargz: prefetching the prioritized files"
            );
        }
        self.start_all(reqs);
    }

    /// Adopts a stream started before the chunk map was known.
    fn adopt(&self, early: EarlyStream) {
        let req = {
            let mut s = lock(&self.shared);
            s.prefetching += 1;
            s.bulk_running += 1;
            s.plan.adopt(early.range.clone(), Kind::Prefetch)
        };
        self.spawn_decoder(req, early.body);
    }

    /// Fetches files `files` of the map whole (a hint), unless local or coming.
    pub fn want_files(&self, files: &[u32]) {
        let reqs = lock(&self.shared).plan.files(files, Kind::Hint);
        if !reqs.is_empty() {
            tracing::debug!(layer = self.name, files = ?files.iter().map(|&f| self.file_path(f)).collect::<Vec<_>>(), requests = reqs.len(), "stargz: fetching files a hint names");
        }
        self.start_all(reqs);
    }

    /// The next background request, started; `None` when nothing is left to fetch.
    pub fn start_background(&self, max: u64) -> Option<u64> {
        let req = lock(&self.shared).plan.background(max)?;
        let id = req.id;
        self.start(req);
        Some(id)
    }

    /// Waits until request `id` is over (at most `timeout`).
    pub fn wait_request(&self, id: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut s = lock(&self.shared);
        while s.plan.is_in_flight(id) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            s = self
                .changed
                .wait_timeout(s, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn start_all(&self, reqs: Vec<Request>) {
        for r in reqs {
            self.start(r);
        }
    }

    /// Starts `req` — a bulk one only while fewer than [`MAX_BULK_IN_FLIGHT`] run (it
    /// waits in the queue otherwise, unless a read needs it).
    fn start(&self, req: Request) {
        if is_bulk(req.kind) {
            let mut s = lock(&self.shared);
            if s.bulk_running >= MAX_BULK_IN_FLIGHT {
                s.queued.push_back(req);
                return;
            }
            s.bulk_running += 1;
        }
        self.send(req);
    }

    fn send(&self, req: Request) {
        let body = Body::start(
            &self.fetcher,
            req.range.clone(),
            &self.runtime,
            STREAM_FRAMES,
        );
        self.spawn_decoder(req, body);
    }

    fn spawn_decoder(&self, req: Request, body: Body) {
        if req.kind != Kind::Background {
            self.activity.busy.fetch_add(1, Ordering::Relaxed);
        }
        let Some(me) = self.me.upgrade() else { return };
        self.runtime.spawn_blocking(move || me.decode(req, body));
    }

    /// Decodes request `req`'s chunks from `body` into the cache, in order, marking each
    /// local as it is stored.
    fn decode(self: Arc<Self>, req: Request, mut body: Body) {
        let started = Instant::now();
        let mut broken: Option<String> = None;
        let mut i = 0;
        while i < req.chunks.len() && broken.is_none() && !self.stop.load(Ordering::Relaxed) {
            let first = *self.map.chunk(req.chunks[i]);
            let group = req.chunks[i..]
                .iter()
                .take_while(|&&c| self.map.chunk(c).offset == first.offset)
                .count();
            if let Err(e) = body.skip_to(first.offset) {
                broken = Some(e.to_string());
                break;
            }
            let member = (&mut body).take(first.end - first.offset);
            let outcome = if group == 1 {
                let mut member = member;
                let stored = self.store(req.chunks[i], &mut member);
                let drained = io::copy(&mut member, &mut io::sink());
                vec![(req.chunks[i], stored.and_then(|()| drained.map(|_| ())))]
            } else {
                // Several chunks in one member (inner offsets): decode each from a copy.
                let mut bytes = Vec::new();
                match { member }.read_to_end(&mut bytes) {
                    Ok(_) => req.chunks[i..i + group]
                        .iter()
                        .map(|&c| (c, self.store(c, &mut bytes.as_slice())))
                        .collect(),
                    Err(e) => req.chunks[i..i + group]
                        .iter()
                        .map(|&c| (c, Err(io::Error::new(e.kind(), e.to_string()))))
                        .collect(),
                }
            };
            for (c, result) in outcome {
                match result {
                    Ok(()) => self.stored(c, req.kind),
                    Err(_) if body.error.is_some() => {}
                    Err(e) => self.chunk_failed(c, &e.to_string()),
                }
            }
            if let Some(e) = &body.error {
                // The group's chunks that did not make it are failed below with the rest.
                broken = Some(e.clone());
                break;
            }
            i += group;
        }
        if let Some(why) = &broken {
            tracing::warn!(layer = self.name, start = req.range.start, end = req.range.end, kind = ?req.kind, error = why, "stargz: a range request failed");
        }
        {
            let mut s = lock(&self.shared);
            if let Some(why) = &broken {
                let why: Arc<str> = Arc::from(why.as_str());
                for &c in &req.chunks[i.min(req.chunks.len())..] {
                    if s.plan.state(c) == ChunkState::InFlight(req.id) {
                        s.failed += 1;
                        let n = s.failed;
                        s.failures.insert(c, (n, Arc::clone(&why)));
                    }
                }
            }
            s.plan.finished(req.id);
            if req.kind == Kind::Prefetch {
                s.prefetching = s.prefetching.saturating_sub(1);
            }
            if is_bulk(req.kind) {
                s.bulk_running = s.bulk_running.saturating_sub(1);
                if s.bulk_running < MAX_BULK_IN_FLIGHT
                    && let Some(next) = s.queued.pop_front()
                {
                    s.bulk_running += 1;
                    drop(s);
                    self.send(next);
                }
            }
        }
        self.changed.notify_all();
        if req.kind != Kind::Background {
            self.activity.busy.fetch_sub(1, Ordering::Relaxed);
        }
        tracing::trace!(layer = self.name, start = req.range.start, end = req.range.end, kind = ?req.kind, chunks = req.chunks.len(), elapsed = ?started.elapsed(), "stargz: request done");
    }

    /// Decompresses chunk `c` from its member's bytes straight into the cache (verified).
    fn store(&self, c: u32, member: &mut (dyn Read + Send)) -> io::Result<()> {
        let chunk = self.chunk(c);
        if self.cache.contains(&chunk.digest) {
            return Ok(());
        }
        let path = &self.reader.index().nodes()[self.refs[c as usize].0].path;
        let context = |e: &dyn std::fmt::Display| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{path} at {}: {e}", chunk.chunk_offset),
            )
        };
        let mut stream = chunk_reader(self.kind, BufReader::with_capacity(64 << 10, member), chunk)
            .map_err(|e| context(&e))?;
        self.cache
            .put_from(&chunk.digest, chunk.chunk_size, &mut stream)
    }

    /// Chunk `c` (and its twins) arrived with a request of `kind` and is in the cache.
    fn stored(&self, c: u32, kind: Kind) {
        let examine = {
            let mut s = lock(&self.shared);
            s.plan.arrived(c, kind);
            s.failures.remove(&c);
            for &t in self.twins.get(&c).into_iter().flatten() {
                s.plan.arrived(t, kind);
                s.failures.remove(&t);
            }
            s.plan.take_examine()
        };
        self.changed.notify_all();
        self.files_complete(examine);
    }

    /// Tells the sink about complete files the plan says are worth a look.
    fn files_complete(&self, files: Vec<u32>) {
        if files.is_empty() {
            return;
        }
        let sink = lock(&self.sink).as_ref().and_then(Weak::upgrade);
        if let (Some(sink), Some(me)) = (sink, self.me.upgrade()) {
            for file in files {
                sink.file_complete(&me, file);
            }
        }
    }

    fn chunk_failed(&self, c: u32, why: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let path = &self.reader.index().nodes()[self.refs[c as usize].0].path;
        tracing::warn!(
            layer = self.name,
            file = path,
            error = why,
            "stargz: a chunk could not be stored"
        );
        let mut s = lock(&self.shared);
        s.failed += 1;
        let n = s.failed;
        s.failures.insert(c, (n, Arc::from(why)));
    }

    /// Makes chunk `c` local: plans it (and whatever the plan fetches with it), waits for
    /// it. A second failure of its fetch while this read waits is the read's error.
    fn ensure_local(&self, c: u32) -> io::Result<()> {
        let mut s = lock(&self.shared);
        let mut seen = s.failed;
        let mut failures = 0;
        let mut rounds = 0;
        let mut waiting: Option<Waiting<'_>> = None;
        loop {
            if let Some((n, why)) = s.failures.get(&c)
                && *n > seen
            {
                seen = *n;
                failures += 1;
                if failures >= 2 {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, why.to_string()));
                }
            }
            match s.plan.state(c) {
                ChunkState::Local => return Ok(()),
                ChunkState::InFlight(id) => {
                    waiting.get_or_insert_with(|| Waiting::new(&self.activity));
                    // Queued behind other bulk requests: a read does not wait in line.
                    if let Some(at) = s.queued.iter().position(|r| r.id == id) {
                        let req = s.queued.remove(at).expect("found above");
                        s.bulk_running += 1;
                        drop(s);
                        self.send(req);
                        s = lock(&self.shared);
                        continue;
                    }
                    s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
                }
                ChunkState::Absent => {
                    // Absent again without a failure of its own: its request was stopped
                    // or it was evicted at once. Bounded all the same.
                    rounds += 1;
                    if rounds > MAX_ROUNDS {
                        self.errors.fetch_add(1, Ordering::Relaxed);
                        return Err(io::Error::other(format!(
                            "chunk at {} could not be fetched in {MAX_ROUNDS} requests",
                            self.map.chunk(c).offset
                        )));
                    }
                    let reqs = s.plan.read(c, self.now());
                    drop(s);
                    self.start_all(reqs);
                    s = lock(&self.shared);
                }
            }
        }
    }

    /// A read of chunk `c`: lets the plan see it (sequential reads request ahead), then
    /// makes it local.
    fn read(&self, c: u32) -> io::Result<()> {
        let (reqs, examine, local) = {
            let mut s = lock(&self.shared);
            let reqs = s.plan.read(c, self.now());
            (
                reqs,
                s.plan.take_examine(),
                s.plan.state(c) == ChunkState::Local,
            )
        };
        self.start_all(reqs);
        // A file fetched on speculation is looked at when it is first read.
        self.files_complete(examine);
        if local {
            return Ok(());
        }
        self.ensure_local(c)
    }

    /// The bytes of chunk `c` when the cache lost them right after they were stored (a
    /// cache smaller than what is being read): one request for the member, decoded in
    /// memory and verified.
    fn read_uncached(&self, c: u32) -> io::Result<Arc<[u8]>> {
        let chunk = self.chunk(c).clone();
        let member = *self.map.chunk(c);
        let fetcher = Arc::clone(&self.fetcher);
        let bytes = self
            .runtime
            .block_on(async move {
                fetcher
                    .fetch(std::slice::from_ref(&(member.offset..member.end)))
                    .await
            })
            .map_err(|e| io::Error::other(crate::error_chain::chain(&e)))?
            .pop()
            .unwrap_or_default();
        let mut out = vec![
            0u8;
            usize::try_from(chunk.chunk_size)
                .map_err(|_| io::Error::other("chunk too large"))?
        ];
        let mut dec = chunk_reader(self.kind, &bytes[..], &chunk)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        dec.read_exact(&mut out)?;
        if strata_formats::Digest::of(&out) != chunk.digest {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("chunk at {} does not match its digest", chunk.offset),
            ));
        }
        Ok(Arc::from(out))
    }

    /// The map's index of `chunk`: chunks are known by where they are in the blob (the
    /// neutral chunk's extent is its TOC member, and the map keeps the TOC's view of it).
    fn index_for(&self, file: &FileRef<'_>, chunk: &FileChunk) -> io::Result<u32> {
        self.map
            .find(chunk.extent.offset, chunk.extent.inner_offset())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{}: no such chunk at {}", file.path, chunk.extent.offset),
                )
            })
    }
}

impl ChunkSource for LayerFetch {
    fn backing_file(&self, file: &FileRef<'_>) -> Option<std::fs::File> {
        self.cache.backing_file(file)
    }

    fn chunk(&self, file: &FileRef<'_>, chunk: &FileChunk) -> io::Result<Arc<[u8]>> {
        let c = self.index_for(file, chunk)?;
        for _ in 0..3 {
            self.read(c)?;
            if let Some(bytes) = self.cache.get_shared(&chunk.digest) {
                return Ok(bytes);
            }
            lock(&self.shared).plan.lost(c);
        }
        self.read_uncached(c)
    }

    fn read_chunk(
        &self,
        file: &FileRef<'_>,
        chunk: &FileChunk,
        range: Range<usize>,
        out: &mut Vec<u8>,
    ) -> io::Result<()> {
        let c = self.index_for(file, chunk)?;
        let on_disk = range.start as u64..range.end as u64;
        for _ in 0..3 {
            self.read(c)?;
            if self.cache.read_range(&chunk.digest, on_disk.clone(), out) {
                return Ok(());
            }
            // Evicted (or found corrupt) since it was stored: fetch it again.
            lock(&self.shared).plan.lost(c);
        }
        let bytes = self.read_uncached(c)?;
        out.extend_from_slice(bytes.get(range).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "range outside the chunk")
        })?);
        Ok(())
    }
}

/// The background fetch of every layer of the provider: one request at a time, round
/// robin over the layers, only while [`Activity`] shows no read waiting for a while, at
/// most [`FetchOptions::background_rate`].
#[derive(Debug)]
pub struct BackgroundFetch {
    layers: Mutex<Vec<Weak<LayerFetch>>>,
    stop: AtomicBool,
}

impl BackgroundFetch {
    /// Starts the background fetch thread.
    pub fn start(activity: Arc<Activity>, options: FetchOptions) -> Arc<Self> {
        let me = Arc::new(Self {
            layers: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&me);
        let spawned = std::thread::Builder::new()
            .name("stargz-background".into())
            .spawn(move || Self::run(&weak, &activity, &options));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "stargz: cannot start the background fetch");
        }
        me
    }

    /// Adds `layer` to what is fetched.
    pub fn add(&self, layer: &Arc<LayerFetch>) {
        let mut layers = lock(&self.layers);
        layers.retain(|l| l.strong_count() > 0);
        layers.push(Arc::downgrade(layer));
    }

    /// Stops the thread (after its current request).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn run(me: &Weak<Self>, activity: &Activity, options: &FetchOptions) {
        let started = Instant::now();
        let mut sent = 0u64;
        let mut next = 0usize;
        let rate = options.background_rate.max(1) as f64;
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let Some(this) = me.upgrade() else { return };
            if this.stop.load(Ordering::Relaxed) {
                return;
            }
            if activity.busy() || activity.quiet_for() < options.background_idle {
                continue;
            }
            if Duration::from_secs_f64(sent as f64 / rate) > started.elapsed() {
                continue;
            }
            let layers: Vec<Arc<LayerFetch>> = lock(&this.layers)
                .iter()
                .filter_map(Weak::upgrade)
                .collect();
            drop(this);
            if layers.is_empty() {
                continue;
            }
            for k in 0..layers.len() {
                let layer = &layers[(next + k) % layers.len()];
                if layer.stop.load(Ordering::Relaxed) {
                    continue;
                }
                if let Some(id) = layer.start_background(options.background_request) {
                    layer.wait_request(id, Duration::from_secs(120));
                    sent += options.background_request;
                    next = (next + k + 1) % layers.len();
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
