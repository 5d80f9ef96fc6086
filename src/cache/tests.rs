//! Tests of the chunk cache: storing and checking chunks, eviction, recovery at open,
//! assembled files for passthrough, prefetch.

use super::*;

/// The name of a temporary file whose writer is gone (a process that has exited).
fn abandoned_temp() -> String {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    format!(".tmp-{pid}-0")
}

fn chunk(n: u8, len: usize) -> (Digest, Vec<u8>) {
    let bytes = vec![n; len];
    (Digest::of(&bytes), bytes)
}

#[test]
fn put_get_and_wrong_digest_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ChunkCache::open(dir.path(), 1 << 20).unwrap();
    let (d, b) = chunk(1, 1000);
    assert!(cache.get(&d).is_none());
    cache.put(&d, &b).unwrap();
    assert_eq!(cache.get(&d).as_deref(), Some(&b[..]));
    let (other, _) = chunk(2, 10);
    let err = cache.put(&other, &b).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(cache.get(&other).is_none());
    let s = cache.stats();
    assert_eq!((s.hits, s.misses, s.stored, s.bytes), (1, 2, 1, 1000));
}

#[test]
fn prefetch_is_for_stored_chunks_only_and_serves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ChunkCache::open(dir.path(), 1 << 20).unwrap();
    let (d, b) = chunk(1, 1000);
    assert!(!cache.prefetch(&d), "not stored");
    cache.put(&d, &b).unwrap();
    let before = cache.stats();
    assert!(cache.prefetch(&d));
    let after = cache.stats();
    assert_eq!((before.hits, before.misses), (after.hits, after.misses));
    std::fs::remove_file(cache.path(&d)).unwrap();
    assert!(!cache.prefetch(&d), "its file is gone");
}

#[test]
fn least_recently_used_is_evicted_and_a_read_refreshes() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ChunkCache::open(dir.path(), 3000).unwrap();
    let (a, ab) = chunk(1, 1000);
    let (b, bb) = chunk(2, 1000);
    let (c, cb) = chunk(3, 1000);
    let (d, db) = chunk(4, 1000);
    cache.put(&a, &ab).unwrap();
    cache.put(&b, &bb).unwrap();
    cache.put(&c, &cb).unwrap();
    assert!(cache.get(&a).is_some(), "a is now the most recent");
    cache.put(&d, &db).unwrap();
    assert!(cache.get(&b).is_none(), "b was least recently used");
    for (digest, bytes) in [(&a, &ab), (&c, &cb), (&d, &db)] {
        assert_eq!(cache.get(digest).as_deref(), Some(&bytes[..]));
    }
    assert_eq!(cache.stats().evictions, 1);
    assert_eq!(cache.stats().bytes, 3000);
}

#[test]
fn reopen_keeps_chunks_drops_temp_files_and_never_serves_a_torn_one() {
    let dir = tempfile::tempdir().unwrap();
    let (a, ab) = chunk(1, 4096);
    let (b, bb) = chunk(2, 4096);
    let temp = abandoned_temp();
    {
        let cache = ChunkCache::open(dir.path(), 1 << 20).unwrap();
        cache.put(&a, &ab).unwrap();
        cache.put(&b, &bb).unwrap();
        // A crash mid-write leaves a temporary file; a power cut can tear a stored one.
        let fan = cache.path(&a).parent().unwrap().to_path_buf();
        std::fs::write(fan.join(&temp), b"partial").unwrap();
        std::fs::write(cache.path(&b), &bb[..100]).unwrap();
    }
    let cache = ChunkCache::open(dir.path(), 1 << 20).unwrap();
    assert!(!cache.path(&a).parent().unwrap().join(&temp).exists());
    assert_eq!(cache.get(&a).as_deref(), Some(&ab[..]));
    assert!(cache.get(&b).is_none(), "a torn chunk is a miss");
    assert!(!cache.path(&b).exists(), "and is removed");
    assert_eq!(cache.stats().corrupt, 1);
    cache.put(&b, &bb).unwrap();
    assert_eq!(cache.get(&b).as_deref(), Some(&bb[..]));
}

#[test]
fn concurrent_use_never_returns_wrong_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ChunkCache::open(dir.path(), 20_000).unwrap();
    let chunks: Vec<(Digest, Vec<u8>)> = (0..40u8).map(|n| chunk(n, 1000 + n as usize)).collect();
    std::thread::scope(|s| {
        for t in 0..4 {
            let (cache, chunks) = (&cache, &chunks);
            s.spawn(move || {
                for round in 0..200 {
                    let (d, b) = &chunks[(round * 7 + t * 13) % chunks.len()];
                    match cache.get(d) {
                        Some(got) => assert_eq!(&got, b),
                        None => cache.put(d, b).unwrap(),
                    }
                }
            });
        }
    });
    assert!(cache.stats().bytes <= 20_000);
    assert!(cache.stats().evictions > 0);
}

/// A file made of `chunks`, as the FUSE layer describes it to a chunk source.
struct TestFile {
    size: u64,
    chunks: Vec<FileChunk>,
}

impl TestFile {
    fn file(&self) -> strata_fuse::FileRef<'_> {
        strata_fuse::FileRef {
            layer: "l",
            path: "f",
            ino: 2,
            size: self.size,
            chunks: &self.chunks,
        }
    }
}

fn file_node(chunks: &[(Digest, Vec<u8>)]) -> TestFile {
    let mut offset = 0;
    let chunks: Vec<FileChunk> = chunks
        .iter()
        .map(|(d, b)| {
            let size = b.len() as u64;
            let c = FileChunk {
                offset,
                size,
                extent: strata_formats::layer_index::Extent {
                    offset,
                    len: size,
                    encoding: strata_formats::layer_index::Encoding::Raw,
                },
                digest: d.clone(),
            };
            offset += size;
            c
        })
        .collect();
    TestFile {
        size: offset,
        chunks,
    }
}

#[test]
fn backing_file_only_when_every_chunk_is_cached() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let cache = ChunkCache::open(dir.path(), 1 << 20).unwrap();
    let parts = [chunk(1, 3000), chunk(2, 1000), chunk(3, 17)];
    let node = file_node(&parts);
    cache.put(&parts[0].0, &parts[0].1).unwrap();
    cache.put(&parts[2].0, &parts[2].1).unwrap();
    assert!(
        cache.backing_file(&node.file()).is_none(),
        "a chunk is missing"
    );
    cache.put(&parts[1].0, &parts[1].1).unwrap();
    let mut got = Vec::new();
    cache
        .backing_file(&node.file())
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    let want: Vec<u8> = parts.iter().flat_map(|(_, b)| b.iter().copied()).collect();
    assert_eq!(got, want);
    // Assembled once, then reused; a torn copy (wrong size) is rebuilt.
    let files: Vec<_> = std::fs::read_dir(dir.path().join("files"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1);
    std::fs::write(&files[0], b"torn").unwrap();
    got.clear();
    cache
        .backing_file(&node.file())
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    assert_eq!(got, want);
    // One chunk: the chunk file itself.
    let single = file_node(&parts[1..2]);
    got.clear();
    cache
        .backing_file(&single.file())
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    assert_eq!(got, parts[1].1);
    // The file's size must agree with the chunks.
    let mut short = file_node(&parts);
    short.size -= 1;
    assert!(cache.backing_file(&short.file()).is_none());
}

#[test]
fn ranges_are_read_from_disk_and_files_from_before_are_checked_first() {
    let dir = tempfile::tempdir().unwrap();
    let ab: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let a = Digest::of(&ab);
    let (b, bb) = chunk(8, 5000);
    {
        let cache = ChunkCache::open(dir.path(), 1 << 20).unwrap();
        cache.put(&a, &ab).unwrap();
        cache.put(&b, &bb).unwrap();
        let mut out = b"head".to_vec();
        assert!(cache.read_range(&a, 70_000..70_010, &mut out));
        assert_eq!(&out[4..], &ab[70_000..70_010]);
        // Damage b behind the cache's back, same size: this process wrote it, so the
        // range is served as is (the page cache is the memory here, not a copy).
        std::fs::write(cache.path(&b), vec![0u8; 5000]).unwrap();
    }
    let cache = ChunkCache::open(dir.path(), 1 << 20).unwrap();
    let mut out = Vec::new();
    assert!(
        !cache.read_range(&b, 0..10, &mut out),
        "a file from before is checked before its first use"
    );
    assert!(out.is_empty());
    assert!(!cache.path(&b).exists(), "and removed when damaged");
    assert_eq!(cache.stats().corrupt, 1);
    assert!(cache.read_range(&a, 0..100_000, &mut out));
    assert_eq!(out, ab);
    let mut tail = Vec::new();
    assert!(cache.read_range(&a, 99_990..100_000, &mut tail));
    assert_eq!(tail, &ab[99_990..]);
    assert!(
        !cache.read_range(&a, 99_990..100_001, &mut tail),
        "past the end"
    );
    assert_eq!(tail.len(), 10);
}

#[test]
fn streamed_puts_store_only_exact_verified_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let cache = ChunkCache::open(dir.path(), 1 << 20).unwrap();
    let (d, b) = chunk(9, 200_000);
    let short = cache.put_from(&d, 200_000, &mut &b[..199_999]).unwrap_err();
    assert_eq!(short.kind(), io::ErrorKind::InvalidData);
    let mut long = b.clone();
    long.push(9);
    assert!(
        cache.put_from(&d, 200_000, &mut &long[..]).is_err(),
        "more bytes than the chunk"
    );
    let mut flipped = b.clone();
    flipped[1000] ^= 1;
    assert!(cache.put_from(&d, 200_000, &mut &flipped[..]).is_err());
    assert!(!cache.contains(&d) && cache.stats().stored == 0);
    let fan = cache.path(&d).parent().unwrap().to_path_buf();
    assert_eq!(
        std::fs::read_dir(&fan).unwrap().count(),
        0,
        "no temporary file left"
    );
    cache.put_from(&d, 200_000, &mut &b[..]).unwrap();
    let mut out = Vec::new();
    assert!(cache.read_range(&d, 0..200_000, &mut out));
    assert_eq!(out, b);
    // Stored already: the stream is not read.
    cache.put_from(&d, 200_000, &mut &[][..]).unwrap();
    assert_eq!(cache.stats().stored, 1);
}

#[test]
fn assembled_files_count_in_the_bound_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let parts = [chunk(1, 1000), chunk(2, 1000)];
    let node = file_node(&parts);
    let temp = abandoned_temp();
    {
        let cache = ChunkCache::open(dir.path(), 10_000).unwrap();
        for (d, b) in &parts {
            cache.put(d, b).unwrap();
        }
        assert!(cache.backing_file(&node.file()).is_some());
        assert_eq!(
            cache.stats().bytes,
            4000,
            "two chunks and the assembled copy"
        );
        std::fs::write(dir.path().join("files").join(&temp), b"partial").unwrap();
    }
    let cache = ChunkCache::open(dir.path(), 10_000).unwrap();
    assert_eq!(cache.stats().bytes, 4000);
    assert!(
        !dir.path().join("files").join(&temp).exists(),
        "a crash's temporary copy is removed"
    );
    // Newer chunks push the copy (least recently used) out, file and all.
    for n in 10..19u8 {
        let (d, b) = chunk(n, 1000);
        cache.put(&d, &b).unwrap();
    }
    assert!(cache.stats().bytes <= 10_000);
    assert_eq!(
        std::fs::read_dir(dir.path().join("files")).unwrap().count(),
        0,
        "the copy was evicted"
    );
}

/// Flips one bit in the middle of `path`, keeping its size.
fn flip_middle(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

fn assembled_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("files"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

fn read_all(mut f: std::fs::File) -> Vec<u8> {
    let mut out = Vec::new();
    io::Read::read_to_end(&mut f, &mut out).unwrap();
    out
}

/// A cache holding `parts` and the assembled copy of the file they make, written by a
/// process that then ended; returns the file's node and bytes.
fn filled(dir: &Path, parts: &[(Digest, Vec<u8>)]) -> (TestFile, Vec<u8>) {
    let node = file_node(parts);
    let cache = ChunkCache::open(dir, 1 << 20).unwrap();
    for (d, b) in parts {
        cache.put(d, b).unwrap();
    }
    let whole: Vec<u8> = parts.iter().flat_map(|(_, b)| b.iter().copied()).collect();
    assert_eq!(read_all(cache.backing_file(&node.file()).unwrap()), whole);
    (node, whole)
}

#[test]
fn a_same_size_flip_in_an_assembled_copy_is_never_handed_out_after_a_restart() {
    let parts = [chunk(1, 3000), chunk(2, 5000)];
    // Damaged while no process ran (a power cut, a bit flip), or after the new process
    // opened the cache but before its first use of the copy: both are caught.
    for damage_after_open in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (node, whole) = filled(dir.path(), &parts);
        let copy = &assembled_files(dir.path())[0];
        if !damage_after_open {
            flip_middle(copy);
        }
        let cache = ChunkCache::open(dir.path(), 1 << 20).unwrap();
        if damage_after_open {
            flip_middle(copy);
        }
        let got = read_all(cache.backing_file(&node.file()).unwrap());
        assert_eq!(
            got, whole,
            "rebuilt from the chunks, never the damaged copy"
        );
        assert_eq!(cache.stats().corrupt, 1);
        assert_eq!(cache.stats().bytes, 16_000, "counted once, at its size");
        // Checked once per process: the next use opens the rebuilt copy as is.
        assert_eq!(read_all(cache.backing_file(&node.file()).unwrap()), whole);
        assert_eq!(cache.stats().corrupt, 1);
    }
}

#[test]
fn an_intact_copy_from_before_is_hashed_once_then_reused() {
    let dir = tempfile::tempdir().unwrap();
    let parts = [chunk(3, 4096), chunk(4, 4096), chunk(5, 10)];
    let (node, whole) = filled(dir.path(), &parts);
    let copy = assembled_files(dir.path())[0].clone();
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let before = inode(&copy);
    let cache = ChunkCache::open(dir.path(), 1 << 20).unwrap();
    assert_eq!(read_all(cache.backing_file(&node.file()).unwrap()), whole);
    assert_eq!(inode(&copy), before, "reused, not rebuilt");
    assert_eq!(cache.stats().corrupt, 0);
    // The copy's descriptor is handed out at offset 0 after the check.
    let f = cache.backing_file(&node.file()).unwrap();
    assert_eq!(io::Seek::stream_position(&mut &f).unwrap(), 0);
}

#[test]
fn same_size_flips_in_chunks_and_copy_after_a_restart_are_misses_never_bytes() {
    let parts = [chunk(6, 3000), chunk(7, 5000)];
    for damage_after_open in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let (node, _) = filled(dir.path(), &parts);
        let single = file_node(&parts[1..]);
        let mut damaged: Vec<PathBuf> = assembled_files(dir.path());
        let cache = ChunkCache::open(dir.path(), 1 << 20).unwrap();
        damaged.extend(parts.iter().map(|(d, _)| cache.path(d)));
        drop(cache);
        if !damage_after_open {
            damaged.iter().for_each(|p| flip_middle(p));
        }
        let cache = ChunkCache::open(dir.path(), 1 << 20).unwrap();
        if damage_after_open {
            damaged.iter().for_each(|p| flip_middle(p));
        }
        // Each way to a cached byte: passthrough of a whole file (assembled, or the
        // chunk file itself for a one-chunk file), a range, a whole chunk.
        assert!(cache.backing_file(&node.file()).is_none());
        assert!(cache.backing_file(&single.file()).is_none());
        let mut out = Vec::new();
        assert!(!cache.read_range(&parts[0].0, 0..10, &mut out));
        assert!(out.is_empty());
        assert!(cache.get(&parts[1].0).is_none());
        assert!(damaged.iter().all(|p| !p.exists()), "damaged files removed");
        assert_eq!(cache.stats().corrupt, 3);
        assert_eq!(cache.stats().bytes, 0);
        // The caller fetches again; then the right bytes.
        for (d, b) in &parts {
            cache.put(d, b).unwrap();
        }
        let whole: Vec<u8> = parts.iter().flat_map(|(_, b)| b.iter().copied()).collect();
        assert_eq!(read_all(cache.backing_file(&node.file()).unwrap()), whole);
        assert_eq!(
            read_all(cache.backing_file(&single.file()).unwrap()),
            parts[1].1
        );
    }
}

/// Bytes of the chunks and assembled copies under cache directory `dir` (temporary files
/// are not counted).
fn stored_bytes(dir: &Path) -> u64 {
    super::rescan::scan(dir)
        .unwrap()
        .iter()
        .map(|f| f.size)
        .sum()
}

fn usage_counter(dir: &Path) -> u64 {
    u64::from_le_bytes(
        std::fs::read(dir.join("usage")).unwrap()[..8]
            .try_into()
            .unwrap(),
    )
}

#[test]
fn two_processes_on_one_directory_stay_under_one_bound() {
    let dir = tempfile::tempdir().unwrap();
    // Two opens of a directory know each other only through it, as two processes do.
    let a = ChunkCache::open(dir.path(), 10_000).unwrap();
    let b = ChunkCache::open(dir.path(), 10_000).unwrap();
    let chunks: Vec<_> = (0..30u8).map(|n| chunk(n, 1000)).collect();
    for (n, (d, bytes)) in chunks.iter().enumerate() {
        let cache = if n % 2 == 0 { &a } else { &b };
        cache.put(d, bytes).unwrap();
        let held = stored_bytes(dir.path());
        assert!(
            held <= 10_000,
            "after {} puts the directory holds {held}",
            n + 1
        );
        assert_eq!(
            usage_counter(dir.path()),
            held,
            "the shared counter is exact"
        );
    }
    for (d, bytes) in &chunks {
        for cache in [&a, &b] {
            if let Some(got) = cache.get(d) {
                assert_eq!(&got, bytes);
            }
        }
    }
    let (last, bytes) = &chunks[29];
    assert_eq!(b.get(last).as_ref(), Some(bytes), "the newest chunk stays");
    assert!(a.stats().evictions + b.stats().evictions >= 20);
}

#[test]
fn a_rescan_finds_other_processes_chunks_and_evicts_the_oldest_of_all() {
    let dir = tempfile::tempdir().unwrap();
    let a = ChunkCache::open(dir.path(), 10_000).unwrap();
    let b = ChunkCache::open(dir.path(), 10_000).unwrap();
    let theirs: Vec<_> = (0..10u8).map(|n| chunk(n, 1000)).collect();
    for (d, bytes) in &theirs {
        b.put(d, bytes).unwrap();
    }
    let (mine, bytes) = chunk(100, 1000);
    // a's own index holds 1000 bytes: only the shared counter says the directory is full.
    a.put(&mine, bytes.as_slice()).unwrap();
    assert!(stored_bytes(dir.path()) <= 10_000);
    assert!(a.contains(&mine));
    assert!(
        !b.path(&theirs[0].0).exists(),
        "the oldest of all is evicted"
    );
    assert!(
        a.contains(&theirs[9].0),
        "the rescan showed a the others' chunks"
    );
    assert_eq!(a.get(&theirs[9].0).as_ref(), Some(&theirs[9].1));
}

#[test]
fn a_chunk_another_process_uses_outlives_ones_nobody_used() {
    let dir = tempfile::tempdir().unwrap();
    let a = ChunkCache::open(dir.path(), 6000).unwrap();
    let chunks: Vec<_> = (0..7u8).map(|n| chunk(n, 1000)).collect();
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for (i, (d, bytes)) in chunks[..5].iter().enumerate() {
        a.put(d, bytes).unwrap();
        let file = std::fs::File::open(a.path(d)).unwrap();
        file.set_modified(hour_ago + std::time::Duration::from_secs(i as u64))
            .unwrap();
    }
    let b = ChunkCache::open(dir.path(), 6000).unwrap();
    assert!(b.get(&chunks[0].0).is_some(), "b reads a's oldest chunk");
    for (d, bytes) in &chunks[5..] {
        a.put(d, bytes).unwrap();
    }
    assert!(a.path(&chunks[0].0).exists(), "used by b, so kept");
    assert!(
        !a.path(&chunks[1].0).exists(),
        "used by nobody since, so evicted"
    );
    assert_eq!(stored_bytes(dir.path()), 6000);
}

#[test]
fn a_live_writers_temporary_file_survives_another_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let fan = dir.path().join("sha256").join("ab");
    std::fs::create_dir_all(&fan).unwrap();
    let temp = fan.join(format!(".tmp-{}-0", writer.id()));
    std::fs::write(&temp, b"a chunk being written").unwrap();
    drop(ChunkCache::open(dir.path(), 1 << 20).unwrap());
    assert!(temp.exists(), "its writer is alive");
    writer.kill().unwrap();
    writer.wait().unwrap();
    drop(ChunkCache::open(dir.path(), 1 << 20).unwrap());
    assert!(!temp.exists(), "its writer is gone");
}

#[test]
fn a_chunk_another_process_stored_since_this_one_opened_is_used_once_checked() {
    let dir = tempfile::tempdir().unwrap();
    let a = ChunkCache::open(dir.path(), 1 << 20).unwrap();
    let b = ChunkCache::open(dir.path(), 1 << 20).unwrap();
    let (d, bytes) = chunk(1, 3000);
    b.put(&d, &bytes).unwrap();
    let mut out = Vec::new();
    assert!(
        a.read_range(&d, 100..200, &mut out),
        "found on disk, not fetched again"
    );
    assert_eq!(out, bytes[100..200]);
    assert!(a.contains(&d));
    // A file of the right size and the wrong bytes put there behind a's back: hashed
    // before its first use, never served.
    let (e, ebytes) = chunk(2, 3000);
    let path = a.path(&e);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &bytes).unwrap();
    assert!(!a.read_range(&e, 0..10, &mut out));
    assert!(a.get(&e).is_none());
    assert_eq!(a.stats().corrupt, 1);
    b.put(&e, &ebytes).unwrap();
    assert_eq!(a.get(&e).as_ref(), Some(&ebytes));
}
