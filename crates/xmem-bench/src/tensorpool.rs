//! The SHM Tensor Pool protocol against its floors, in the same run, two processes pinned to
//! different cores:
//!
//! - **Commit → validate latency**: ping-pong over two header rings. A commits a frame in ring 1;
//!   B, following ring 1 (acquire load, slot decode and validation, payload copy, re-check),
//!   accepts it and commits it in ring 2, where A accepts it. One way is half the round trip.
//!   Beside it, the floor: the same ping-pong of one 8-byte word through two cache lines of a
//!   shared mapping (a store, a spinning load), which is what any shared-memory signal costs.
//! - **1080p throughput**: A produces 1920×1080×3 frames into an 8-slot ring as fast as it can,
//!   writing every byte (a `memset`), while B follows the ring and validates every frame it
//!   sees; frames per second at A, as a fraction of the fill bound: the same `memset` into 8
//!   pre-faulted shared-memory buffers in turn with no protocol around it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use xmem_core::os::map::MapOptions;
use xmem_core::os::Mapping;
use xmem_tensorpool::commit::{Consumer, Drop, FrameSpec, Producer};
use xmem_tensorpool::layout::{Dtype, Superblock, TensorHeader};
use xmem_tensorpool::region::Region;

use crate::segment::{histogram, ticks, Clock, Percentiles};
use crate::streams::{cpus, pin_to, FRAME_1080P};
use crate::{Peer, PeerProgram};

const STREAM: u32 = 10_000;

/// A scratch directory under /dev/shm, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = PathBuf::from("/dev/shm").join(format!("xmem-bench-tp-{what}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("scratch directory");
        Scratch(p)
    }
}

impl std::ops::Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn superblocks(epoch: u64, nslots: u32, stride: u32) -> (Superblock, Superblock) {
    (
        Superblock::header_ring(STREAM, epoch, nslots, u64::from(std::process::id()), 0),
        Superblock::payload_pool(STREAM, epoch, 1, nslots, stride, u64::from(std::process::id()), 0),
    )
}

fn create(dir: &Path, tag: &str, nslots: u32, stride: u32) -> Producer {
    let (ring, pool) = superblocks(1, nslots, stride);
    Producer::new(
        Region::create(&dir.join(format!("{tag}.ring")), &ring, 0o600).expect("ring"),
        vec![Region::create(&dir.join(format!("{tag}.pool")), &pool, 0o600).expect("pool")],
    )
}

fn open(dir: &Path, tag: &str, nslots: u32, stride: u32) -> Consumer {
    let (ring, pool) = superblocks(1, nslots, stride);
    Consumer::new(
        Region::open(&dir.join(format!("{tag}.ring")), &ring).expect("ring"),
        vec![Region::open(&dir.join(format!("{tag}.pool")), &pool).expect("pool")],
    )
}

/// A 64-byte frame carrying a time stamp (the latency message).
fn small_spec() -> FrameSpec {
    FrameSpec {
        tensor: TensorHeader::row_major(Dtype::Uint8, &[64]),
        values_len: 64,
        timestamp_ns: 0,
        meta_version: 0,
    }
}

fn frame_spec() -> FrameSpec {
    FrameSpec {
        tensor: TensorHeader::row_major(Dtype::Uint8, &[1080, 1920, 3]),
        values_len: FRAME_1080P as u32,
        timestamp_ns: 0,
        meta_version: 0,
    }
}

/// Waits for the frame after `last` in `c`, spinning.
fn spin_next(c: &mut Consumer, buf: &mut Vec<u8>) -> u64 {
    loop {
        match c.next(0, buf) {
            Ok(_) => return u64::from_le_bytes(buf[..8].try_into().expect("8 bytes")),
            Err(Drop::NotYet | Drop::Late) => std::hint::spin_loop(),
            Err(other) => panic!("ping-pong frame dropped: {other:?}"),
        }
    }
}

/// One-way commit → validate latency (ping-pong ÷ 2) over `n` round trips.
pub fn commit_latency(program: &PeerProgram, n: usize, clock: &Clock) -> Percentiles {
    let (cpu_a, cpu_b) = cpus();
    pin_to(cpu_a);
    let dir = Scratch::new("lat");
    let mut tx = create(&dir.0, "a2b", 8, 64);
    let mut peer = Peer::start(
        program,
        "tp-echo",
        &[dir.0.to_str().expect("utf-8"), &cpu_b.to_string()],
    )
    .expect("peer");
    assert_eq!(peer.line(), "ready");
    let mut rx = open(&dir.0, "b2a", 8, 64);
    peer.send("go");
    let spec = small_spec();
    let mut buf = Vec::with_capacity(64);
    let mut h = histogram();
    for i in 0..n + n / 10 + 1 {
        let t0 = ticks();
        tx.publish(&spec, |b| b[..8].copy_from_slice(&t0.to_le_bytes()))
            .expect("publish");
        let back = spin_next(&mut rx, &mut buf);
        let t1 = ticks();
        assert_eq!(back, t0, "the echo carries the stamp sent");
        if i > n / 10 {
            h.record((clock.ns(t1 - t0) / 2).max(1)).expect("record");
        }
    }
    peer.finish();
    Percentiles::of(&h)
}

/// Peer role `tp-echo DIR CPU`: follows ring `a2b`, commits every frame's stamp into `b2a`.
pub(crate) fn echo_role(dir: &str, cpu: &str) -> i32 {
    pin_to(cpu.parse().expect("cpu"));
    let dir = Path::new(dir);
    let mut rx = open(dir, "a2b", 8, 64);
    let mut tx = create(dir, "b2a", 8, 64);
    say("ready");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    let stop = crate::streams::stop_on_stdin_close();
    let spec = small_spec();
    let mut buf = Vec::with_capacity(64);
    while !stop.load(Ordering::Relaxed) {
        match rx.next(0, &mut buf) {
            Ok(_) => {
                let stamp: [u8; 8] = buf[..8].try_into().expect("8 bytes");
                tx.publish(&spec, |b| b[..8].copy_from_slice(&stamp))
                    .expect("publish");
            }
            Err(_) => std::hint::spin_loop(),
        }
    }
    0
}

/// The floor: one-way latency of a word through two cache lines of a shared mapping.
pub fn cache_line_latency(program: &PeerProgram, n: usize, clock: &Clock) -> Percentiles {
    let (cpu_a, cpu_b) = cpus();
    pin_to(cpu_a);
    let dir = Scratch::new("line");
    let path = dir.0.join("lines");
    std::fs::write(&path, [0u8; 128]).expect("lines file");
    let map = map_lines(&path);
    let (ping, pong) = lines(&map);
    let mut peer = Peer::start(
        program,
        "line-echo",
        &[path.to_str().expect("utf-8"), &cpu_b.to_string()],
    )
    .expect("peer");
    assert_eq!(peer.line(), "ready");
    peer.send("go");
    let mut h = histogram();
    for i in 1..=(n + n / 10 + 1) as u64 {
        let t0 = ticks();
        ping.store(i, Ordering::Release);
        while pong.load(Ordering::Acquire) != i {
            std::hint::spin_loop();
        }
        let t1 = ticks();
        if i > n as u64 / 10 + 1 {
            h.record((clock.ns(t1 - t0) / 2).max(1)).expect("record");
        }
    }
    peer.finish();
    Percentiles::of(&h)
}

pub(crate) fn map_lines(path: &Path) -> Mapping {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("lines file");
    Mapping::map(
        &file,
        128,
        MapOptions {
            writable: true,
            populate: true,
        },
        path,
    )
    .expect("map")
}

pub(crate) fn lines(map: &Mapping) -> (&AtomicU64, &AtomicU64) {
    (
        map.at::<AtomicU64>(0).expect("line 0"),
        map.at::<AtomicU64>(64).expect("line 1"),
    )
}

/// Peer role `line-echo PATH CPU`: copies line 0 into line 1 whenever it changes.
pub(crate) fn line_echo_role(path: &str, cpu: &str) -> i32 {
    pin_to(cpu.parse().expect("cpu"));
    let map = map_lines(Path::new(path));
    let (ping, pong) = lines(&map);
    say("ready");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    let stop = crate::streams::stop_on_stdin_close();
    let mut last = 0;
    while !stop.load(Ordering::Relaxed) {
        let v = ping.load(Ordering::Acquire);
        if v != last {
            pong.store(v, Ordering::Release);
            last = v;
        } else {
            std::hint::spin_loop();
        }
    }
    0
}

/// What a 1080p run saw.
#[derive(Debug, Clone, Copy)]
pub struct Throughput {
    /// Frames per second the producer committed.
    pub produced_per_s: f64,
    /// Frames the following consumer accepted (each validated and copied out).
    pub accepted: u64,
    /// Frames it missed or caught being overwritten (the protocol never makes a producer wait).
    pub dropped: u64,
}

/// 1080p frames, every byte written, into an 8-slot ring, with a consumer process following
/// (`follow`) or none.
pub fn throughput_1080p(program: &PeerProgram, frames: u64, follow: bool) -> Throughput {
    let (cpu_a, cpu_b) = cpus();
    pin_to(cpu_a);
    let dir = Scratch::new("tput");
    let stride = (FRAME_1080P as u32).div_ceil(64) * 64;
    let mut tx = create(&dir.0, "frames", 8, stride);
    let mut peer = follow.then(|| {
        let mut peer = Peer::start(
            program,
            "tp-follow",
            &[dir.0.to_str().expect("utf-8"), &cpu_b.to_string()],
        )
        .expect("peer");
        assert_eq!(peer.line(), "ready");
        peer.send("go");
        peer
    });
    let spec = frame_spec();
    let start = Instant::now();
    for i in 0..frames {
        tx.publish(&spec, |b| b.fill(i as u8)).expect("publish");
    }
    let produced_per_s = frames as f64 / start.elapsed().as_secs_f64();
    let (mut accepted, mut dropped) = (0, 0);
    if let Some(mut peer) = peer.take() {
        peer.send("stop");
        let line = peer.line();
        let mut words = line
            .split_whitespace()
            .skip(1)
            .map(|w| w.parse::<u64>().expect("count"));
        (accepted, dropped) = (words.next().unwrap_or(0), words.next().unwrap_or(0));
        peer.finish();
    }
    Throughput {
        produced_per_s,
        accepted,
        dropped,
    }
}

/// Peer role `tp-follow DIR CPU`: follows the 1080p ring, validating and copying every frame it
/// can, until told `stop`; prints `done ACCEPTED DROPPED`.
pub(crate) fn follow_role(dir: &str, cpu: &str) -> i32 {
    pin_to(cpu.parse().expect("cpu"));
    let stride = (FRAME_1080P as u32).div_ceil(64) * 64;
    let mut rx = open(Path::new(dir), "frames", 8, stride);
    say("ready");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        s.store(true, Ordering::Relaxed);
    });
    let mut buf = Vec::with_capacity(FRAME_1080P);
    while !stop.load(Ordering::Relaxed) {
        if rx.next(0, &mut buf).is_err() {
            std::hint::spin_loop();
        }
    }
    let c = rx.counters();
    say(&format!(
        "done {} {}",
        c.accepted,
        c.drops_gap + c.drops_late + c.drops_invalid
    ));
    crate::wait_for_stdin_to_close();
    0
}

fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs both measurements and prints them (Markdown) with their floors and ratios.
pub fn report(program: &PeerProgram, clock: &Clock, scale: f64) {
    let n = ((200_000.0 * scale) as usize).max(1000);
    let frames = ((600.0 * scale) as u64).max(50);
    println!(
        "SHM Tensor Pool · two processes pinned to CPUs {:?} · busy-polling\n",
        cpus()
    );
    let line = cache_line_latency(program, n, clock);
    let commit = commit_latency(program, n, clock);
    println!("| one-way latency, ns | p50 | p99 | p99.9 |");
    println!("|---|---|---|---|");
    for (name, p) in [
        ("cache-line ping-pong (floor)", &line),
        ("tensor pool commit → validate, 64 B", &commit),
    ] {
        println!("| {name} | {} | {} | {} |", p.p50, p.p99, p.p999);
    }
    println!(
        "\ncommit → validate p50 is {:.1}× the cache-line floor of the same run\n",
        commit.p50 as f64 / line.p50.max(1) as f64
    );
    let bound = crate::streams::fill_bound(FRAME_1080P, frames, 8);
    let alone = throughput_1080p(program, frames, false);
    let t = throughput_1080p(program, frames, true);
    println!("| 1920×1080×3, every byte written | frames/s | of the memset bound |");
    println!("|---|---|---|");
    println!("| memset into 8 shared buffers in turn (bound) | {bound:.0} | 100 % |");
    println!(
        "| tensor pool producer, 8-slot ring | {:.0} | {:.1} % |",
        alone.produced_per_s,
        100.0 * alone.produced_per_s / bound
    );
    println!(
        "| the same, a consumer process copying every frame out | {:.0} | {:.1} % |",
        t.produced_per_s,
        100.0 * t.produced_per_s / bound
    );
    println!(
        "\nthe consumer process accepted {} frames (validated and copied out) and dropped {} it was lapped on",
        t.accepted, t.dropped
    );
}
