//! `xmem demo --device cuda|host`: the demo's stream over a device pool. The publisher fills
//! each frame on the device and synchronises before publishing; subscriber processes receive
//! the allocation's descriptor from it at start, map the same memory, and check each frame's
//! first and last bytes by copying them back.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use xmem_core::os::time::monotonic_ns;
use xmem_core::stream::{Policy, Publisher, Subscriber};
use xmem_core::{DType, Error, TensorDesc};
use xmem_device::{DevicePublisher, DeviceSubscriber};

use crate::fmt;

/// Bytes of each end of a frame a subscriber copies back and checks.
const SAMPLE: usize = 4096;

/// Runs the device demo; `device` is `cuda`, `cuda:N` or `host`.
pub(crate) fn run(
    device: &str,
    consumers: usize,
    duration: Duration,
    width: u64,
    height: u64,
    buffers: u32,
) -> Result<()> {
    let frame_bytes = width * height * 3;
    let name = format!("demo-device-{}", std::process::id());
    let builder = Publisher::builder(&name)
        .buffers(buffers)
        .buffer_size(frame_bytes)
        .depth(2)
        .max_subscribers(consumers as u32)
        .policy(Policy::Block {
            timeout: Duration::from_secs(5),
        });
    let mut publisher = DevicePublisher::create(builder, xmem_device::backend_named(device, &name)?)
        .context("creating the demo's device stream")?;
    outln!(
        "xmem demo on {}: 1 publisher → {consumers} subscribers, {width}×{height}×3 u8 frames ({}) in one device allocation of {}",
        publisher.device().describe_device(),
        fmt::bytes(frame_bytes),
        fmt::bytes(publisher.device().record().bytes)
    )?;
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for _ in 0..consumers {
        let mut child = Command::new(&exe)
            .args([
                "demo-consumer",
                "--stream",
                &name,
                "--shape",
                &format!("{height}x{width}x3"),
                "--device",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting a subscriber")?;
        let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        let first = lines.next().transpose()?.unwrap_or_default();
        if first != "ready" {
            bail!("a subscriber failed to start: {first:?}");
        }
        children.push((child, lines));
    }
    let tensor = TensorDesc::contiguous(DType::U8, &[height, width, 3])?;
    let started = Instant::now();
    let mut produced = 0u64;
    let mut sync_ns = Vec::new();
    while started.elapsed() < duration {
        let mut frame = publisher.loan()?;
        publisher.device().fill(&frame, produced as u8)?;
        frame.set_tensor(&tensor)?;
        frame.set_timestamp_ns(monotonic_ns());
        let t = monotonic_ns();
        publisher.device().synchronize()?;
        sync_ns.push(monotonic_ns() - t);
        match publisher.publish(frame) {
            Ok(_) => {}
            Err(e) => return Err(e.error).context("publishing a frame"),
        }
        produced += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    drop(publisher);
    let mut rows = vec![vec![
        "publisher".to_string(),
        produced.to_string(),
        format!("{:.0}", produced as f64 / elapsed),
        String::new(),
        String::new(),
    ]];
    let mut failures = 0;
    for (i, (mut child, lines)) in children.into_iter().enumerate() {
        let report = lines.map_while(Result::ok).find(|l| l.starts_with("done "));
        let ok = child.wait()?.success();
        let v: Vec<u64> = report
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        let (frames, bad, p50) = (
            v.first().copied().unwrap_or(0),
            v.get(1).copied().unwrap_or(1),
            v.get(2).copied().unwrap_or(0),
        );
        if !ok || frames != produced || bad > 0 {
            failures += 1;
        }
        rows.push(vec![
            format!("subscriber {}", i + 1),
            frames.to_string(),
            format!("{:.0}", frames as f64 / elapsed),
            fmt::nanos(p50),
            bad.to_string(),
        ]);
    }
    sync_ns.sort_unstable();
    outln!()?;
    fmt::table(&["PROCESS", "FRAMES", "FRAMES/S", "P50", "BAD"], &rows)?;
    outln!(
        "\nthe publisher's device synchronisation before each publish: p50 {}",
        fmt::nanos(sync_ns.get(sync_ns.len() / 2).copied().unwrap_or(0))
    )?;
    if failures > 0 {
        bail!("{failures} subscriber(s) missed frames, saw damaged ones, or failed");
    }
    Ok(())
}

/// The subscriber side: receives every frame, copies back its ends, checks them.
pub(crate) fn consumer(stream: &str) -> Result<()> {
    let mut subscriber = DeviceSubscriber::open(Subscriber::builder(stream))?;
    let mut out = std::io::stdout();
    writeln!(out, "ready")?;
    out.flush()?;
    let (mut frames, mut bad) = (0u64, 0u64);
    let mut latencies = Vec::new();
    let mut head = vec![0u8; SAMPLE];
    let mut tail = vec![0u8; SAMPLE];
    loop {
        let frame = match subscriber.receive_timeout(Duration::from_millis(200)) {
            Ok(Some(frame)) => frame,
            Ok(None) => continue,
            Err(xmem_device::DeviceError::Pool(Error::PublisherGone { .. })) => break,
            Err(e) => return Err(e.into()),
        };
        let size = frame.len() as u64;
        let n = SAMPLE.min(frame.len());
        subscriber.device().read(&frame, 0, &mut head[..n])?;
        subscriber
            .device()
            .read(&frame, size - n as u64, &mut tail[..n])?;
        latencies.push(monotonic_ns().saturating_sub(frame.timestamp_ns()));
        let expect = frame.sequence() as u8;
        let intact = frame.sequence() == frames && head[..n].iter().chain(&tail[..n]).all(|&b| b == expect);
        bad += u64::from(!intact);
        frames += 1;
    }
    latencies.sort_unstable();
    writeln!(
        out,
        "done {frames} {bad} {}",
        latencies.get(latencies.len() / 2).copied().unwrap_or(0)
    )?;
    Ok(())
}
