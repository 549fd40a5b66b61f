//! The tensor pool over Aeron against raw Aeron, in the same run, two processes pinned to
//! different cores, one media driver (embedded in the bench process, in a scratch directory):
//!
//! - **Latency**: ping-pong. The tensor pool: A commits a 64-byte frame (a time stamp in it) and
//!   offers its FrameDescriptor; B's consumer takes the descriptor, validates the slot through
//!   the seqlock, copies the payload out, and commits the stamp as a frame of its own stream,
//!   which A's consumer takes the same way. The floor: the same ping-pong of a 48-byte message
//!   (a descriptor's size) by raw Aeron IPC offer → poll. One way is half the round trip.
//! - **Rate**: for one second A sends as fast as it can (tensor pool: commit + descriptor;
//!   raw: offers of 48 bytes, retried when back-pressured) and B counts what it accepts.
//! - **1080p**: A produces 1920×1080×3 frames into an 8-slot ring over Aeron as fast as it can,
//!   every byte written, while B follows the descriptors and copies every frame it can; frames
//!   per second at A as a fraction of the memset bound of the same run.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use xmem_aeron::{Client, ClientOptions, DriverOptions, MediaDriver, TP_CHANNEL};
use xmem_tensorpool::commit::FrameSpec;
use xmem_tensorpool::layout::{Dtype, TensorHeader};
use xmem_tensorpool::paths::AllowedDirs;
use xmem_tensorpool::stream::TpProducer;
use xmem_tp_control::{Channels, Consumer, ConsumerOptions, Endpoint, Producer, ProducerOptions, State};

use crate::segment::{histogram, ticks, Clock, Percentiles};
use crate::streams::{cpus, pin_to, FRAME_1080P};
use crate::{Peer, PeerProgram};

const A2B: u32 = 10_000;
const B2A: u32 = 10_001;
const PERIOD: Duration = Duration::from_millis(100);

/// A media driver and a base directory for regions, removed on drop.
struct Rig {
    aeron: PathBuf,
    base: PathBuf,
    driver: Option<MediaDriver>,
}

impl Rig {
    fn new(what: &str) -> Rig {
        Rig::with_driver_on(what, cpus().0)
    }

    /// A rig whose media driver's threads run on `cpu`.
    fn with_driver_on(what: &str, cpu: usize) -> Rig {
        let tag = format!("xmem-bench-tpa-{what}-{}", std::process::id());
        let aeron = PathBuf::from("/dev/shm").join(&tag);
        let base = PathBuf::from("/dev/shm").join(format!("{tag}-regions"));
        std::fs::create_dir_all(&base).expect("base directory");
        // The driver's threads inherit this thread's affinity: every two-process measurement
        // gets its driver on A's CPU (on two vCPUs, letting it float preempts both sides at
        // random).
        pin_to(cpu);
        let driver = MediaDriver::launch(&DriverOptions {
            dir: Some(aeron.clone()),
            ..DriverOptions::default()
        })
        .expect("media driver");
        Rig {
            aeron,
            base,
            driver: Some(driver),
        }
    }
}

impl std::ops::Drop for Rig {
    fn drop(&mut self) {
        drop(self.driver.take());
        let _ = std::fs::remove_dir_all(&self.base);
        let _ = std::fs::remove_dir_all(&self.aeron);
    }
}

fn client(aeron: &Path) -> Client {
    Client::connect(&ClientOptions {
        dir: Some(aeron.to_path_buf()),
        ..ClientOptions::default()
    })
    .expect("aeron client")
}

/// Stream `stream`'s channels: its own descriptor stream (1100 + stream % 100), the rest shared.
fn channels(stream: u32) -> Channels {
    Channels {
        descriptor: Endpoint::tp(1100 + (stream % 100) as i32),
        ..Channels::default()
    }
}

fn producer(c: &Client, base: &Path, stream: u32, stride: u32) -> Producer {
    let tp = TpProducer::builder(stream)
        .base_dir(base)
        .nslots(8)
        .pool(1, stride)
        .create()
        .expect("regions");
    Producer::new(
        c,
        tp,
        ProducerOptions {
            channels: channels(stream),
            announce_period: PERIOD,
            ..ProducerOptions::default()
        },
    )
    .expect("producer")
}

fn consumer(c: &Client, base: &Path, stream: u32) -> Consumer {
    let mut o = ConsumerOptions::new(stream, AllowedDirs::new([base]).expect("base"));
    o.channels = channels(stream);
    o.announce_period = PERIOD;
    Consumer::new(c, o).expect("consumer")
}

fn spec(len: u32) -> FrameSpec {
    FrameSpec {
        tensor: TensorHeader::row_major(Dtype::Uint8, &[len as i32]),
        values_len: len,
        timestamp_ns: 0,
        meta_version: 0,
    }
}

fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn wait_for_line() -> String {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    line
}

/// One-way latency of the tensor pool over Aeron (ping-pong ÷ 2).
pub fn tp_latency(program: &PeerProgram, n: usize, clock: &Clock) -> Percentiles {
    let rig = Rig::new("lat");
    let (cpu_a, cpu_b) = cpus();
    pin_to(cpu_a);
    let c = client(&rig.aeron);
    let mut tx = producer(&c, &rig.base, A2B, 64);
    let mut rx = consumer(&c, &rig.base, B2A);
    let mut peer = Peer::start(
        program,
        "tpa-echo",
        &[
            rig.aeron.to_str().expect("utf-8"),
            rig.base.to_str().expect("utf-8"),
            &cpu_b.to_string(),
        ],
    )
    .expect("peer");
    assert_eq!(peer.line(), "ready");
    // B maps A's stream, then A maps B's (B announces as it polls).
    peer.send("go");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(rx.state(), State::Mapped { .. }) {
        assert!(Instant::now() < deadline, "the echo's stream was not mapped");
        tx.poll().expect("poll");
        rx.poll(16, |_| {}).expect("poll");
    }
    // Ping until the echo answers (it maps A's stream from an announce).
    let spec = spec(64);
    let mut h = histogram();
    let mut i = 0;
    while i < n + n / 10 + 1 {
        let t0 = ticks();
        tx.publish(&spec, 0, |b| b[..8].copy_from_slice(&t0.to_le_bytes()))
            .expect("publish");
        let mut back = None;
        let started = Instant::now();
        while back.is_none() {
            rx.poll(1, |f| {
                back = Some(u64::from_le_bytes(f.bytes[..8].try_into().expect("8 bytes")))
            })
            .expect("poll");
            if back.is_none() && started.elapsed() > Duration::from_millis(200) {
                break; // not mapped on the other side yet, or lost: ping again
            }
        }
        let t1 = ticks();
        if back == Some(t0) {
            if i > n / 10 {
                h.record((clock.ns(t1 - t0) / 2).max(1)).expect("record");
            }
            i += 1;
        }
    }
    peer.finish();
    Percentiles::of(&h)
}

/// Peer role `tpa-echo AERON BASE CPU`: consumes stream A2B, publishes each stamp on B2A.
pub(crate) fn tp_echo_role(aeron: &str, base: &str, cpu: &str) -> i32 {
    pin_to(cpu.parse().expect("cpu"));
    let (aeron, base) = (Path::new(aeron), Path::new(base));
    let c = client(aeron);
    let mut rx = consumer(&c, base, A2B);
    let mut tx = producer(&c, base, B2A, 64);
    say("ready");
    wait_for_line();
    let stop = crate::streams::stop_on_stdin_close();
    let spec = spec(64);
    while !stop.load(Ordering::Relaxed) {
        let mut stamp = None;
        rx.poll(1, |f| {
            stamp = Some(<[u8; 8]>::try_from(&f.bytes[..8]).expect("8 bytes"))
        })
        .expect("poll");
        match stamp {
            Some(s) => {
                tx.publish(&spec, 0, |b| b[..8].copy_from_slice(&s))
                    .expect("publish");
            }
            None => {
                let _ = tx.poll();
            }
        }
    }
    0
}

/// One-way latency of raw Aeron IPC: a 48-byte message offered and polled back (ping-pong ÷ 2).
///
/// With `via_line`, the structural floor of any "descriptor over Aeron, data in shared memory"
/// design: the stamp goes in a cache line of a shared mapping, written before the offer, and
/// the message only says that it is there; the receiver reads the line after the message came,
/// as a tensor-pool consumer reads the slot a descriptor names.
pub fn raw_latency(program: &PeerProgram, n: usize, clock: &Clock, via_line: bool) -> Percentiles {
    let rig = Rig::new(if via_line { "rawline" } else { "raw" });
    let lines_path = rig.base.join("lines");
    std::fs::write(&lines_path, [0u8; 128]).expect("lines file");
    let map = crate::tensorpool::map_lines(&lines_path);
    let (ping, pong) = crate::tensorpool::lines(&map);
    let (cpu_a, cpu_b) = cpus();
    pin_to(cpu_a);
    let c = client(&rig.aeron);
    let tx = c.publication(TP_CHANNEL, 2000).expect("publication");
    let mut rx = c.subscription(TP_CHANNEL, 2001).expect("subscription");
    let mut args = vec![rig.aeron.to_str().expect("utf-8").to_string(), cpu_b.to_string()];
    if via_line {
        args.push(lines_path.to_str().expect("utf-8").to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut peer = Peer::start(program, "aeron-echo", &args).expect("peer");
    assert_eq!(peer.line(), "ready");
    peer.send("go");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(tx.is_connected() && rx.is_connected()) {
        assert!(Instant::now() < deadline, "raw Aeron streams did not connect");
        std::thread::yield_now();
    }
    let mut msg = [0u8; 48];
    let mut h = histogram();
    for i in 0..n + n / 10 + 1 {
        let t0 = ticks();
        if via_line {
            ping.store(t0, Ordering::Release);
        } else {
            msg[..8].copy_from_slice(&t0.to_le_bytes());
        }
        while !tx.offer(&msg).is_sent() {
            std::hint::spin_loop();
        }
        let mut back = None;
        while back.is_none() {
            rx.poll(1, |m| {
                back = Some(u64::from_le_bytes(m.bytes[..8].try_into().expect("8 bytes")))
            })
            .expect("poll");
        }
        if via_line {
            back = Some(pong.load(Ordering::Acquire));
        }
        let t1 = ticks();
        assert_eq!(back, Some(t0));
        if i > n / 10 {
            h.record((clock.ns(t1 - t0) / 2).max(1)).expect("record");
        }
    }
    peer.finish();
    Percentiles::of(&h)
}

/// Peer role `aeron-echo AERON CPU [LINES]`: polls stream 2000, offers each message back on
/// 2001; with LINES, copies the stamp from its first cache line to its second before answering.
pub(crate) fn raw_echo_role(aeron: &str, cpu: &str, lines: Option<&str>) -> i32 {
    pin_to(cpu.parse().expect("cpu"));
    let c = client(Path::new(aeron));
    let mut rx = c.subscription(TP_CHANNEL, 2000).expect("subscription");
    let tx = c.publication(TP_CHANNEL, 2001).expect("publication");
    let map = lines.map(|p| crate::tensorpool::map_lines(Path::new(p)));
    let lines = map.as_ref().map(crate::tensorpool::lines);
    say("ready");
    wait_for_line();
    let stop = crate::streams::stop_on_stdin_close();
    let mut msg = Vec::with_capacity(64);
    while !stop.load(Ordering::Relaxed) {
        msg.clear();
        rx.poll(1, |m| msg.extend_from_slice(m.bytes)).expect("poll");
        if !msg.is_empty() {
            if let Some((ping, pong)) = lines {
                pong.store(ping.load(Ordering::Acquire), Ordering::Release);
            }
            while !tx.offer(&msg).is_sent() && !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        }
    }
    0
}

/// The software's own cost, no second core: one thread publishes a 64-byte frame and polls it
/// back (tensor pool), or offers and polls a 48-byte message (raw Aeron), every line in its
/// cache. Mean ns per round: (tensor pool, raw).
pub fn one_core_cost(n: usize) -> (f64, f64) {
    // The driver on the other CPU, this thread alone on its own.
    let rig = Rig::with_driver_on("cost", cpus().1);
    pin_to(cpus().0);
    let c = client(&rig.aeron);
    let raw = {
        let tx = c.publication(TP_CHANNEL, 2000).expect("publication");
        let mut rx = c.subscription(TP_CHANNEL, 2000).expect("subscription");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !tx.is_connected() {
            assert!(Instant::now() < deadline, "raw Aeron stream did not connect");
            std::thread::yield_now();
        }
        let msg = [1u8; 48];
        let start = Instant::now();
        for _ in 0..n {
            while !tx.offer(&msg).is_sent() {
                std::hint::spin_loop();
            }
            let mut got = 0;
            while got == 0 {
                rx.poll(1, |_| got += 1).expect("poll");
            }
        }
        start.elapsed().as_nanos() as f64 / n as f64
    };
    let mut tx = producer(&c, &rig.base, A2B, 64);
    let mut rx = consumer(&c, &rig.base, A2B);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(rx.state(), State::Mapped { .. }) || !tx.is_connected() {
        assert!(Instant::now() < deadline, "the stream was not mapped");
        tx.poll().expect("poll");
        rx.poll(16, |_| {}).expect("poll");
    }
    let spec = spec(64);
    let mut sent = tx.stats().descriptors;
    let start = Instant::now();
    for i in 0..n as u64 {
        tx.publish(&spec, 0, |b| b[..8].copy_from_slice(&i.to_le_bytes()))
            .expect("publish");
        // A descriptor refused for back-pressure (counted, never waited on) is not polled for.
        if tx.stats().descriptors > sent {
            sent += 1;
            let mut got = 0;
            while got == 0 {
                rx.poll(1, |_| got += 1).expect("poll");
            }
        }
    }
    let tp = start.elapsed().as_nanos() as f64 / n as f64;
    (tp, raw)
}

/// Messages per second B accepted while A sent for `secs`: (tensor pool, raw Aeron).
pub fn rates(program: &PeerProgram, secs: f64) -> (f64, f64) {
    let rig = Rig::new("rate");
    let (cpu_a, cpu_b) = cpus();
    pin_to(cpu_a);
    let c = client(&rig.aeron);
    // `warm` runs for half a second before the timed second (the tensor-pool producer announces
    // meanwhile, so that the counting consumer maps its regions).
    let run = |role: &str, warm: &mut dyn FnMut(), send: &mut dyn FnMut()| -> f64 {
        let mut peer = Peer::start(
            program,
            "tpa-count",
            &[
                role,
                rig.aeron.to_str().expect("utf-8"),
                rig.base.to_str().expect("utf-8"),
                &cpu_b.to_string(),
            ],
        )
        .expect("peer");
        assert_eq!(peer.line(), "ready");
        peer.send("go");
        let warmup = Instant::now();
        while warmup.elapsed() < Duration::from_millis(500) {
            warm();
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(peer.line(), "listening");
        let start = Instant::now();
        while start.elapsed().as_secs_f64() < secs {
            send();
        }
        let elapsed = start.elapsed().as_secs_f64();
        peer.send("stop");
        let n: u64 = peer
            .line()
            .split_whitespace()
            .nth(1)
            .and_then(|w| w.parse().ok())
            .expect("count");
        peer.finish();
        n as f64 / elapsed
    };
    let raw = {
        let tx = c.publication(TP_CHANNEL, 2000).expect("publication");
        let msg = [7u8; 48];
        run("raw", &mut || {}, &mut || {
            let _ = tx.offer(&msg);
        })
    };
    let tp = {
        let p = std::cell::RefCell::new(producer(&c, &rig.base, A2B, 64));
        let spec = spec(64);
        run(
            "tp",
            &mut || {
                p.borrow_mut().poll().expect("poll");
            },
            &mut || {
                p.borrow_mut()
                    .publish(&spec, 0, |b| b[..8].fill(1))
                    .expect("publish");
            },
        )
    };
    (tp, raw)
}

/// Peer role `tpa-count tp|raw AERON BASE CPU`: counts what it accepts until told `stop`.
pub(crate) fn count_role(kind: &str, aeron: &str, base: &str, cpu: &str) -> i32 {
    pin_to(cpu.parse().expect("cpu"));
    let c = client(Path::new(aeron));
    say("ready");
    wait_for_line();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut n = 0u64;
    if kind == "raw" {
        let mut rx = c.subscription(TP_CHANNEL, 2000).expect("subscription");
        while !rx.is_connected() {
            std::thread::yield_now();
        }
        say("listening");
        spawn_stop_reader(&stop);
        while !stop.load(Ordering::Relaxed) {
            rx.poll(64, |_| n += 1).expect("poll");
        }
    } else {
        let mut rx = consumer(&c, Path::new(base), A2B);
        while !matches!(rx.state(), State::Mapped { .. }) {
            rx.poll(16, |_| {}).expect("poll");
        }
        say("listening");
        spawn_stop_reader(&stop);
        while !stop.load(Ordering::Relaxed) {
            rx.poll(64, |_| n += 1).expect("poll");
        }
    }
    say(&format!("done {n}"));
    crate::wait_for_stdin_to_close();
    0
}

fn spawn_stop_reader(stop: &std::sync::Arc<std::sync::atomic::AtomicBool>) {
    let s = stop.clone();
    std::thread::spawn(move || {
        wait_for_line();
        s.store(true, Ordering::Relaxed);
    });
}

/// 1080p frames/s at A with B following over Aeron, and what B accepted.
/// With `follow` false, no consumer runs (every descriptor finds no subscriber): the cost of the
/// protocol and of Aeron alone, without a second core reading the same memory.
pub fn throughput_1080p(program: &PeerProgram, frames: u64, follow: bool) -> (f64, u64) {
    let rig = Rig::new("tput");
    let (cpu_a, cpu_b) = cpus();
    pin_to(cpu_a);
    let c = client(&rig.aeron);
    let stride = (FRAME_1080P as u32).next_power_of_two();
    let mut p = producer(&c, &rig.base, A2B, stride);
    if !follow {
        let spec = spec(FRAME_1080P as u32);
        let start = Instant::now();
        for i in 0..frames {
            p.publish(&spec, 0, |b| b.fill(i as u8)).expect("publish");
        }
        return (frames as f64 / start.elapsed().as_secs_f64(), 0);
    }
    let mut peer = Peer::start(
        program,
        "tpa-follow",
        &[
            rig.aeron.to_str().expect("utf-8"),
            rig.base.to_str().expect("utf-8"),
            &cpu_b.to_string(),
        ],
    )
    .expect("peer");
    assert_eq!(peer.line(), "ready");
    peer.send("go");
    // Announce until the follower has mapped.
    loop {
        p.poll().expect("poll");
        if p.is_connected() && p.stats().consumers > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(peer.line(), "mapped");
    let spec = spec(FRAME_1080P as u32);
    let start = Instant::now();
    for i in 0..frames {
        p.publish(&spec, 0, |b| b.fill(i as u8)).expect("publish");
    }
    let per_s = frames as f64 / start.elapsed().as_secs_f64();
    peer.send("stop");
    let accepted = peer
        .line()
        .split_whitespace()
        .nth(1)
        .and_then(|w| w.parse().ok())
        .unwrap_or(0);
    peer.finish();
    (per_s, accepted)
}

/// Peer role `tpa-follow AERON BASE CPU`: follows stream A2B's descriptors, copying every frame.
pub(crate) fn follow_role(aeron: &str, base: &str, cpu: &str) -> i32 {
    pin_to(cpu.parse().expect("cpu"));
    let c = client(Path::new(aeron));
    let mut rx = consumer(&c, Path::new(base), A2B);
    say("ready");
    wait_for_line();
    while !matches!(rx.state(), State::Mapped { .. }) {
        rx.poll(16, |_| {}).expect("poll");
    }
    say("mapped");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    spawn_stop_reader(&stop);
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        rx.poll(8, |_| n += 1).expect("poll");
    }
    say(&format!("done {n}"));
    crate::wait_for_stdin_to_close();
    0
}

/// Runs every measurement and prints them (Markdown) with their floors and ratios;
/// `XMEM_BENCH_ONLY=latency,rate,1080p` (any of them) narrows it.
pub fn report(program: &PeerProgram, clock: &Clock, scale: f64) {
    let n = ((50_000.0 * scale) as usize).max(1000);
    let frames = ((600.0 * scale) as u64).max(50);
    println!("SHM Tensor Pool over Aeron IPC · two processes pinned to CPUs {:?} · busy-polling · one embedded media driver\n", cpus());
    let only = std::env::var("XMEM_BENCH_ONLY").unwrap_or_default();
    let wanted = |part: &str| only.is_empty() || only.split(',').any(|p| p == part);
    if wanted("latency") {
        latency_report(program, clock, n);
    }
    if wanted("rate") {
        rate_report(program, scale);
    }
    if wanted("1080p") {
        throughput_report(program, frames);
    }
}

/// The latency table: `XMEM_BENCH_ROUNDS` rounds (default 3), each measuring raw Aeron, the
/// message + line floor, the tensor pool and its shared-memory part one after the other, then
/// each figure's median over the rounds. This host's two vCPUs land on different physical
/// cores from one run to the next (a cache line costs 60 ns in one run, 300 in another), so
/// only figures of one round compare, and the medians of their ratios are what is reported.
fn latency_report(program: &PeerProgram, clock: &Clock, n: usize) {
    let rounds: usize = std::env::var("XMEM_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .clamp(1, 20);
    let names = [
        "raw Aeron IPC offer → poll, 48 B (floor)",
        "raw Aeron IPC offer → poll, then one cache line of shared memory read (descriptor + slot floor)",
        "tensor pool commit → descriptor → validated read, 64 B",
        "its shared-memory part alone: commit → validated read, following the ring",
    ];
    let mut p50 = vec![Vec::new(); 4];
    let mut p99 = vec![Vec::new(); 4];
    let mut ratios = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let round = [
            raw_latency(program, n, clock, false),
            raw_latency(program, n, clock, true),
            tp_latency(program, n, clock),
            crate::tensorpool::commit_latency(program, n, clock),
        ];
        for (k, p) in round.iter().enumerate() {
            p50[k].push(p.p50 as f64);
            p99[k].push(p.p99 as f64);
        }
        let raw = round[0].p50.max(1) as f64;
        ratios.0.push(round[2].p50 as f64 / raw);
        ratios.1.push(round[1].p50 as f64 / raw);
        ratios.2.push(round[2].p50 as f64 / round[1].p50.max(1) as f64);
    }
    println!("| one-way latency, ns, median of {rounds} rounds | p50 | p99 |");
    println!("|---|---|---|");
    for (k, name) in names.iter().enumerate() {
        println!(
            "| {name} | {:.0} | {:.0} |",
            crate::tp_bridge::median(&mut p50[k]),
            crate::tp_bridge::median(&mut p99[k])
        );
    }
    let tp_raw: Vec<String> = ratios.0.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "\ntensor pool p50 ÷ raw Aeron p50 of the same round: median {:.2}× (rounds: {}; goal ≤ 1.5×); \
         the message + line floor ÷ raw: {:.2}×; the tensor pool ÷ that floor: {:.2}×\n",
        crate::tp_bridge::median(&mut ratios.0.clone()),
        tp_raw.join(", "),
        crate::tp_bridge::median(&mut ratios.1),
        crate::tp_bridge::median(&mut ratios.2),
    );
    let (tp_cost, raw_cost) = one_core_cost(n * 4);
    println!("| one core, every line in its cache: mean ns a round | ns | of raw |");
    println!("|---|---|---|");
    println!("| raw Aeron IPC offer + poll, 48 B | {raw_cost:.0} | 1.00× |");
    println!(
        "| tensor pool publish + poll + validated copy, 64 B | {tp_cost:.0} | {:.2}× |\n",
        tp_cost / raw_cost.max(1.0)
    );
}

fn rate_report(program: &PeerProgram, scale: f64) {
    let (tp_rate, raw_rate) = rates(program, (1.0 * scale).clamp(0.2, 2.0));
    println!("| messages accepted by the other process, per second | rate | of raw |");
    println!("|---|---|---|");
    println!("| raw Aeron IPC, 48 B | {raw_rate:.0} | 100 % |");
    println!(
        "| tensor pool frames, 64 B | {tp_rate:.0} | {:.0} % |",
        100.0 * tp_rate / raw_rate.max(1.0)
    );
    println!("\n(goal ≥ 50 %)\n");
}

fn throughput_report(program: &PeerProgram, frames: u64) {
    let bound = crate::streams::fill_bound(FRAME_1080P, frames, 8);
    let (alone, _) = throughput_1080p(program, frames, false);
    let (per_s, accepted) = throughput_1080p(program, frames, true);
    println!("| 1920×1080×3, every byte written | frames/s | of the memset bound |");
    println!("|---|---|---|");
    println!("| memset into 8 shared buffers in turn (bound) | {bound:.0} | 100 % |");
    println!(
        "| tensor pool producer over Aeron, no consumer (descriptors find no subscriber) | {alone:.0} | {:.1} % |",
        100.0 * alone / bound
    );
    println!(
        "| tensor pool producer over Aeron, a consumer process copying every frame | {per_s:.0} | {:.1} % |",
        100.0 * per_s / bound
    );
    println!("\nthe consumer process accepted {accepted} of {frames} frames (goal for the producer: ≥ 97 %)");
}
