//! [`FetchPlan`]: what a lazily mounted layer fetches next, and in which requests — a
//! small, pure component (no I/O, no clock: time is passed in), so that the policy can be
//! unit-tested against recorded access traces (`plan/tests.rs` replays them over a
//! simulated link).
//!
//! Inputs: the layer's chunk map ([`ChunkMap`]: every chunk's compressed span in blob
//! order, which file and directory it belongs to), what is local or in flight, and the
//! reads as they come. Output: [`Request`]s, each one contiguous byte range of the blob
//! whose chunks the caller streams, decodes and stores in order; a read waits for its
//! chunk's request instead of sending its own.
//!
//! The policy, for images without any hint (what `ctr-remote`, nerdctl or BuildKit write):
//!
//! - **A miss fetches the file, not a block.** The missed chunk and the file's following
//!   chunks that are not local go out in one request (up to [`PlanOptions::file_window`]
//!   compressed bytes); a small file's earlier chunks too (a loader reads an ELF file's
//!   end before its middle). One request whatever the chunk size: a file written as one
//!   4 MiB chunk is not fetched 64 KiB at a time.
//! - **The tar order is the access order.** Files are stored directory by directory, so the
//!   files after the missed one are likely read next: the request goes on past the file
//!   over [`PlanOptions::readahead`] bytes of the files that follow it. Reads that keep
//!   walking the blob in that order (`grep -r`, a loader going through a directory) form
//!   a run: reading the middle of its last window requests the next one, twice as large
//!   (up to [`PlanOptions::max_readahead`]), before the reader gets there.
//! - **A directory read twice is read whole.** A second miss in one directory within
//!   [`PlanOptions::hot_window`] (a module loader walking `__pycache__`, a shell running the
//!   tools of `/usr/bin`) fetches the rest of the directory's files, up to
//!   [`PlanOptions::dir_window`] bytes: the part after the miss in the demand's request,
//!   the part before it in a second request sent alongside.
//! - **Sequential reads grow the window.** A file larger than the window is fetched one
//!   window at a time; when a read reaches the middle of the last window, the next one,
//!   twice as large (up to [`PlanOptions::max_window`]), is requested, so the link stays
//!   busy while the reader consumes.
//! - **Speculation is paid for.** Speculative bytes are allowed in proportion to the
//!   bytes reads and hints asked for ([`PlanOptions::ahead_ratio`]) and to the speculative
//!   bytes reads then used ([`PlanOptions::hit_credit`]): read-ahead that hits keeps
//!   going, read-ahead that misses (a shell running scattered tools of `/usr/bin`) stops.
//!   A file fetched on speculation is looked at for hints only once it is read.
//! - **Requests never overlap.** What is local or already in flight is never asked for
//!   again; a run interrupted by such chunks is split, and parts closer than
//!   [`PlanOptions::merge_gap`] are fetched as one span instead (the gap is cheaper than a
//!   request).
//!
//! Requests from the outside — a prioritized range, files a hint names (an ELF file's
//! libraries), the background fetch — go through the same state, so nothing is fetched
//! twice whoever asked first.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use strata_formats::estargz::{Chunk, TocIndex};

/// One chunk of the layer: where its compressed bytes are and whose they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapChunk {
    /// Where its compressed member starts.
    pub offset: u64,
    /// Where the next member starts (the span fetched for it ends here).
    pub end: u64,
    /// Where the chunk starts in its decompressed member (chunks sharing one member).
    pub inner: u64,
    /// The file ([`ChunkMap::file`]) it belongs to.
    pub file: u32,
}

impl MapChunk {
    fn len(&self) -> u64 {
        self.end.saturating_sub(self.offset)
    }
}

/// One regular file with data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapFile {
    /// The TOC node it is.
    pub node: usize,
    /// Its directory (an id shared by the files of one directory).
    pub dir: u32,
    /// Its chunks, in file order (indices into [`ChunkMap::chunk`]).
    pub chunks: Vec<u32>,
}

/// The chunks of a layer in blob order, with the files and directories they belong to.
#[derive(Debug, Clone, Default)]
pub struct ChunkMap {
    chunks: Vec<MapChunk>,
    files: Vec<MapFile>,
    /// TOC node → file, for the nodes that are files with data.
    by_node: HashMap<usize, u32>,
    /// Directory → its files' chunks' span in blob order (first chunk, last chunk).
    dirs: Vec<(u32, u32)>,
}

impl ChunkMap {
    /// The map of `files`: (TOC node id, path, chunks) of every regular file with data.
    /// Chunks keep the TOC's offsets; chunks sharing a member appear once per file.
    pub fn build<'a>(files: impl IntoIterator<Item = (usize, &'a str, &'a [Chunk])>) -> ChunkMap {
        let mut map = ChunkMap::default();
        let mut dir_ids: HashMap<&str, u32> = HashMap::new();
        let mut raw: Vec<(u64, u64, u64, u32, usize)> = Vec::new();
        for (node, path, chunks) in files {
            if chunks.is_empty() {
                continue;
            }
            let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
            let next = dir_ids.len() as u32;
            let dir = *dir_ids.entry(dir).or_insert(next);
            let file = map.files.len() as u32;
            for (i, c) in chunks.iter().enumerate() {
                raw.push((c.offset, c.inner_offset, c.next_offset, file, i));
            }
            map.by_node.insert(node, file);
            map.files.push(MapFile {
                node,
                dir,
                chunks: vec![0; chunks.len()],
            });
        }
        raw.sort_unstable();
        for (idx, &(offset, inner, end, file, i)) in raw.iter().enumerate() {
            map.chunks.push(MapChunk {
                offset,
                end: end.max(offset),
                inner,
                file,
            });
            map.files[file as usize].chunks[i] = idx as u32;
        }
        map.dirs = vec![(u32::MAX, 0); dir_ids.len()];
        for (idx, c) in map.chunks.iter().enumerate() {
            let d = &mut map.dirs[map.files[c.file as usize].dir as usize];
            d.0 = d.0.min(idx as u32);
            d.1 = d.1.max(idx as u32);
        }
        map
    }

    /// The map of a layer's TOC.
    pub fn of_index(index: &TocIndex) -> ChunkMap {
        Self::build(
            index
                .nodes()
                .iter()
                .enumerate()
                .map(|(id, n)| (id, n.path.as_str(), n.chunks.as_slice())),
        )
    }

    /// Chunk `i`.
    pub fn chunk(&self, i: u32) -> &MapChunk {
        &self.chunks[i as usize]
    }

    /// How many chunks.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Whether the layer has no file data.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// File `f`.
    pub fn file(&self, f: u32) -> &MapFile {
        &self.files[f as usize]
    }

    /// The file of TOC node `node`, if it has data.
    pub fn file_of_node(&self, node: usize) -> Option<u32> {
        self.by_node.get(&node).copied()
    }

    /// The chunk whose member starts at `offset`, `inner` bytes into it.
    pub fn find(&self, offset: u64, inner: u64) -> Option<u32> {
        let i = self
            .chunks
            .partition_point(|c| (c.offset, c.inner) < (offset, inner));
        self.chunks
            .get(i)
            .filter(|c| c.offset == offset && c.inner == inner)
            .map(|_| i as u32)
    }

    /// The chunk index of chunk number `nth` (file order) of TOC node `node`.
    pub fn chunk_of(&self, node: usize, nth: usize) -> Option<u32> {
        self.file(self.file_of_node(node)?).chunks.get(nth).copied()
    }

    /// Compressed bytes of all chunks of file `f`.
    fn file_bytes(&self, f: u32) -> u64 {
        self.file(f)
            .chunks
            .iter()
            .map(|&c| self.chunk(c).len())
            .sum()
    }
}

/// Why a request is made: what the read path, the logs and the metrics tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A read is waiting for its first chunk.
    Demand,
    /// Speculative: the files after (or around) a miss.
    Ahead,
    /// The prioritized range (`[0, landmark)`), at mount.
    Prefetch,
    /// Files a hint names (an ELF file's interpreter and libraries).
    Hint,
    /// The rest of the layer while nothing else is fetched.
    Background,
}

/// One range request to make: the chunks it brings, in blob order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Its id (chunks in flight name it).
    pub id: u64,
    /// The blob bytes to ask for: from the first chunk's start to the last one's end.
    pub range: Range<u64>,
    /// The chunks it brings, in blob order.
    pub chunks: Vec<u32>,
    /// Why.
    pub kind: Kind,
}

/// The tuning of [`FetchPlan`]; the defaults are what the recorded traces were tuned on
/// (see the module docs for what each does).
#[derive(Debug, Clone, PartialEq)]
pub struct PlanOptions {
    /// Compressed bytes of one file fetched for a miss, from the missed chunk on.
    pub file_window: u64,
    /// A file at most this large (compressed) is fetched whole on a miss.
    pub small_file: u64,
    /// Compressed bytes of the following files fetched with a miss.
    pub readahead: u64,
    /// Compressed bytes of a hot directory fetched at once.
    pub dir_window: u64,
    /// A second miss in a directory within this time makes it hot.
    pub hot_window: Duration,
    /// Largest window of a sequentially read file.
    pub max_window: u64,
    /// Parts of one request at most this far apart are fetched as one span.
    pub merge_gap: u64,
    /// Largest request of the prioritized range, hints and the background fetch.
    pub bulk_request: u64,
    /// Speculative bytes (read-ahead, hot directories) allowed per byte a read, a hint or
    /// the prioritized range asked for: what bounds the bytes a wrong guess costs.
    pub ahead_ratio: f64,
    /// Speculative bytes allowed before any read earned them.
    pub ahead_allowance: u64,
    /// Speculative bytes allowed per speculative byte a read then used: speculation
    /// that pays keeps going.
    pub hit_credit: f64,
    /// Largest read-ahead window of a run of misses in blob order (files read in the
    /// order they are stored, as `grep -r` or a loader walking a directory does).
    pub max_readahead: u64,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            file_window: 4 << 20,
            small_file: 4 << 20,
            readahead: 32 << 10,
            dir_window: 1280 << 10,
            hot_window: Duration::from_secs(10),
            max_window: 16 << 20,
            merge_gap: 64 << 10,
            bulk_request: 4 << 20,
            ahead_ratio: 0.3,
            ahead_allowance: 256 << 10,
            hit_credit: 2.0,
            max_readahead: 1 << 20,
        }
    }
}

/// Where a chunk is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkState {
    /// Neither local nor asked for.
    Absent,
    /// Coming with request `id`.
    InFlight(u64),
    /// In the cache.
    Local,
}

/// Counters of a plan, for logs, metrics and the tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanStats {
    /// Requests planned.
    pub requests: u64,
    /// Compressed bytes they ask for.
    pub bytes: u64,
    /// Of those, bytes asked for speculatively (read-ahead, hot directories).
    pub ahead_bytes: u64,
    /// Misses: reads that found their chunk neither local nor in flight.
    pub misses: u64,
}

/// Runs of blob-order reads followed at once, at most.
const MAX_RUNS: usize = 4;

/// Reads walking the blob in storage order: the last read-ahead window ends before chunk
/// `next`; reading `trigger` (in that window) requests the next one, `size` bytes.
#[derive(Debug, Clone, Copy)]
struct BlobRun {
    trigger: u32,
    next: u32,
    size: u64,
}

/// The last miss in a directory.
#[derive(Debug, Clone, Copy)]
struct DirMiss {
    when: Duration,
    file: u32,
    /// Fetched whole (as far as the window allowed) since: its misses are plain ones.
    whole: bool,
}

/// A file being read sequentially past its first window.
#[derive(Debug, Clone, Copy)]
struct Stream {
    /// Reaching this chunk (of the file) requests the next window.
    trigger: u32,
    /// The size of the next window.
    next_window: u64,
}

/// The fetch plan of one layer (see the module docs).
#[derive(Debug)]
pub struct FetchPlan {
    map: std::sync::Arc<ChunkMap>,
    state: Vec<ChunkState>,
    opts: PlanOptions,
    next_id: u64,
    /// Requests in flight: id → kind.
    flights: HashMap<u64, Kind>,
    /// Directory → when it last missed, which file, and whether it was fetched whole.
    dir_misses: HashMap<u32, DirMiss>,
    /// File → its sequential read-ahead.
    streams: HashMap<u32, Stream>,
    /// Where the background fetch goes on from.
    background_cursor: usize,
    /// Bytes asked for by reads and hints (what earns speculation), spent on it, and
    /// speculative bytes reads then used.
    earned: u64,
    spent: u64,
    hit: u64,
    /// Chunks fetched on speculation that no read has used yet.
    speculative: Vec<bool>,
    /// Runs of reads in blob order, read ahead of (see [`BlobRun`]).
    runs: Vec<BlobRun>,
    /// Files looked at for hints already, and files to look at next.
    examined: std::collections::HashSet<u32>,
    examine: Vec<u32>,
    stats: PlanStats,
}

impl FetchPlan {
    /// A plan over `map` with nothing local yet.
    pub fn new(map: std::sync::Arc<ChunkMap>, opts: PlanOptions) -> Self {
        let n = map.len();
        Self {
            map,
            state: vec![ChunkState::Absent; n],
            opts,
            next_id: 1,
            flights: HashMap::new(),
            dir_misses: HashMap::new(),
            streams: HashMap::new(),
            background_cursor: 0,
            earned: 0,
            spent: 0,
            hit: 0,
            speculative: vec![false; n],
            runs: Vec::new(),
            examined: std::collections::HashSet::new(),
            examine: Vec::new(),
            stats: PlanStats::default(),
        }
    }

    /// The chunk map.
    pub fn map(&self) -> &std::sync::Arc<ChunkMap> {
        &self.map
    }

    /// Where chunk `c` is.
    pub fn state(&self, c: u32) -> ChunkState {
        self.state[c as usize]
    }

    /// The counters so far.
    pub fn stats(&self) -> PlanStats {
        self.stats
    }

    /// Whether every chunk is local.
    pub fn complete(&self) -> bool {
        self.state.iter().all(|s| *s == ChunkState::Local)
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.flights.len()
    }

    /// The kind of request `id`, while it is in flight.
    pub fn kind_of(&self, id: u64) -> Option<Kind> {
        self.flights.get(&id).copied()
    }

    /// Whether request `id` is in flight.
    pub fn is_in_flight(&self, id: u64) -> bool {
        self.flights.contains_key(&id)
    }

    /// Chunk `c` is local (stored, or found in the cache).
    pub fn stored(&mut self, c: u32) {
        self.state[c as usize] = ChunkState::Local;
    }

    /// Chunk `c` arrived with a request of `kind`. When that completes its file and the
    /// file was asked for (not fetched on speculation), the file is queued to be looked
    /// at for hints ([`Self::take_examine`]); a speculatively fetched file is looked at
    /// when it is first read.
    pub fn arrived(&mut self, c: u32, kind: Kind) {
        self.stored(c);
        if matches!(kind, Kind::Demand | Kind::Hint | Kind::Prefetch)
            && !self.speculative[c as usize]
        {
            self.queue_examine(self.map.chunk(c).file);
        }
    }

    /// Queues file `f` for [`Self::take_examine`] if it is complete and was not yet.
    fn queue_examine(&mut self, f: u32) {
        if !self.examined.contains(&f)
            && self
                .map
                .file(f)
                .chunks
                .iter()
                .all(|&x| self.state(x) == ChunkState::Local)
        {
            self.examined.insert(f);
            self.examine.push(f);
        }
    }

    /// Files that are complete and were asked for, to look at for hints (each once).
    pub fn take_examine(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.examine)
    }

    /// Speculative bytes that may still be spent.
    fn ahead_left(&self) -> u64 {
        let allowed = self.opts.ahead_allowance as f64
            + self.earned as f64 * self.opts.ahead_ratio
            + self.hit as f64 * self.opts.hit_credit;
        (allowed as u64).saturating_sub(self.spent)
    }

    /// Chunk `c` is not local after all (evicted, or its fetch failed): a read plans it
    /// again.
    pub fn lost(&mut self, c: u32) {
        self.state[c as usize] = ChunkState::Absent;
    }

    /// Request `id` is over: its chunks that did not arrive are absent again.
    pub fn finished(&mut self, id: u64) {
        if self.flights.remove(&id).is_none() {
            return;
        }
        for s in &mut self.state {
            if *s == ChunkState::InFlight(id) {
                *s = ChunkState::Absent;
            }
        }
    }

    /// A read of chunk `c` at time `now`: the requests to start (none when the chunk is
    /// local or in flight and no read-ahead is due). The reader then waits until the chunk
    /// is local, or absent again (its request failed).
    pub fn read(&mut self, c: u32, now: Duration) -> Vec<Request> {
        let mut out = Vec::new();
        let file = self.map.chunk(c).file;
        if std::mem::take(&mut self.speculative[c as usize]) {
            self.hit += self.map.chunk(c).len();
        }
        match self.state(c) {
            ChunkState::Absent => {
                self.stats.misses += 1;
                self.plan_miss(c, now, &mut out);
            }
            ChunkState::Local => self.queue_examine(file),
            ChunkState::InFlight(_) => {}
        }
        self.advance_stream(file, c, &mut out);
        self.advance_run(c, &mut out);
        out
    }

    /// The miss of chunk `c` (see the module docs).
    fn plan_miss(&mut self, c: u32, now: Duration, out: &mut Vec<Request>) {
        let map = std::sync::Arc::clone(&self.map);
        let file = map.chunk(c).file;
        let f = map.file(file);
        let pos = f.chunks.iter().position(|&x| x == c).unwrap_or(0);
        let small = map.file_bytes(file) <= self.opts.small_file;
        // The file from the missed chunk on, up to the window.
        let mut demand = vec![c];
        let mut span = map.chunk(c).len();
        let mut last_pos = pos;
        for (k, &next) in f.chunks.iter().enumerate().skip(pos + 1) {
            if self.state(next) != ChunkState::Absent {
                if self.state(next) == ChunkState::Local {
                    continue;
                }
                break;
            }
            span += map.chunk(next).len();
            if span > self.opts.file_window && !small {
                break;
            }
            demand.push(next);
            last_pos = k;
        }
        if last_pos + 1 < f.chunks.len() {
            // More of the file than one window: read sequentially, it gets the next one.
            let trigger = f.chunks[(pos + last_pos).div_ceil(2).max(pos)];
            self.streams.insert(
                file,
                Stream {
                    trigger,
                    next_window: (self.opts.file_window * 2).min(self.opts.max_window),
                },
            );
        }
        // A small file's chunks before the miss, in a request of their own.
        let before: Vec<u32> = if small {
            f.chunks[..pos]
                .iter()
                .copied()
                .filter(|&x| self.state(x) == ChunkState::Absent)
                .collect()
        } else {
            Vec::new()
        };
        // The files after it (and for a hot directory, before it).
        let dir = f.dir;
        // Hot: another file of it missed lately (a miss of the same file again, say after
        // a failed fetch, is no news about the directory).
        let last = self.dir_misses.get(&dir).copied();
        let hot = last.is_some_and(|m| {
            !m.whole && m.file != file && now.saturating_sub(m.when) <= self.opts.hot_window
        });
        self.dir_misses.insert(
            dir,
            DirMiss {
                when: now,
                file,
                whole: last.is_some_and(|m| m.whole),
            },
        );
        let (ahead_after, ahead_before) = if hot {
            self.dir_ahead(c, dir)
        } else {
            (self.readahead_after(c, file), Vec::new())
        };
        self.mark(&mut demand, Kind::Demand, &ahead_after, out);
        if !before.is_empty() {
            let mut before = before;
            self.mark(&mut before, Kind::Demand, &[], out);
        }
        if !ahead_before.is_empty() {
            let mut ahead_before = ahead_before;
            self.mark(&mut ahead_before, Kind::Ahead, &[], out);
        }
    }

    /// The absent chunks after file `file` (ending with chunk `c`'s file) in blob order,
    /// up to the read-ahead.
    fn readahead_after(&mut self, c: u32, file: u32) -> Vec<u32> {
        let start = self
            .map
            .file(file)
            .chunks
            .iter()
            .copied()
            .max()
            .unwrap_or(c)
            + 1;
        // A miss right where the last window of a run ended: the reader outran it; the
        // run goes on with a window twice as large.
        let size = match self
            .runs
            .iter()
            .position(|r| r.next <= start && start <= r.next + 8)
        {
            Some(i) => {
                let run = self.runs.remove(i);
                (run.size * 2).min(self.opts.max_readahead)
            }
            None => self.opts.readahead,
        };
        let out = self.window_from(start, Some(file), size);
        self.start_run(&out, size);
        out
    }

    /// Absent chunks from chunk `start` on in blob order, skipping `skip`'s and local
    /// ones, stopping at one in flight, up to `size` bytes and the speculation left.
    fn window_from(&self, start: u32, skip: Option<u32>, size: u64) -> Vec<u32> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let limit = size.min(self.ahead_left());
        for i in start as usize..self.map.len() {
            let ch = self.map.chunk(i as u32);
            if Some(ch.file) == skip {
                continue;
            }
            match self.state[i] {
                ChunkState::Absent => {}
                ChunkState::Local => continue,
                ChunkState::InFlight(_) => break,
            }
            bytes += ch.len();
            if bytes > limit {
                break;
            }
            out.push(i as u32);
        }
        out
    }

    /// Remembers a read-ahead window as the head of a run: reading its middle requests
    /// the next one.
    fn start_run(&mut self, window: &[u32], size: u64) {
        let (Some(&first), Some(&last)) = (window.first(), window.last()) else {
            return;
        };
        let trigger = window[window.len() / 2].max(first);
        if self.runs.len() >= MAX_RUNS {
            self.runs.remove(0);
        }
        self.runs.push(BlobRun {
            trigger,
            next: last + 1,
            size,
        });
    }

    /// A read of chunk `c`: when it is the trigger of a run, the run's next window.
    fn advance_run(&mut self, c: u32, out: &mut Vec<Request>) {
        let Some(i) = self.runs.iter().position(|r| r.trigger == c) else {
            return;
        };
        let run = self.runs.remove(i);
        let size = (run.size * 2).min(self.opts.max_readahead);
        let mut window = self.window_from(run.next, None, size);
        if window.is_empty() {
            return;
        }
        self.start_run(&window, size);
        self.mark(&mut window, Kind::Ahead, &[], out);
    }

    /// For a hot directory: its absent chunks after and before `c`, the after part first
    /// (nearest first), together at most the directory window.
    fn dir_ahead(&mut self, c: u32, dir: u32) -> (Vec<u32>, Vec<u32>) {
        let (first, last) = self.map.dirs[dir as usize];
        let file = self.map.chunk(c).file;
        let in_dir = |i: u32| {
            let ch = self.map.chunk(i);
            ch.file != file
                && self.map.file(ch.file).dir == dir
                && self.state(i) == ChunkState::Absent
        };
        let mut budget = self.opts.dir_window.min(self.ahead_left());
        let mut after = Vec::new();
        for i in c + 1..=last {
            if in_dir(i) {
                let len = self.map.chunk(i).len();
                if len > budget {
                    break;
                }
                budget -= len;
                after.push(i);
            }
        }
        let mut before = Vec::new();
        for i in (first..c).rev() {
            if in_dir(i) {
                let len = self.map.chunk(i).len();
                if len > budget {
                    break;
                }
                budget -= len;
                before.push(i);
            }
        }
        before.reverse();
        if let Some(entry) = self.dir_misses.get_mut(&dir) {
            entry.whole = true;
        }
        (after, before)
    }

    /// A read of chunk `c` of `file`: the next window of a sequential read when due.
    fn advance_stream(&mut self, file: u32, c: u32, out: &mut Vec<Request>) {
        let Some(stream) = self.streams.get(&file).copied() else {
            return;
        };
        let map = std::sync::Arc::clone(&self.map);
        let chunks = &map.file(file).chunks;
        let (Some(at), Some(trigger)) = (
            chunks.iter().position(|&x| x == c),
            chunks.iter().position(|&x| x == stream.trigger),
        ) else {
            return;
        };
        if at < trigger {
            return;
        }
        // The next window: the file's first absent chunks after the ones in flight or local.
        let mut window = Vec::new();
        let mut span = 0;
        let mut first = None;
        for (k, &next) in chunks.iter().enumerate().skip(at + 1) {
            match self.state(next) {
                ChunkState::Absent => {}
                _ if window.is_empty() => continue,
                _ => break,
            }
            span += map.chunk(next).len();
            if !window.is_empty() && span > stream.next_window {
                break;
            }
            first.get_or_insert(k);
            window.push(next);
        }
        match (window.last().copied(), first) {
            (Some(last), Some(first)) => {
                let last_pos = chunks.iter().position(|&x| x == last).unwrap_or(first);
                if last_pos + 1 < chunks.len() {
                    let trigger = chunks[(first + last_pos).div_ceil(2)];
                    self.streams.insert(
                        file,
                        Stream {
                            trigger,
                            next_window: (stream.next_window * 2).min(self.opts.max_window),
                        },
                    );
                } else {
                    self.streams.remove(&file);
                }
                self.mark(&mut window, Kind::Ahead, &[], out);
            }
            _ => {
                if chunks[at..]
                    .iter()
                    .all(|&x| self.state(x) != ChunkState::Absent)
                {
                    self.streams.remove(&file);
                }
            }
        }
    }

    /// The requests for the prioritized range `[0, end)`: its absent chunks, in requests
    /// of at most [`PlanOptions::bulk_request`] bytes.
    pub fn prefetch(&mut self, end: u64) -> Vec<Request> {
        let chunks: Vec<u32> = (0..self.map.len() as u32)
            .filter(|&i| self.map.chunk(i).end <= end && self.state(i) == ChunkState::Absent)
            .collect();
        self.bulk(chunks, Kind::Prefetch)
    }

    /// Marks the chunks wholly inside `range` that are absent as coming with one request
    /// already on its way (started before the chunk map was known, e.g. from a
    /// prefetch-end hint), and returns that request.
    pub fn adopt(&mut self, range: Range<u64>, kind: Kind) -> Request {
        let chunks: Vec<u32> = (0..self.map.len() as u32)
            .filter(|&i| {
                let ch = self.map.chunk(i);
                range.start <= ch.offset
                    && ch.end <= range.end
                    && self.state(i) == ChunkState::Absent
            })
            .collect();
        let id = self.new_id(kind);
        for &c in &chunks {
            self.state[c as usize] = ChunkState::InFlight(id);
        }
        self.stats.requests += 1;
        self.stats.bytes += range.end - range.start;
        self.earned += range.end - range.start;
        Request {
            id,
            range,
            chunks,
            kind,
        }
    }

    /// The requests for whole files (a hint): every absent chunk of each, one request per
    /// run of neighbouring chunks.
    pub fn files(&mut self, files: &[u32], kind: Kind) -> Vec<Request> {
        let mut chunks: Vec<u32> = files
            .iter()
            .flat_map(|&f| self.map.file(f).chunks.clone())
            .collect();
        let mut out = Vec::new();
        self.mark(&mut chunks, kind, &[], &mut out);
        out
    }

    /// The next background request: the first absent chunks in blob order, up to `max`
    /// bytes; `None` once everything is local or in flight.
    pub fn background(&mut self, max: u64) -> Option<Request> {
        let n = self.map.len();
        while self.background_cursor < n && self.state[self.background_cursor] != ChunkState::Absent
        {
            self.background_cursor += 1;
        }
        if self.background_cursor >= n {
            // Chunks that failed or were evicted behind the cursor: look again once.
            self.background_cursor = self.state.iter().position(|s| *s == ChunkState::Absent)?;
        }
        let mut chunks = Vec::new();
        let mut bytes = 0;
        for i in self.background_cursor..n {
            if self.state[i] != ChunkState::Absent {
                break;
            }
            let len = self.map.chunk(i as u32).len();
            if !chunks.is_empty() && bytes + len > max {
                break;
            }
            bytes += len;
            chunks.push(i as u32);
        }
        let mut out = Vec::new();
        self.mark(&mut chunks, Kind::Background, &[], &mut out);
        out.into_iter().next()
    }

    /// Splits blob-ordered absent chunks into requests of about the bulk size.
    fn bulk(&mut self, chunks: Vec<u32>, kind: Kind) -> Vec<Request> {
        let mut out = Vec::new();
        let mut group: Vec<u32> = Vec::new();
        let mut start = 0;
        for c in chunks {
            let ch = *self.map.chunk(c);
            if !group.is_empty() && ch.end.saturating_sub(start) > self.opts.bulk_request {
                let mut g = std::mem::take(&mut group);
                self.mark(&mut g, kind, &[], &mut out);
            }
            if group.is_empty() {
                start = ch.offset;
            }
            group.push(c);
        }
        if !group.is_empty() {
            self.mark(&mut group, kind, &[], &mut out);
        }
        out
    }

    fn new_id(&mut self, kind: Kind) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.flights.insert(id, kind);
        id
    }

    /// Turns `chunks` (absent, the first one the reason for the request) plus `ahead`
    /// (speculative, after them in blob order) into requests: sorted, split where the
    /// bytes between two of them would be a gap of more than the merge gap or would cross
    /// a chunk that is local or in flight; the part holding the first of `chunks` keeps
    /// `kind`, the others are [`Kind::Ahead`] unless they hold `chunks` too.
    fn mark(&mut self, chunks: &mut Vec<u32>, kind: Kind, ahead: &[u32], out: &mut Vec<Request>) {
        let lead: std::collections::HashSet<u32> = chunks.iter().copied().collect();
        chunks.extend_from_slice(ahead);
        chunks.retain(|&c| self.state(c) == ChunkState::Absent);
        chunks.sort_unstable();
        chunks.dedup();
        if chunks.is_empty() {
            return;
        }
        let mut groups: Vec<Vec<u32>> = vec![vec![chunks[0]]];
        for w in chunks.windows(2) {
            let (a, b) = (*self.map.chunk(w[0]), *self.map.chunk(w[1]));
            let gap = b.offset.saturating_sub(a.end);
            let crosses = (w[0] + 1..w[1]).any(|i| {
                let ch = self.map.chunk(i);
                ch.offset >= a.end && ch.end <= b.offset && self.state(i) != ChunkState::Absent
            });
            if gap > self.opts.merge_gap || crosses {
                groups.push(Vec::new());
            }
            groups.last_mut().expect("one group at least").push(w[1]);
        }
        let mut made = Vec::with_capacity(groups.len());
        for g in groups {
            let k = if g.iter().any(|c| lead.contains(c)) {
                kind
            } else {
                Kind::Ahead
            };
            let range = self.map.chunk(g[0]).offset
                ..g.iter().map(|&c| self.map.chunk(c).end).max().unwrap_or(0);
            let id = self.new_id(k);
            for &c in &g {
                self.state[c as usize] = ChunkState::InFlight(id);
            }
            let bytes = range.end - range.start;
            self.stats.requests += 1;
            self.stats.bytes += bytes;
            for &c in &g {
                if k == Kind::Ahead || !lead.contains(&c) {
                    self.speculative[c as usize] = true;
                }
            }
            let ahead: u64 = if k == Kind::Ahead {
                bytes
            } else {
                g.iter()
                    .filter(|c| !lead.contains(c))
                    .map(|&c| self.map.chunk(c).len())
                    .sum()
            };
            self.stats.ahead_bytes += ahead;
            self.spent += ahead;
            if matches!(kind, Kind::Demand | Kind::Hint | Kind::Prefetch) {
                self.earned += bytes - ahead;
            }
            made.push(Request {
                id,
                range,
                chunks: g,
                kind: k,
            });
        }
        // The request holding the reason goes first (started first).
        if let Some(p) = made.iter().position(|r| r.kind == kind) {
            let r = made.remove(p);
            made.insert(0, r);
        }
        out.extend(made);
    }
}

#[cfg(test)]
mod tests;
