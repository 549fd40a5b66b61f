//! `xmem demo`: a publisher process streams 1080p RGB frames to subscriber processes; then the
//! same frames as an SHM Tensor Pool over Aeron, on a media driver embedded in this process.
//!
//! The publisher (this process) loans each frame from the stream's pool, fills it in place and
//! publishes it: every subscriber receives a read-only guard on the same memory, so a frame lives
//! exactly until the last subscriber lets go of it. The stream is reliable (`Block`): the
//! publisher waits while a subscriber's queue is full, and every subscriber sees every frame.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use xmem_core::os::time::monotonic_ns;
use xmem_core::stream::{Policy, Publisher, Subscriber};
use xmem_core::{DType, Error, TensorDesc};

use crate::fmt;

#[derive(clap::Args, Debug)]
pub(crate) struct DemoArgs {
    /// Consumer processes.
    #[arg(long, default_value_t = 2)]
    consumers: usize,
    /// How long to run, e.g. `3s`, `500ms`.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    duration: Duration,
    /// Frame width in pixels.
    #[arg(long, default_value_t = 1920)]
    width: u64,
    /// Frame height in pixels.
    #[arg(long, default_value_t = 1080)]
    height: u64,
    /// Buffers in the stream's pool (few, so that they stay in cache).
    #[arg(long, default_value_t = 6)]
    buffers: u32,
    /// Leave out the second part: the same frames as an SHM Tensor Pool over Aeron.
    #[arg(long)]
    no_tensor_pool: bool,
    /// Put the stream's buffers in device memory instead: `cuda`, `cuda:N`, or `host` (a
    /// stand-in with the same hand-over between processes, for machines without a GPU).
    #[arg(long, value_name = "DEVICE")]
    device: Option<String>,
}

#[derive(clap::Args, Debug)]
pub(crate) struct ConsumerArgs {
    /// The stream to subscribe to.
    #[arg(long)]
    stream: String,
    /// Expected frame shape, `HxWxC`.
    #[arg(long)]
    shape: String,
    /// The stream is a device stream (`xmem demo --device`).
    #[arg(long)]
    device: bool,
}

/// Parses `3s`, `250ms`, `2m`, `1h`, `1.5s`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let v: f64 = num
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (try 3s or 500ms)"))?;
    let secs = match unit {
        "us" | "µs" => v / 1e6,
        "ms" => v / 1e3,
        "s" | "" => v,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("unknown unit in {s:?}: use us, ms, s, m or h")),
    };
    if !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("duration {s:?} out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Latest figures a consumer reported.
#[derive(Default, Clone)]
struct ConsumerStats {
    frames: u64,
    bad: u64,
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
    done: bool,
}

struct Consumer {
    child: Child,
    stats: Arc<Mutex<ConsumerStats>>,
    /// Reads the consumer's report lines; ends when the consumer exits.
    reader: Option<std::thread::JoinHandle<()>>,
}

pub(crate) fn run(args: DemoArgs) -> Result<()> {
    if args.consumers == 0 || args.consumers > 32 {
        bail!("--consumers must be 1 to 32");
    }
    if let Some(device) = &args.device {
        return super::demo_device::run(
            device,
            args.consumers,
            args.duration,
            args.width,
            args.height,
            args.buffers,
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;

    let frame_bytes = args.width * args.height * 3;
    let name = format!("demo-{}", std::process::id());
    let mut publisher = Publisher::builder(&name)
        .buffers(args.buffers)
        .buffer_size(frame_bytes)
        .alignment(4096)
        .depth(2)
        .max_subscribers(args.consumers as u32)
        .policy(Policy::Block {
            timeout: Duration::from_secs(5),
        })
        .create()
        .context("creating the demo stream")?;
    let shape = format!("{}x{}x3", args.height, args.width);
    outln!(
        "xmem demo: 1 publisher → {} subscribers, {}×{}×3 u8 frames ({}), stream {name} over {} buffers",
        args.consumers,
        args.width,
        args.height,
        fmt::bytes(frame_bytes),
        args.buffers
    )?;

    let exe = std::env::current_exe()?;
    let mut consumers = Vec::new();
    for _ in 0..args.consumers {
        let mut child = Command::new(&exe)
            .args(["demo-consumer", "--stream", &name, "--shape", &shape])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting a subscriber")?;
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().transpose()?.unwrap_or_default();
        if first != "ready" {
            bail!("a subscriber failed to start: {first:?}");
        }
        let stats = Arc::new(Mutex::new(ConsumerStats::default()));
        let sink = stats.clone();
        let reader = std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                if let Some(s) = parse_stats(&line) {
                    *sink.lock().unwrap() = s;
                }
            }
        });
        consumers.push(Consumer {
            child,
            stats,
            reader: Some(reader),
        });
    }

    let tensor = TensorDesc::contiguous(DType::U8, &[args.height, args.width, 3])?;
    let started = Instant::now();
    let end = started + args.duration;
    let mut next_report = started + Duration::from_secs(1);
    let mut produced = 0u64;
    let mut last = (started, 0u64);
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        let mut frame = publisher.loan().context("loaning a frame")?;
        let seq = produced;
        frame.bytes_mut().fill(seq as u8);
        frame.set_tensor(&tensor)?;
        frame.set_content_type("image/rgb8")?;
        frame.set_producer("xmem demo")?;
        frame.set_timestamp_ns(monotonic_ns());
        match publisher.publish(frame) {
            Ok(_) => {}
            Err(e) if matches!(e.error(), Error::QueueFull { .. }) => {
                bail!("a subscriber stopped taking frames")
            }
            Err(e) => return Err(Error::from(e)).context("publishing a frame"),
        }
        if publisher.subscriber_count() < consumers.len() {
            bail!("a subscriber went away");
        }
        produced += 1;
        let now = Instant::now();
        if now >= next_report {
            let fps = (produced - last.1) as f64 / (now - last.0).as_secs_f64();
            let mut line = format!(
                "{:>5.1}s  publisher {:>6.0} frames/s {:>6.2} GB/s",
                (now - started).as_secs_f64(),
                fps,
                fps * frame_bytes as f64 / 1e9
            );
            for (i, c) in consumers.iter().enumerate() {
                let s = c.stats.lock().unwrap().clone();
                line += &format!(
                    "  | s{} p50 {} p99 {}",
                    i + 1,
                    fmt::nanos(s.p50),
                    fmt::nanos(s.p99)
                );
            }
            outln!("{line}")?;
            last = (now, produced);
            next_report = now + Duration::from_secs(1);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();

    // End of stream: subscribers drain what was published, get `PublisherGone`, report and exit.
    let pool = publisher.pool().clone();
    drop(publisher);
    let mut rows = vec![vec![
        "publisher".to_string(),
        produced.to_string(),
        format!("{:.0}", produced as f64 / elapsed),
        format!("{:.2}", produced as f64 * frame_bytes as f64 / elapsed / 1e9),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ]];
    let mut failures = 0;
    for (i, c) in consumers.iter_mut().enumerate() {
        let status = c.child.wait()?;
        // Its final report may still be in the pipe: let the reader finish first.
        if let Some(reader) = c.reader.take() {
            let _ = reader.join();
        }
        let s = c.stats.lock().unwrap().clone();
        if !status.success() || !s.done || s.bad > 0 || s.frames != produced {
            failures += 1;
        }
        rows.push(vec![
            format!("subscriber {}", i + 1),
            s.frames.to_string(),
            format!("{:.0}", s.frames as f64 / elapsed),
            format!("{:.2}", s.frames as f64 * frame_bytes as f64 / elapsed / 1e9),
            fmt::nanos(s.p50),
            fmt::nanos(s.p99),
            fmt::nanos(s.p999),
            fmt::nanos(s.max),
            s.bad.to_string(),
        ]);
    }
    outln!()?;
    fmt::table(
        &[
            "PROCESS", "FRAMES", "FRAMES/S", "GB/S", "P50", "P99", "P99.9", "MAX", "BAD",
        ],
        &rows,
    )?;
    outln!(
        "\nlatency: publisher's timestamp, taken just before publishing → the subscriber holds the frame"
    )?;
    let free = pool.free_count();
    drop(pool);
    if failures > 0 {
        bail!("{failures} subscriber(s) missed frames, saw damaged ones, or failed");
    }
    if free != args.buffers {
        bail!("{} buffer(s) were not returned to the pool", args.buffers - free);
    }
    if args.no_tensor_pool || stop.load(Ordering::Relaxed) {
        return Ok(());
    }
    outln!()?;
    super::tp_live::demo(super::tp_live::DemoArgs {
        consumers: args.consumers,
        duration: args.duration,
        shape,
        fps: 60.0,
    })
}

fn parse_stats(line: &str) -> Option<ConsumerStats> {
    let mut words = line.split_whitespace();
    let done = match words.next()? {
        "stats" => false,
        "done" => true,
        _ => return None,
    };
    let v: Vec<u64> = words.filter_map(|w| w.parse().ok()).collect();
    Some(ConsumerStats {
        frames: *v.first()?,
        bad: *v.get(1)?,
        p50: *v.get(2)?,
        p99: *v.get(3)?,
        p999: *v.get(4)?,
        max: *v.get(5)?,
        done,
    })
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The subscriber process: takes each frame published, checks it, measures, lets go.
pub(crate) fn consumer(args: ConsumerArgs) -> Result<()> {
    // The publisher ends us by closing the stream, also on Ctrl-C; don't die before it does.
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::new(AtomicBool::new(false)))?;
    if args.device {
        return super::demo_device::consumer(&args.stream);
    }
    let shape: Vec<u64> = args
        .shape
        .split('x')
        .map(|d| d.parse())
        .collect::<Result<_, _>>()?;
    let mut subscriber = Subscriber::open(&args.stream)?;
    let mut out = std::io::stdout();
    writeln!(out, "ready")?;
    out.flush()?;
    let mut latencies = Vec::with_capacity(1 << 16);
    let (mut frames, mut bad) = (0u64, 0u64);
    let mut next_report = Instant::now() + Duration::from_millis(500);
    let report = |out: &mut std::io::Stdout, word: &str, frames: u64, bad: u64, lat: &mut Vec<u64>| {
        lat.sort_unstable();
        let _ = writeln!(
            out,
            "{word} {frames} {bad} {} {} {} {}",
            percentile(lat, 0.5),
            percentile(lat, 0.99),
            percentile(lat, 0.999),
            lat.last().copied().unwrap_or(0)
        );
        let _ = out.flush();
    };
    loop {
        let frame = match subscriber.receive_timeout(Duration::from_millis(200)) {
            Ok(Some(frame)) => frame,
            Ok(None) => continue,
            Err(Error::PublisherGone { .. }) => break,
            Err(e) => return Err(e.into()),
        };
        latencies.push(monotonic_ns().saturating_sub(frame.timestamp_ns()));
        let expect = frame.sequence() as u8;
        let bytes = frame.bytes();
        let intact = frame.sequence() == frames
            && frame.tensor()?.shape() == shape.as_slice()
            && bytes.iter().step_by(4096).all(|&b| b == expect)
            && bytes.last() == Some(&expect);
        bad += u64::from(!intact);
        frames += 1;
        drop(frame);
        if Instant::now() >= next_report {
            report(&mut out, "stats", frames, bad, &mut latencies);
            next_report = Instant::now() + Duration::from_millis(500);
        }
    }
    report(&mut out, "done", frames, bad, &mut latencies);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("3s").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
