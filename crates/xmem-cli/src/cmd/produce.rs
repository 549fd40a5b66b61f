//! `xmem produce` / `xmem consume`: a sample publisher and subscriber of a stream, for trying a
//! pipeline from the shell and for driving other clients (Python) in tests and benchmarks.
//!
//! Frame `n` is filled with the byte `n % 256`, its sequence number is `n`, and its time stamp
//! is taken just before publishing: a consumer can check every byte and measure latency.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use xmem_core::os::time::monotonic_ns;
use xmem_core::stream::{Policy, Publisher, Subscriber};
use xmem_core::{DType, Error, TensorDesc};

use crate::fmt;

#[derive(clap::Args, Debug)]
pub(crate) struct ProduceArgs {
    /// The stream to create.
    name: String,
    /// Frame shape, e.g. `1080x1920x3`.
    #[arg(long, default_value = "1080x1920x3")]
    shape: String,
    /// Element type (uint8, float32, …).
    #[arg(long, default_value = "uint8")]
    dtype: String,
    /// Frames to publish (0: until stopped).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Frames per second (0: as fast as the stream takes them).
    #[arg(long, default_value_t = 0.0)]
    fps: f64,
    /// `block` (reliable), `drop-oldest` or `latest`.
    #[arg(long, default_value = "block")]
    policy: String,
    /// Buffers in the stream's pool.
    #[arg(long, default_value_t = 6)]
    buffers: u32,
    /// Queue depth per subscriber.
    #[arg(long, default_value_t = 2)]
    depth: u32,
    /// Wait for this many subscribers before the first frame.
    #[arg(long, default_value_t = 0)]
    subscribers: usize,
    /// Give up waiting for subscribers (or, with `block`, for room) after this long.
    #[arg(long, default_value = "30s", value_parser = super::demo::parse_duration)]
    timeout: Duration,
}

fn parse_shape(s: &str) -> Result<Vec<u64>> {
    s.split('x')
        .map(|d| {
            d.parse::<u64>()
                .with_context(|| format!("bad shape {s:?}: use e.g. 1080x1920x3"))
        })
        .collect()
}

/// A flag raised by SIGINT or SIGTERM (Ctrl-C, `docker stop`, `kill`), so that the command
/// stops at its next frame and drops its stream (and the pool) instead of dying with them in
/// /dev/shm. A second signal while stopping ends the process at once.
pub(crate) fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, stop.clone())?;
        signal_hook::flag::register(signal, stop.clone())?;
    }
    Ok(stop)
}

pub(crate) fn produce(args: ProduceArgs) -> Result<()> {
    let stop = stop_on_signals()?;
    let dtype: DType = args.dtype.parse()?;
    let desc = TensorDesc::contiguous(dtype, &parse_shape(&args.shape)?)?;
    let bytes = desc.num_elements() * dtype.size() as u64;
    let policy = match args.policy.as_str() {
        "block" => Policy::Block {
            timeout: args.timeout,
        },
        "drop-oldest" | "drop_oldest" => Policy::DropOldest,
        "latest" => Policy::Latest,
        other => bail!("unknown policy {other:?}: use block, drop-oldest or latest"),
    };
    let mut b = Publisher::builder(&args.name)
        .buffer_size(bytes)
        .buffers(args.buffers)
        .alignment(4096)
        .policy(policy)
        .max_subscribers(args.subscribers.max(8) as u32);
    if !matches!(policy, Policy::Latest) {
        b = b.depth(args.depth);
    }
    let mut publisher = b.create().context("creating the stream")?;
    let deadline = Instant::now() + args.timeout;
    while publisher.subscriber_count() < args.subscribers {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} subscriber(s) did not join within {:?}",
                args.subscribers,
                args.timeout
            );
        }
        std::thread::sleep(Duration::from_millis(1)); // waiting for people, not for memory
    }
    outln!("ready")?;
    std::io::stdout().flush()?;
    let started = Instant::now();
    let period = (args.fps > 0.0).then(|| Duration::from_secs_f64(1.0 / args.fps));
    let mut n = 0u64;
    while (args.count == 0 || n < args.count) && !stop.load(Ordering::Relaxed) {
        if let Some(p) = period {
            let due = started + p * n as u32;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let mut frame = publisher.loan()?;
        frame.set_tensor(&desc)?;
        frame.bytes_mut().fill(n as u8);
        frame.set_content_type("application/x-xmem-sample")?;
        frame.set_timestamp_ns(monotonic_ns());
        publisher.publish(frame)?;
        n += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    outln!(
        "done {n} frames in {secs:.3}s ({:.0} frames/s, {}/s)",
        n as f64 / secs,
        fmt::bytes((n as f64 * bytes as f64 / secs) as u64)
    )?;
    Ok(())
}

#[derive(clap::Args, Debug)]
pub(crate) struct ConsumeArgs {
    /// The stream to join.
    name: String,
    /// Stop after this many frames (0: until the publisher is gone).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// How long a receive spins before it sleeps, e.g. `20us`, `5ms`.
    #[arg(long, value_parser = super::demo::parse_duration)]
    spin: Option<Duration>,
    /// For steady streams: wake this long before the next frame is due, e.g. `300us`.
    #[arg(long, value_parser = super::demo::parse_duration)]
    wake_ahead: Option<Duration>,
}

pub(crate) fn consume(args: ConsumeArgs) -> Result<()> {
    let stop = stop_on_signals()?;
    let mut builder = Subscriber::builder(&args.name);
    if let Some(spin) = args.spin {
        builder = builder.spin(spin);
    }
    if let Some(lead) = args.wake_ahead {
        builder = builder.wake_ahead(lead);
    }
    let mut sub = builder.open()?;
    let (mut n, mut bad) = (0u64, 0u64);
    let mut latencies = Vec::new();
    let started = Instant::now();
    while (args.count == 0 || n < args.count) && !stop.load(Ordering::Relaxed) {
        // Bounded waits, so that a signal is seen within one.
        let frame = match sub.receive_timeout(Duration::from_millis(100)) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(Error::PublisherGone { .. }) => break,
            Err(e) => return Err(e.into()),
        };
        latencies.push(monotonic_ns().saturating_sub(frame.timestamp_ns()));
        let want = frame.sequence() as u8;
        bad += u64::from(!all_bytes_are(frame.bytes(), want));
        n += 1;
    }
    latencies.sort_unstable();
    let p = |q: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    outln!(
        "received {n} frames in {:.3}s, {} dropped, {bad} damaged; latency p50 {} p99 {}; woken {} times",
        started.elapsed().as_secs_f64(),
        sub.dropped(),
        fmt::nanos(p(0.5)),
        fmt::nanos(p(0.99)),
        sub.wakeups()
    )?;
    if bad > 0 {
        bail!("{bad} frame(s) did not hold what was published");
    }
    Ok(())
}

/// Whether every byte of `bytes` is `want` (eight at a time).
fn all_bytes_are(bytes: &[u8], want: u8) -> bool {
    let word = u64::from_ne_bytes([want; 8]);
    let chunks = bytes.chunks_exact(8);
    let rest = chunks.remainder();
    chunks.fold(0u64, |acc, c| {
        acc | (u64::from_ne_bytes(c.try_into().expect("8 bytes")) ^ word)
    }) == 0
        && rest.iter().all(|&b| b == want)
}
