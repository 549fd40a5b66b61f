//! The tensor-pool driver under load, beside its floor in the same run, one media driver
//! (embedded, in a scratch directory), the tensor-pool driver on a thread of its own:
//!
//! - **Floor**: a raw Aeron IPC round trip (offer → poll → offer back → poll) of an attach
//!   request's size, between this thread and an echo thread: what any request/response over
//!   the same transport costs at the least.
//! - **Attach → first frame**: a consumer attaches (request, the driver's checks, response),
//!   maps the granted regions, and takes the first frame a producer then commits.
//! - **Churn**: 100 clients attach and detach in a loop; each attach's response time, and the
//!   driver thread's CPU time per request (attach + detach + keepalives) from its own CPU clock.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use xmem_aeron::{Client, ClientOptions, DriverOptions, MediaDriver, TP_CHANNEL};
use xmem_tensorpool::commit::FrameSpec;
use xmem_tensorpool::layout::{Dtype, TensorHeader};
use xmem_tensorpool::paths::AllowedDirs;
use xmem_tensorpool::stream::TpProducer;
use xmem_tp_control::{Channels, Consumer, ConsumerOptions, Endpoint, Producer, ProducerOptions};
use xmem_tp_driver::{Driver, DriverClient, DriverClientOptions, DriverConfig, Role};

struct Scratch {
    aeron: PathBuf,
    base: PathBuf,
    media: Option<MediaDriver>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        drop(self.media.take());
        let _ = std::fs::remove_dir_all(&self.base);
        let _ = std::fs::remove_dir_all(&self.aeron);
    }
}

fn client(dir: &Path) -> Client {
    Client::connect(&ClientOptions {
        dir: Some(dir.to_path_buf()),
        ..ClientOptions::default()
    })
    .expect("aeron client")
}

fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// p50 and p99 in microseconds.
fn pct(h: &Histogram<u64>) -> (f64, f64) {
    (
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
    )
}

/// Runs every measurement and prints the report; `scale` shortens it (`XMEM_BENCH_SCALE`).
pub fn report(scale: f64) {
    let tag = format!("xmem-bench-tpd-{}", std::process::id());
    let aeron = PathBuf::from("/dev/shm").join(&tag);
    let base = PathBuf::from("/dev/shm").join(format!("{tag}-regions"));
    std::fs::create_dir_all(&base).expect("base directory");
    let media = MediaDriver::launch(&DriverOptions {
        dir: Some(aeron.clone()),
        ..DriverOptions::default()
    })
    .expect("media driver");
    let scratch = Scratch {
        aeron,
        base,
        media: Some(media),
    };
    let rounds = ((20.0 * scale) as usize).max(2);
    let floor = raw_round_trip(&scratch.aeron, ((2000.0 * scale) as usize).max(100));
    let stop = Arc::new(AtomicBool::new(false));
    let config = format!(
        "[shm]\nbase_dir = \"{b}\"\nallowed_base_dirs = [\"{b}\"]\n\
         [policies]\nnode_id_reuse_cooldown_ms = 0\nepoch_gc_min_age_ns = 0\n\
         [profiles.p]\nheader_nslots = 16\npayload_pools = [{{ pool_id = 1, stride_bytes = 65536 }}]\n\
         [streams.s]\nstream_id = 10000\nprofile = \"p\"\n",
        b = scratch.base.display()
    );
    let config = DriverConfig::parse(&config, "bench", |_| None).expect("bench config");
    let dir = scratch.aeron.clone();
    let stop2 = Arc::clone(&stop);
    let cpu_ns = Arc::new(AtomicU64::new(0));
    let cpu_ns2 = Arc::clone(&cpu_ns);
    let driver_thread = std::thread::spawn(move || {
        let c = client(&dir);
        let mut d = Driver::new(&c, config).expect("driver");
        // The loop of `xmem tp driver` (xmem_tp_driver::run), with its idle strategy.
        let mut idle = xmem_tp_driver::Backoff::default();
        while !stop2.load(Ordering::Relaxed) {
            idle.idle(d.do_work().expect("driver"));
            cpu_ns2.store(thread_cpu().as_nanos() as u64, Ordering::Relaxed);
        }
        let stats = d.stats();
        d.close();
        stats
    });
    let c = client(&scratch.aeron);
    let opts = DriverClientOptions {
        control: Endpoint::tp(1000),
        announce: Endpoint::tp(1000),
        ..DriverClientOptions::default()
    };
    let first_frame = attach_to_first_frame(&c, &opts, &scratch.base, rounds);
    let mut clients: Vec<DriverClient> = (0..100)
        .map(|_| DriverClient::new(&c, opts.clone()).expect("driver client"))
        .collect();
    let cpu_before = cpu_ns.load(Ordering::Relaxed);
    let (attach, churn_wall) = churn(&mut clients, rounds);
    let cpu = Duration::from_nanos(cpu_ns.load(Ordering::Relaxed) - cpu_before);
    stop.store(true, Ordering::Relaxed);
    let _stats = driver_thread.join().expect("driver thread");
    // Each churn round: 100 attaches and 100 detaches.
    let requests = (rounds * 200) as u64;
    let (f50, f99) = pct(&floor);
    let (a50, a99) = pct(&attach);
    let (ff50, ff99) = pct(&first_frame);
    println!("tensor-pool driver (one media driver, driver on its own thread), {rounds} rounds");
    println!("  floor: raw Aeron IPC round trip of 35 bytes: p50 {f50:.1} µs, p99 {f99:.1} µs");
    println!(
        "  attach response (100 clients attaching and detaching): p50 {a50:.1} µs ({:.1}× floor), p99 {a99:.1} µs ({:.1}× floor)",
        a50 / f50,
        a99 / f99
    );
    println!(
        "  attach → first frame received: p50 {ff50:.1} µs ({:.1}× floor), p99 {ff99:.1} µs",
        ff50 / f50
    );
    println!(
        "  driver CPU during the churn: {:.1} ms for {requests} requests ({:.1} µs each; {:.0}% of one core over its {:.2} s)",
        cpu.as_secs_f64() * 1e3,
        cpu.as_secs_f64() * 1e6 / requests.max(1) as f64,
        100.0 * cpu.as_secs_f64() / churn_wall.as_secs_f64().max(1e-9),
        churn_wall.as_secs_f64()
    );
}

/// Ping-pong of a 35-byte message (an attach request's size) over raw Aeron IPC.
fn raw_round_trip(dir: &Path, n: usize) -> Histogram<u64> {
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let dir2 = dir.to_path_buf();
    let echo = std::thread::spawn(move || {
        let c = client(&dir2);
        let mut inn = c.subscription(TP_CHANNEL, 5001).expect("sub");
        let out = c.publication(TP_CHANNEL, 5002).expect("pub");
        while !stop2.load(Ordering::Relaxed) {
            let mut got = Vec::new();
            inn.poll(16, |m| got.push(m.bytes.to_vec())).expect("poll");
            for b in got {
                while !out.offer(&b).is_sent() && !stop2.load(Ordering::Relaxed) {}
            }
        }
    });
    let c = client(dir);
    let out = c.publication(TP_CHANNEL, 5001).expect("pub");
    let mut inn = c.subscription(TP_CHANNEL, 5002).expect("sub");
    while !(out.is_connected() && inn.is_connected()) {
        std::thread::yield_now();
    }
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    let msg = [7u8; 35];
    for i in 0..n + 100 {
        let t = Instant::now();
        while !out.offer(&msg).is_sent() {}
        let mut back = false;
        while !back {
            inn.poll(1, |_| back = true).expect("poll");
        }
        if i >= 100 {
            let _ = h.record(t.elapsed().as_nanos() as u64);
        }
    }
    stop.store(true, Ordering::Relaxed);
    echo.join().expect("echo");
    h
}

fn attach_to_first_frame(
    c: &Client,
    opts: &DriverClientOptions,
    base: &Path,
    rounds: usize,
) -> Histogram<u64> {
    let allowed = AllowedDirs::new([base]).expect("base");
    let mut pdc = DriverClient::new(c, opts.clone()).expect("driver client");
    let grant = pdc
        .attach(10000, Role::Producer, 0)
        .expect("producer attach")
        .grant
        .clone();
    let tp = TpProducer::attach(&grant.announce, &allowed).expect("regions");
    let mut producer = Producer::driven(c, tp, ProducerOptions::default()).expect("producer");
    let spec = FrameSpec {
        tensor: TensorHeader::row_major(Dtype::Uint8, &[4096]),
        values_len: 4096,
        timestamp_ns: 0,
        meta_version: 0,
    };
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..rounds {
        let mut opts_c = ConsumerOptions::new(10000, allowed.clone());
        opts_c.channels = Channels::default();
        let mut consumer = Consumer::new(c, opts_c).expect("consumer");
        // The descriptor stream connects once per subscription: before the clock starts.
        while !producer.is_connected() {
            producer.poll().expect("poll");
            consumer.poll(1, |_| {}).expect("poll");
        }
        let mut cdc = DriverClient::new(c, opts.clone()).expect("driver client");
        let t = Instant::now();
        let a = cdc
            .attach(10000, Role::Consumer, 0)
            .expect("consumer attach")
            .grant
            .clone();
        consumer.adopt(&a.announce).expect("map");
        producer.publish(&spec, 0, |b| b.fill(1)).expect("publish");
        let mut got = false;
        while !got {
            consumer.poll(16, |_| got = true).expect("poll");
        }
        let _ = h.record(t.elapsed().as_nanos() as u64);
        cdc.detach().expect("detach");
        pdc.poll().expect("keepalive");
    }
    pdc.detach().expect("detach");
    h
}

fn churn(clients: &mut [DriverClient], rounds: usize) -> (Histogram<u64>, Duration) {
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    let start = Instant::now();
    for _ in 0..rounds {
        for dc in clients.iter_mut() {
            let t = Instant::now();
            dc.attach(10000, Role::Consumer, 0).expect("attach");
            let _ = h.record(t.elapsed().as_nanos() as u64);
        }
        for dc in clients.iter_mut() {
            dc.detach().expect("detach");
        }
    }
    (h, start.elapsed())
}
