//! Chunks and their reassembly, alone: the fixed-offset codec against the schema codec, any
//! order and duplicates reassembling exactly, and bad chunks dropped and counted with memory
//! bounded by the caps.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use xmem_tensorpool::codec::decode_exact;
use xmem_tp_bridge::assembly::{Assembly, Dropped};
use xmem_tp_bridge::chunk::{chunk_count, Chunk, ChunkError};

const HEADER: [u8; 256] = [7; 256];

/// Frame `seq`'s chunks of `size` bytes, encoded.
fn chunks(seq: u64, payload: &[u8], size: u32, crc: bool) -> Vec<Vec<u8>> {
    let count = chunk_count(payload.len() as u32, size).unwrap();
    (0..count)
        .map(|i| {
            let start = (i * size) as usize;
            let end = (start + size as usize).min(payload.len());
            let part = &payload[start.min(end)..end];
            let header = (i == 0).then_some(&HEADER[..]);
            let mut out = Vec::new();
            Chunk {
                stream_id: 20000,
                epoch: 5,
                seq,
                trace_id: 9,
                index: i,
                count,
                offset: start as u32,
                payload_length: payload.len() as u32,
                crc32c: if crc { Chunk::checksum(header, part) } else { 0 },
                header,
                payload: part,
            }
            .encode_into(&mut out);
            out
        })
        .collect()
}

fn push_all(a: &mut Assembly, encoded: &[Vec<u8>]) -> (Option<Vec<u8>>, Vec<Dropped>) {
    let mut drops = Vec::new();
    let mut done = None;
    for b in encoded {
        let c = Chunk::decode(b).unwrap();
        match a.push(&c, Instant::now()) {
            Ok(Some(f)) => done = Some(f.payload),
            Ok(None) => {}
            Err(d) => drops.push(d),
        }
    }
    (done, drops)
}

#[test]
fn the_fixed_offset_codec_agrees_with_the_schema_codec() {
    let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
    for b in chunks(1, &payload, 1200, true) {
        let m = decode_exact(&b).expect("the schema codec reads what the bridge writes");
        let c = Chunk::decode(&b).unwrap();
        assert_eq!(m.int("chunkIndex"), Some(c.index.into()));
        assert_eq!(m.int("chunkOffset"), Some(c.offset.into()));
        assert_eq!(m.int("payloadCrc32c"), Some(c.crc32c.into()));
        assert_eq!(m.data("payloadBytes"), Some(c.payload));
        assert_eq!(
            m.data("headerBytes").map(<[u8]>::len),
            Some(if c.index == 0 { 256 } else { 0 })
        );
    }
}

#[test]
fn a_reused_buffer_shows_nothing_of_the_frame_before() {
    // The assembly keeps one frame's buffer for the next: a smaller frame after a larger one,
    // a frame after an abandoned one, each comes out exactly as sent.
    let mut a = Assembly::new(1 << 20, Duration::from_secs(5), false);
    let big = vec![0xAAu8; 5000];
    let (done, drops) = push_all(&mut a, &chunks(1, &big, 1200, false));
    assert_eq!((done.as_deref(), drops), (Some(&big[..]), vec![]));
    a.recycle(done.unwrap());
    let small: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    let (done, _) = push_all(&mut a, &chunks(2, &small, 1200, false));
    assert_eq!(done.as_deref(), Some(&small[..]));
    a.recycle(done.unwrap());
    // Frame 3 loses its last chunk and is overtaken by frame 4.
    let third = chunks(3, &vec![0x33u8; 4000], 1000, false);
    assert_eq!(push_all(&mut a, &third[..3]), (None, vec![]));
    let fourth: Vec<u8> = (0..4000u32).map(|i| (i * 7) as u8).collect();
    let (done, _) = push_all(&mut a, &chunks(4, &fourth, 1000, false));
    assert_eq!(done.as_deref(), Some(&fourth[..]));
    assert_eq!((a.replaced, a.held()), (1, 0));
}

#[test]
fn bad_chunks_are_refused_by_the_codec() {
    let payload = vec![1u8; 2000];
    let good = chunks(1, &payload, 1200, false);
    // chunkLength disagreeing with payloadBytes.
    let mut b = good[1].clone();
    b[8 + 40] ^= 1;
    assert_eq!(Chunk::decode(&b), Err(ChunkError::Length));
    // An offset past the frame.
    let mut b = good[1].clone();
    b[8 + 36..8 + 40].copy_from_slice(&1900u32.to_le_bytes());
    assert_eq!(Chunk::decode(&b), Err(ChunkError::Range));
    // A header on chunk 1, none on chunk 0.
    let mut b = good[1].clone();
    b[8 + 52] = 1;
    assert_eq!(Chunk::decode(&b), Err(ChunkError::Header));
    // Truncated, trailing, another schema.
    assert_eq!(Chunk::decode(&good[0][..100]), Err(ChunkError::Truncated));
    let mut b = good[1].clone();
    b.push(0);
    assert_eq!(Chunk::decode(&b), Err(ChunkError::Trailing));
    let mut b = good[1].clone();
    b[4] = 0x84;
    assert_eq!(Chunk::decode(&b), Err(ChunkError::NotAChunk));
}

#[test]
fn bad_frames_are_dropped_and_counted_and_memory_stays_bounded() {
    let t = Duration::from_millis(250);
    let payload = vec![3u8; 5000];
    // A CRC mismatch.
    let mut a = Assembly::new(1 << 20, t, true);
    let mut bad = chunks(1, &payload, 1200, true);
    let last = bad[2].len() - 1;
    bad[2][last] ^= 0xff;
    let (done, drops) = push_all(&mut a, &bad);
    assert!(done.is_none() && drops.contains(&Dropped::Crc), "{drops:?}");
    // Integrity on, no CRC sent: dropped.
    let mut a = Assembly::new(1 << 20, t, true);
    let (done, drops) = push_all(&mut a, &chunks(1, &payload, 1200, false));
    assert!(done.is_none() && drops.iter().all(|d| *d == Dropped::Crc || *d == Dropped::Stale));
    // A payload over the cap: dropped before anything is held.
    let mut a = Assembly::new(4096, t, false);
    let (done, drops) = push_all(&mut a, &chunks(1, &payload, 1200, false));
    assert!(done.is_none() && drops[0] == Dropped::TooLarge);
    assert_eq!(a.held(), 0);
    // A missing header chunk: never complete; the timeout drops it.
    let mut a = Assembly::new(1 << 20, t, false);
    let (done, _) = push_all(&mut a, &chunks(1, &payload, 1200, false)[1..]);
    assert!(done.is_none());
    assert!(a.held() <= 5000);
    assert_eq!(
        a.expire(Instant::now() + Duration::from_secs(1)),
        Some(Dropped::Incomplete)
    );
    assert_eq!(a.held(), 0);
    // Overlapping chunks (another chunking of the same frame): dropped.
    let mut a = Assembly::new(1 << 20, t, false);
    let mut mixed = chunks(1, &payload, 1200, false);
    mixed[1] = chunks(1, &payload, 1000, false)[1].clone();
    let (done, drops) = push_all(&mut a, &mixed);
    assert!(
        done.is_none() && (drops.contains(&Dropped::Overlap) || drops.contains(&Dropped::Conflict)),
        "{drops:?}"
    );
    // A conflicting duplicate (same place, other bytes): dropped.
    let mut a = Assembly::new(1 << 20, t, false);
    let mut dup = chunks(1, &payload, 1200, false);
    let mut other = dup[1].clone();
    let n = other.len() - 1;
    other[n] ^= 1;
    dup.insert(2, other);
    let (done, drops) = push_all(&mut a, &dup);
    assert!(done.is_none() && drops.contains(&Dropped::Conflict), "{drops:?}");
}

proptest! {
    #[test]
    fn any_order_with_duplicates_reassembles_exactly(
        len in 0usize..20_000,
        size in 1u32..3000,
        order in proptest::collection::vec(any::<u16>(), 0..64),
        seed in any::<u8>(),
    ) {
        let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        prop_assume!(chunk_count(len as u32, size).is_some());
        let mut encoded = chunks(1, &payload, size, true);
        // Shuffle by the random keys, then repeat a few.
        let n = encoded.len();
        for (i, k) in order.iter().enumerate() {
            encoded.swap(i % n, *k as usize % n);
        }
        let dups: Vec<Vec<u8>> = order.iter().take(5).map(|k| encoded[*k as usize % n].clone()).collect();
        let at = n / 2;
        for (j, d) in dups.into_iter().enumerate() {
            encoded.insert((at + j).min(encoded.len()), d);
        }
        let mut a = Assembly::new(1 << 20, Duration::from_secs(10), true);
        let (done, drops) = push_all(&mut a, &encoded);
        prop_assert!(drops.iter().all(|d| *d == Dropped::Stale), "{:?}", drops);
        prop_assert_eq!(done, Some(payload));
    }

    #[test]
    fn chunk_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Chunk::decode(&bytes);
    }
}
