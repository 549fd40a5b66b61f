//! The bridge beside raw Aeron UDP on the same link, in one run: two media drivers ("hosts" A
//! and B) in scratch directories, UDP over 127.0.0.1 between them (or between two network
//! namespaces: `XMEM_BENCH_BRIDGE_LINK`), A's side on one thread and B's on another.
//!
//! - **Throughput**: 1920×1080×3 frames. The bridge: a producer on A commits frames as fast as
//!   it can, the sender forwards what it gets (a frame it cannot keep up with is skipped: the
//!   producer never waits), the receiver on B commits each into its local stream, a consumer on
//!   B accepts them; frames/s at B's consumer. The floor: the same bytes as raw Aeron UDP
//!   messages of the bridge's chunk size, counted at B. A second floor adds the two copies the
//!   protocol requires and raw UDP does not make: the sender copies each frame out of shared
//!   memory before sending it (so that it can re-check the commit word), the receiver copies
//!   each chunk into its local stream's slot.
//!   The three are measured in rounds, one after the other, and compared by their medians.
//! - **Latency**: 64-byte frames one at a time, from commit on A to accepted on B (one host's
//!   clock), beside a raw UDP message's one-way time.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use xmem_aeron::{Client, ClientOptions, DriverOptions, MediaDriver};
use xmem_tensorpool::commit::FrameSpec;
use xmem_tensorpool::layout::{Dtype, TensorHeader};
use xmem_tensorpool::paths::AllowedDirs;
use xmem_tensorpool::stream::TpProducer;
use xmem_tp_bridge::chunk::chunk_size;
use xmem_tp_bridge::{Receiver, ReceiverOptions, Sender, SenderOptions};
use xmem_tp_control::{Channels, Consumer, ConsumerOptions, Endpoint, Producer, ProducerOptions};

const PERIOD: Duration = Duration::from_millis(100);

struct Host {
    aeron: PathBuf,
    base: PathBuf,
    media: Option<MediaDriver>,
}

/// `XMEM_BENCH_BRIDGE_LINK=A_DIR,B_DIR,B_ADDRESS`: run between two media drivers already
/// running in those Aeron directories (in two network namespaces: `scripts/bench-bridge-netns`),
/// B's side reached at B_ADDRESS, instead of two embedded drivers over 127.0.0.1.
fn link() -> Option<(PathBuf, PathBuf, String)> {
    let v = std::env::var("XMEM_BENCH_BRIDGE_LINK").ok()?;
    let mut it = v.split(',');
    match (it.next(), it.next(), it.next()) {
        (Some(a), Some(b), Some(ip)) => Some((a.into(), b.into(), ip.to_string())),
        _ => panic!("XMEM_BENCH_BRIDGE_LINK takes A_DIR,B_DIR,B_ADDRESS, not {v:?}"),
    }
}

/// Where B's side listens.
fn b_address() -> String {
    link().map_or_else(|| "127.0.0.1".to_string(), |l| l.2)
}

impl Host {
    fn new(tag: &str) -> Host {
        if let Some((a, b, _)) = link() {
            let aeron = if tag == "a" { a } else { b };
            let base = PathBuf::from(format!(
                "/dev/shm/xmem-bench-tpb-{tag}-regions-{}",
                std::process::id()
            ));
            std::fs::create_dir_all(&base).expect("base");
            return Host {
                aeron,
                base,
                media: None,
            };
        }
        let aeron = PathBuf::from(format!("/dev/shm/xmem-bench-tpb-{tag}-{}", std::process::id()));
        let base = PathBuf::from(format!(
            "/dev/shm/xmem-bench-tpb-{tag}-regions-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&base).expect("base");
        let media = MediaDriver::launch(&DriverOptions {
            dir: Some(aeron.clone()),
            ..DriverOptions::default()
        })
        .expect("media driver");
        Host {
            aeron,
            base,
            media: Some(media),
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let ours = self.media.take().is_some();
        let _ = std::fs::remove_dir_all(&self.base);
        if ours {
            let _ = std::fs::remove_dir_all(&self.aeron);
        }
    }
}

fn client(dir: &Path) -> Client {
    Client::connect(&ClientOptions {
        dir: Some(dir.to_path_buf()),
        ..ClientOptions::default()
    })
    .expect("client")
}

/// `XMEM_BENCH_UDP_PARAMS`: channel parameters added to every UDP channel of the run, raw and
/// bridge alike (`|rcv-wnd=2m|so-rcvbuf=2m`: a receiver window of 2 MB instead of Aeron's 128 KB).
fn udp_params() -> String {
    std::env::var("XMEM_BENCH_UDP_PARAMS").unwrap_or_default()
}

fn udp(port: u16, stream: i32) -> Endpoint {
    Endpoint {
        channel: format!("aeron:udp?endpoint={}:{port}{}", b_address(), udp_params()),
        stream_id: stream,
    }
}

fn now_ns() -> u64 {
    xmem_core::os::time::monotonic_ns()
}

/// The median of `v` (sorted here; of an even count, the mean of the middle two).
pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Runs the whole report; `scale` shortens it. The throughputs are measured in `rounds`
/// (`XMEM_BENCH_ROUNDS`, default 3), each round raw UDP, raw UDP with the copies and the
/// bridge one after the other, and compared by their medians: on a shared 2-vCPU machine the
/// link's own rate swings by a third from one few-second window to the next.
pub fn report(scale: f64) {
    let secs = Duration::from_secs_f64((2.0 * scale).max(0.5));
    let rounds: u16 = std::env::var("XMEM_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .clamp(1, 20); // each round takes ports 1000 above the last
    let a = Host::new("a");
    let b = Host::new("b");
    let chunk = chunk_size(1200, 1408, 65_535);
    let frame = 1920 * 1080 * 3;
    let (mut raw, mut copying, mut bridged, mut drops) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for r in 0..rounds {
        let ports = 41_100 + 1000 * r;
        raw.push(raw_throughput(
            &a.aeron,
            &b.aeron,
            ports,
            chunk as usize,
            secs,
            None,
        ));
        copying.push(raw_throughput(
            &a.aeron,
            &b.aeron,
            ports + 40,
            chunk as usize,
            secs,
            Some(frame),
        ));
        let (fps, lost) = bridge(&a, &b, ports + 10, &[1080, 1920, 3], 8 << 20, secs, None);
        bridged.push(fps * frame as f64);
        drops += lost;
    }
    let rounds_text = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{:.2}", x / 1e9))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let per_round: Vec<String> = raw
        .iter()
        .zip(&bridged)
        .map(|(r, b)| format!("{:.2}×", b / r))
        .collect();
    let (raw_text, copying_text, bridged_text) =
        (rounds_text(&raw), rounds_text(&copying), rounds_text(&bridged));
    let (raw_bps, copying_bps, bridge_bps) = (median(&mut raw), median(&mut copying), median(&mut bridged));
    let bridge_fps = bridge_bps / frame as f64;
    let raw_lat = raw_latency(&a.aeron, &b.aeron, 41_120, ((2000.0 * scale) as usize).max(200));
    let mut lat = Histogram::<u64>::new(3).expect("histogram");
    let _ = bridge(
        &a,
        &b,
        41_130,
        &[64],
        4096,
        secs,
        Some((&mut lat, ((2000.0 * scale) as usize).max(200))),
    );
    let p = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e3;
    println!(
        "tensor-pool bridge over Aeron UDP to {}{}, two media drivers (hosts A and B{}), chunk {chunk} B; {rounds} rounds of {:.1} s, medians (each round's GB/s in brackets)",
        b_address(),
        match udp_params() {
            p if p.is_empty() => String::new(),
            p => format!(" (channels with {p})"),
        },
        if link().is_some() {
            ", each in its own network namespace"
        } else {
            ""
        },
        secs.as_secs_f64()
    );
    println!(
        "  raw Aeron UDP, {chunk}-byte messages A → B: {:.2} GB/s (floor) [{raw_text}]",
        raw_bps / 1e9
    );
    println!(
        "  raw Aeron UDP with the bridge's two copies (each frame copied out before sending, each chunk copied into a frame at B): {:.2} GB/s ({:.2}× raw) [{copying_text}]",
        copying_bps / 1e9,
        copying_bps / raw_bps
    );
    println!(
        "  bridge, 1920×1080×3 frames A → B: {bridge_fps:.1} frames/s, {:.2} GB/s ({:.2}× raw, {:.2}× raw with the copies) [{bridged_text}; per round {}]; frames the sender skipped or lost, all rounds: {drops}",
        bridge_bps / 1e9,
        bridge_bps / raw_bps,
        bridge_bps / copying_bps,
        per_round.join(", ")
    );
    println!(
        "  one-way latency µs, p50 / p99: raw UDP 64 B {:.1} / {:.1}; bridge 64-B frame, commit on A → accepted on B {:.1} / {:.1} ({:.1}× raw p50)",
        p(&raw_lat, 0.5),
        p(&raw_lat, 0.99),
        p(&lat, 0.5),
        p(&lat, 0.99),
        p(&lat, 0.5) / p(&raw_lat, 0.5)
    );
}

/// Raw Aeron UDP: `size`-byte messages from A as fast as Aeron takes them, for `secs`; bytes a
/// second received at B. With `copy_frames`, the messages are the chunks of frames of that
/// many bytes, each frame copied into a private buffer before its chunks go, and each chunk
/// copied into a frame buffer at B, as the bridge does.
fn raw_throughput(
    a: &Path,
    b: &Path,
    port: u16,
    size: usize,
    secs: Duration,
    copy_frames: Option<usize>,
) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let (s2, r2, bdir) = (Arc::clone(&stop), Arc::clone(&received), b.to_path_buf());
    let rx = std::thread::spawn(move || {
        let c = client(&bdir);
        let mut sub = c.subscription(&udp(port, 1).channel, 1).expect("sub");
        let mut frame = vec![0u8; copy_frames.unwrap_or(0)];
        let mut at = 0;
        while !s2.load(Ordering::Relaxed) {
            let mut n = 0u64;
            sub.poll(256, |m| {
                n += m.bytes.len() as u64;
                if !frame.is_empty() {
                    if at + m.bytes.len() > frame.len() {
                        at = 0;
                    }
                    frame[at..at + m.bytes.len()].copy_from_slice(m.bytes);
                    at += m.bytes.len();
                }
            })
            .expect("poll");
            r2.fetch_add(n, Ordering::Relaxed);
            if n == 0 {
                // Two vCPUs, two media drivers: a spinning thread would starve them.
                std::thread::yield_now();
            }
        }
    });
    let c = client(a);
    let publication = c.publication(&udp(port, 1).channel, 1).expect("pub");
    while !publication.is_connected() {
        std::thread::yield_now();
    }
    let msg = vec![5u8; size];
    let source = vec![6u8; copy_frames.unwrap_or(0)];
    let mut private = vec![0u8; copy_frames.unwrap_or(0)];
    let start = Instant::now();
    let before = received.load(Ordering::Relaxed);
    'run: while start.elapsed() < secs {
        if copy_frames.is_none() {
            if !publication.offer(&msg).is_sent() {
                std::thread::yield_now();
            }
            continue;
        }
        private.copy_from_slice(&source);
        for chunk in private.chunks(size) {
            while !publication.offer(chunk).is_sent() {
                if start.elapsed() >= secs {
                    break 'run;
                }
                std::thread::yield_now();
            }
        }
    }
    let bytes = received.load(Ordering::Relaxed) - before;
    let elapsed = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    rx.join().expect("receiver");
    bytes as f64 / elapsed
}

/// Raw Aeron UDP one-way latency of 64-byte messages carrying their send time, one at a time
/// as the bridge's latency run sends its frames: the next goes when the last has arrived.
fn raw_latency(a: &Path, b: &Path, port: u16, n: usize) -> Histogram<u64> {
    let bdir = b.to_path_buf();
    let ready = Arc::new(AtomicBool::new(false));
    let arrived = Arc::new(AtomicU64::new(0));
    let (r2, a2) = (Arc::clone(&ready), Arc::clone(&arrived));
    let rx = std::thread::spawn(move || {
        let c = client(&bdir);
        let mut sub = c.subscription(&udp(port, 2).channel, 2).expect("sub");
        r2.store(true, Ordering::Relaxed);
        let mut h = Histogram::<u64>::new(3).expect("histogram");
        let mut got = 0;
        while got < n {
            let work = sub
                .poll(16, |m| {
                    let t = u64::from_le_bytes(m.bytes[..8].try_into().expect("8 bytes"));
                    let _ = h.record(now_ns().saturating_sub(t));
                    got += 1;
                    a2.store(got as u64, Ordering::Release);
                })
                .expect("poll");
            if work == 0 {
                std::thread::yield_now();
            }
        }
        h
    });
    let c = client(a);
    let publication = c.publication(&udp(port, 2).channel, 2).expect("pub");
    while !(publication.is_connected() && ready.load(Ordering::Relaxed)) {
        std::thread::yield_now();
    }
    let mut sent = 0;
    while sent < n {
        let mut msg = [0u8; 64];
        msg[..8].copy_from_slice(&now_ns().to_le_bytes());
        if publication.offer(&msg).is_sent() {
            sent += 1;
            // One at a time, as the bridge's latency run: no queueing in the numbers (a lost
            // message is given up after 100 ms, as a bridge frame is).
            let t = Instant::now();
            while arrived.load(Ordering::Acquire) < sent as u64 && t.elapsed() < Duration::from_millis(100) {
                std::thread::yield_now();
            }
        }
    }
    rx.join().expect("receiver")
}

/// The bridge A → B for `secs` (or, with `latency`, for that many frames one at a time, each
/// one's commit → accepted time recorded). Returns frames/s accepted at B and frames lost.
fn bridge(
    a: &Host,
    b: &Host,
    port: u16,
    dims: &[i32],
    stride: u32,
    secs: Duration,
    latency: Option<(&mut Histogram<u64>, usize)>,
) -> (f64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(AtomicBool::new(false));
    let (s2, acc2, r2) = (Arc::clone(&stop), Arc::clone(&accepted), Arc::clone(&ready));
    let (baeron, bbase) = (b.aeron.clone(), b.base.clone());
    let lat_n = latency.as_ref().map(|(_, n)| *n);
    let rx = std::thread::spawn(move || {
        let c = client(&baeron);
        let local = Channels::default();
        let mut receiver = Receiver::new(
            &c,
            ReceiverOptions {
                dest_stream_id: 20_000,
                payload: udp(port, 3000),
                control: udp(port + 1, 3001),
                local: local.clone(),
                announce_period: PERIOD,
                base_dir: bbase.clone(),
                namespace: "b".into(),
                nslots: 16,
                pools: vec![(1, stride)],
                max_payload_bytes: 1 << 30,
                assembly_timeout: Duration::from_millis(250),
                integrity: false,
                forward: Default::default(),
                xmem_stream: None,
            },
        )
        .expect("receiver");
        let mut o = ConsumerOptions::new(20_000, AllowedDirs::new([&bbase]).expect("base"));
        o.announce_period = PERIOD;
        let mut consumer = Consumer::new(&c, o).expect("consumer");
        let mut h = Histogram::<u64>::new(3).expect("histogram");
        let mut last_seq = None;
        while !s2.load(Ordering::Relaxed) {
            if receiver.poll().expect("receiver") == 0 {
                std::thread::yield_now();
            }
            consumer
                .poll(16, |f| {
                    if lat_n.is_some() {
                        let _ = h.record(now_ns().saturating_sub(f.accepted.slot.timestamp_ns));
                    }
                    last_seq = Some(f.descriptor.seq);
                    acc2.fetch_add(1, Ordering::Relaxed);
                })
                .expect("consumer");
            if consumer.announce().is_some() && receiver.source().is_some() {
                r2.store(true, Ordering::Relaxed);
            }
        }
        (h, last_seq)
    });
    let c = client(&a.aeron);
    let tp = TpProducer::builder(10_000)
        .base_dir(&a.base)
        .namespace("a")
        .nslots(16)
        .pool(1, stride)
        .create()
        .expect("regions");
    let mut producer = Producer::new(
        &c,
        tp,
        ProducerOptions {
            announce_period: PERIOD,
            ..ProducerOptions::default()
        },
    )
    .expect("producer");
    let mut sender = Sender::new(
        &c,
        SenderOptions {
            source_stream_id: 10_000,
            dest_stream_id: 20_000,
            local: Channels::default(),
            allowed: AllowedDirs::new([&a.base]).expect("base"),
            announce_period: PERIOD,
            payload: udp(port, 3000),
            control: udp(port + 1, 3001),
            chunk_size: chunk_size(1200, 1408, 65_535),
            integrity: false,
            send_timeout: Duration::from_millis(250),
            forward: Default::default(),
            xmem_stream: None,
        },
    )
    .expect("sender");
    let len: i32 = dims.iter().product();
    let mut spec = FrameSpec {
        tensor: TensorHeader::row_major(Dtype::Uint8, dims),
        values_len: len as u32,
        timestamp_ns: 0,
        meta_version: 0,
    };
    while !(ready.load(Ordering::Relaxed) && sender.is_connected() && producer.is_connected()) {
        producer.poll().expect("producer");
        sender.poll().expect("sender");
    }
    let start = Instant::now();
    let before = accepted.load(Ordering::Relaxed);
    let mut published = 0u64;
    match lat_n {
        None => {
            while start.elapsed() < secs {
                // The producer commits a new frame whenever the sender is between frames.
                spec.timestamp_ns = now_ns();
                producer
                    .publish(&spec, 0, |b| b.fill(published as u8))
                    .expect("publish");
                published += 1;
                let until = sender.stats().frames + 1;
                while sender.stats().frames < until && start.elapsed() < secs {
                    if sender.poll().expect("sender") == 0 {
                        std::thread::yield_now();
                    }
                }
            }
        }
        Some(n) => {
            while (accepted.load(Ordering::Relaxed) - before) < n as u64
                && start.elapsed() < Duration::from_secs(30)
            {
                let want = accepted.load(Ordering::Relaxed) + 1;
                spec.timestamp_ns = now_ns();
                producer.publish(&spec, 0, |b| b.fill(1)).expect("publish");
                published += 1;
                let t = Instant::now();
                while accepted.load(Ordering::Relaxed) < want && t.elapsed() < Duration::from_millis(100) {
                    if sender.poll().expect("sender") == 0 {
                        std::thread::yield_now();
                    }
                }
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let got = accepted.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    let (h, _) = rx.join().expect("receiver thread");
    if let Some((out, _)) = latency {
        out.add(&h).expect("histogram");
    }
    (got as f64 / elapsed, published.saturating_sub(got))
}
