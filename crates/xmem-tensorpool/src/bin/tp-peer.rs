//! Peer process of the tensor-pool tests: a producer writing 1920×1080×3 frames at full speed
//! and consumers following the ring, each checking every frame it accepts.
//!
//! Payload: word 0 is the sequence, word 1 a checksum (wrapping sum) of words 2.., which hold a
//! pattern derived from the sequence. A torn frame (words of two frames) fails the checksum.
//!
//! `tp-peer produce DIR COUNT` prints `ready EPOCH`, waits for a line, publishes COUNT frames
//! (0: until killed), prints `done N`. `tp-peer consume DIR EPOCH` prints `ready`, follows the
//! ring until stdin closes, prints `done ACCEPTED GAP LATE INVALID BAD`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use xmem_tensorpool::commit::{Consumer, Drop, FrameSpec, Producer};
use xmem_tensorpool::layout::{Dtype, Superblock, TensorHeader};
use xmem_tensorpool::region::Region;

const STREAM: u32 = 10_000;
const NSLOTS: u32 = 8;
const FRAME: u32 = 1920 * 1080 * 3;
const STRIDE: u32 = FRAME.div_ceil(64) * 64;

fn paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("header.ring"), dir.join("1.pool"))
}

fn superblocks(epoch: u64) -> (Superblock, Superblock) {
    let pid = u64::from(std::process::id());
    (
        Superblock::header_ring(STREAM, epoch, NSLOTS, pid, 0),
        Superblock::payload_pool(STREAM, epoch, 1, NSLOTS, STRIDE, pid, 0),
    )
}

fn pattern(seq: u64, i: usize) -> u64 {
    seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)
}

fn say(line: &str) {
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn produce(dir: &Path, count: u64) {
    let epoch = xmem_core::os::time::monotonic_ns();
    let (ring_sb, pool_sb) = superblocks(epoch);
    let (ring_path, pool_path) = paths(dir);
    let ring = Region::create(&ring_path, &ring_sb, 0o600).expect("ring");
    let pool = Region::create(&pool_path, &pool_sb, 0o600).expect("pool");
    let mut p = Producer::new(ring, vec![pool]);
    say(&format!("ready {epoch}"));
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    let spec = FrameSpec {
        tensor: TensorHeader::row_major(Dtype::Uint8, &[1080, 1920, 3]),
        values_len: FRAME,
        timestamp_ns: 0,
        meta_version: 0,
    };
    let mut n = 0;
    while count == 0 || n < count {
        let seq = p.next_seq();
        p.publish(&spec, |bytes| {
            let mut sum = 0u64;
            let words = bytes.len() / 8;
            for i in 2..words {
                let v = pattern(seq, i);
                bytes[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
                sum = sum.wrapping_add(v);
            }
            bytes[..8].copy_from_slice(&seq.to_le_bytes());
            bytes[8..16].copy_from_slice(&sum.to_le_bytes());
        })
        .expect("publish")
        .expect("a pool fits");
        n += 1;
    }
    say(&format!("done {n}"));
    let _ = std::io::stdin().lock().read_line(&mut line);
}

fn intact(seq: u64, bytes: &[u8]) -> bool {
    let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
    let sum = (2..bytes.len() / 8).fold(0u64, |s, i| s.wrapping_add(word(i)));
    word(0) == seq && word(1) == sum && word(2) == pattern(seq, 2)
}

fn consume(dir: &Path, epoch: u64) {
    let (ring_sb, pool_sb) = superblocks(epoch);
    let (ring_path, pool_path) = paths(dir);
    let ring = Region::open(&ring_path, &ring_sb).expect("map the ring");
    let pool = Region::open(&pool_path, &pool_sb).expect("map the pool");
    let mut c = Consumer::new(ring, vec![pool]);
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        let mut sink = String::new();
        while std::io::stdin()
            .lock()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {
            sink.clear();
        }
        s.store(true, Ordering::Relaxed);
    });
    say("ready");
    let mut buf = Vec::new();
    let mut bad = 0u64;
    let mut check = |c: &mut Consumer| match c.next(0, &mut buf) {
        Ok(a) => {
            if a.tensor.dims() != [1080, 1920, 3] || !intact(a.seq, &buf) {
                bad += 1;
            }
            true
        }
        Err(Drop::NotYet) => false,
        Err(_) => true,
    };
    while !stop.load(Ordering::Relaxed) {
        if !check(&mut c) {
            std::thread::yield_now(); // two CPUs may be all there is: let the producer run
        }
    }
    // A last look at what the ring holds now: a consumer that got little time while the
    // producer ran still reads what it left.
    for _ in 0..1024 {
        if !check(&mut c) {
            break;
        }
    }
    let k = c.counters();
    say(&format!(
        "done {} {} {} {} {bad}",
        k.accepted, k.drops_gap, k.drops_late, k.drops_invalid
    ));
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["produce", dir, count] => produce(Path::new(dir), count.parse().unwrap()),
        ["consume", dir, epoch] => consume(Path::new(dir), epoch.parse().unwrap()),
        other => {
            eprintln!("tp-peer: unknown arguments {other:?}");
            std::process::exit(2);
        }
    }
}
