use proptest::prelude::*;

use super::*;

const K64: u64 = MIN_CHUNK_SIZE;

fn build(data: &[u8], chunk_size: u64, feed: usize) -> LayerChunks {
    let mut c = LayerChunker::new(chunk_size).unwrap();
    for part in data.chunks(feed.max(1)) {
        c.update(part);
    }
    c.finish(&Digest::of(data)).unwrap()
}

#[test]
fn chunks_cover_the_blob_and_verify() {
    let data: Vec<u8> = (0..(2 * K64 + 17)).map(|i| (i % 251) as u8).collect();
    let l = build(&data, K64, 1000);
    assert_eq!(l.size, data.len() as u64);
    assert_eq!(l.chunks.len(), 3);
    for i in 0..3u64 {
        let r = l.chunk_range(K64, i);
        assert_eq!(
            l.chunks[i as usize],
            Digest::of(&data[r.start as usize..r.end as usize])
        );
        l.verify_chunk(K64, i, &data[r.start as usize..r.end as usize])
            .unwrap();
    }
    assert_eq!(l.chunk_range(K64, 2), 2 * K64..2 * K64 + 17);
    let mut bad = data[..K64 as usize].to_vec();
    bad[5] ^= 1;
    assert!(matches!(
        l.verify_chunk(K64, 0, &bad),
        Err(ChunkIndexError::ChunkMismatch { index: 0, .. })
    ));
    assert!(matches!(
        l.verify_chunk(K64, 3, b""),
        Err(ChunkIndexError::NoSuchChunk { .. })
    ));
}

#[test]
fn an_empty_blob_has_no_chunks_and_a_wrong_digest_fails() {
    let l = build(b"", K64, 1);
    assert!(l.chunks.is_empty());
    let mut c = LayerChunker::new(K64).unwrap();
    c.update(b"abc");
    assert!(matches!(
        c.finish(&Digest::of(b"abd")),
        Err(ChunkIndexError::BlobMismatch { size: 3, .. })
    ));
}

#[test]
fn parse_refuses_what_breaks_the_bounds() {
    let d = Digest::of(b"x");
    let layer = |size: u64, n: usize| LayerChunks {
        digest: d.clone(),
        size,
        chunks: vec![d.clone(); n],
    };
    let mut ix = ChunkIndex::new(K64).unwrap();
    ix.layers.push(layer(K64 + 1, 2));
    ChunkIndex::parse(&ix.to_json()).unwrap();

    for size in [0, 1, 3 << 16, K64 / 2, MAX_CHUNK_SIZE * 2] {
        let mut bad = ix.clone();
        bad.chunk_size = size;
        assert_eq!(
            ChunkIndex::parse(&bad.to_json()),
            Err(ChunkIndexError::ChunkSize(size))
        );
    }
    let mut bad = ix.clone();
    bad.layers[0].chunks.pop();
    assert!(matches!(
        ChunkIndex::parse(&bad.to_json()),
        Err(ChunkIndexError::ChunkCount {
            expected: 2,
            actual: 1,
            ..
        })
    ));
    let mut bad = ix.clone();
    bad.layers.push(layer(K64 + 1, 2));
    assert!(matches!(
        ChunkIndex::parse(&bad.to_json()),
        Err(ChunkIndexError::DuplicateLayer(_))
    ));
    let json = String::from_utf8(ix.to_json()).unwrap();
    let bad = json.replacen(&d.to_string(), "sha256:../../x", 1);
    assert!(matches!(
        ChunkIndex::parse(bad.as_bytes()),
        Err(ChunkIndexError::Json(_))
    ));
    let bad = json.replace("\"schemaVersion\":1", "\"schemaVersion\":2");
    assert_eq!(
        ChunkIndex::parse(bad.as_bytes()),
        Err(ChunkIndexError::SchemaVersion(2))
    );
    let big = vec![b' '; MAX_INDEX_SIZE + 1];
    assert!(matches!(
        ChunkIndex::parse(&big),
        Err(ChunkIndexError::TooLarge { .. })
    ));
    // A huge declared size with few chunks is refused without allocating.
    let bad = json.replace(
        &format!("\"size\":{}", K64 + 1),
        "\"size\":18446744073709551615",
    );
    assert!(matches!(
        ChunkIndex::parse(bad.as_bytes()),
        Err(ChunkIndexError::ChunkCount { .. })
    ));
}

#[test]
fn the_referrer_is_deterministic_and_names_its_subject() {
    let subject = Descriptor::of(crate::artifact::manifest::OCI_MANIFEST, b"{}");
    let ix = ChunkIndex::new(DEFAULT_CHUNK_SIZE).unwrap();
    let a = referrer_manifest(&subject, &ix.to_json());
    let b = referrer_manifest(&subject, &ix.to_json());
    assert_eq!(a.to_json(), b.to_json());
    assert_eq!(a.artifact_type.as_deref(), Some(ARTIFACT_TYPE));
    assert_eq!(
        a.config.digest.to_string(),
        crate::artifact::manifest::OCI_EMPTY_DIGEST
    );
    assert_eq!(a.layers[0].media_type, MEDIA_TYPE);
    assert_eq!(a.subject.as_ref().unwrap().digest, subject.digest);
}

proptest! {
    #[test]
    fn round_trip_whatever_the_feeding(
        len in 0usize..(3 * K64 as usize),
        seed in any::<u8>(),
        feed in 1usize..100_000,
        shift in 0u32..3,
    ) {
        let chunk_size = K64 << shift;
        let data: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let l = build(&data, chunk_size, feed);
        prop_assert_eq!(l.chunks.len() as u64, chunk_count(len as u64, chunk_size));
        let mut ix = ChunkIndex::new(chunk_size).unwrap();
        ix.push(l.clone());
        let back = ChunkIndex::parse(&ix.to_json()).unwrap();
        prop_assert_eq!(&back, &ix);
        for i in 0..l.chunks.len() as u64 {
            let r = l.chunk_range(chunk_size, i);
            prop_assert!(back.verify_chunk(&l.digest, i, &data[r.start as usize..r.end as usize]).is_ok());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = ChunkIndex::parse(&bytes);
    }
}
