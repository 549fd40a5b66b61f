//! `xmem tp produce | consume | listen | media-driver`: the tensor pool over Aeron, as the C and
//! Julia implementations speak it (no-driver mode: the producer owns its regions).
//!
//! Every command finds the media driver in `--aeron-dir` (default `AERON_DIR`, else Aeron's
//! `/dev/shm/aeron-USER`). With none running there, it starts one inside itself (`--driver
//! auto`, the default), which other processes may use while it runs; `--driver external`
//! refuses instead, and `xmem tp media-driver` runs one as a process of its own.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use xmem_aeron::{
    driver_status, Client, ClientOptions, DriverOptions, DriverStatus, MediaDriver, TP_CHANNEL,
};
use xmem_tensorpool::codec::{self, text};
use xmem_tensorpool::commit::FrameSpec;
use xmem_tensorpool::layout::{Dtype, TensorHeader};
use xmem_tensorpool::paths::AllowedDirs;
use xmem_tensorpool::stream::TpProducer;
use xmem_tp_control::{
    Channels, Consumer, ConsumerOptions, Endpoint, Mode, Policy, Producer, ProducerOptions, State,
    StreamRequest,
};

use xmem_tp_driver::{DriverClient, DriverClientOptions, Role};

use super::produce::stop_on_signals;
use crate::{fmt, Format};

/// Which media driver to use.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DriverMode {
    /// The one running in the Aeron directory; if none runs, one started inside this process.
    Auto,
    /// Only one already running (no driver: an error saying how to start one).
    External,
}

/// The Aeron side of every command.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct AeronArgs {
    /// The Aeron directory (default: $AERON_DIR, else /dev/shm/aeron-USER).
    #[arg(long, env = "AERON_DIR")]
    aeron_dir: Option<PathBuf>,
    /// Which media driver to use.
    #[arg(long, value_enum, default_value_t = DriverMode::Auto)]
    driver: DriverMode,
    /// The Aeron channel of every stream (both implementations use exactly this string).
    #[arg(long, default_value = TP_CHANNEL)]
    channel: String,
    /// Stream id of the control stream (hellos, configs, progress; no-driver announces).
    #[arg(long, default_value_t = 1000)]
    control_stream: i32,
    /// Stream id of the announce stream.
    #[arg(long, default_value_t = 1001)]
    announce_stream: i32,
    /// Stream id of the shared descriptor stream.
    #[arg(long, default_value_t = 1100)]
    descriptor_stream: i32,
    /// Stream id of the QoS stream.
    #[arg(long, default_value_t = 1200)]
    qos_stream: i32,
    /// Stream id of the metadata stream.
    #[arg(long, default_value_t = 1300)]
    metadata_stream: i32,
    /// The announce period (QoS goes at the same rate).
    #[arg(long, default_value = "1s", value_parser = super::demo::parse_duration)]
    announce_period: Duration,
}

impl AeronArgs {
    fn channels(&self) -> Channels {
        let e = |id| Endpoint {
            channel: self.channel.clone(),
            stream_id: id,
        };
        Channels {
            control: e(self.control_stream),
            announce: e(self.announce_stream),
            descriptor: e(self.descriptor_stream),
            qos: e(self.qos_stream),
            metadata: e(self.metadata_stream),
        }
    }

    /// The client, and the driver this process started if it had to.
    fn connect(&self) -> Result<(Client, Option<MediaDriver>)> {
        let dir = self.aeron_dir.clone().unwrap_or_else(xmem_aeron::default_dir);
        connect_media(dir, self.driver)
    }
}

/// A client of the media driver in `dir`, starting one inside this process when none runs
/// there and `mode` allows it.
pub(super) fn connect_media(dir: PathBuf, mode: DriverMode) -> Result<(Client, Option<MediaDriver>)> {
    let driver = match (driver_status(&dir), mode) {
        (DriverStatus::Active { .. }, _) | (_, DriverMode::External) => None,
        (_, DriverMode::Auto) => {
            let d = MediaDriver::launch(&DriverOptions {
                dir: Some(dir.clone()),
                ..DriverOptions::default()
            })?;
            if let Some(old) = d.replaced() {
                eprintln!(
                    "  replaced a dead media driver's files in {} ({old:?})",
                    dir.display()
                );
            }
            eprintln!("  started a media driver in this process: {}", dir.display());
            Some(d)
        }
    };
    let client = Client::connect(&ClientOptions {
        dir: Some(dir),
        ..ClientOptions::default()
    })?;
    Ok((client, driver))
}

impl AeronArgs {
    /// A client of the tensor-pool driver on these streams.
    fn driver_client(&self, client: &Client) -> Result<DriverClient> {
        let c = self.channels();
        Ok(DriverClient::new(
            client,
            DriverClientOptions {
                control: c.control,
                announce: c.announce,
                announce_period: self.announce_period,
                ..DriverClientOptions::default()
            },
        )?)
    }
}

/// Attaches, retrying with backoff while the error says it may pass (no driver yet, a driver
/// restarting), until stopped (`None`). A refusal by policy is an error.
fn attach_until(
    dc: &mut DriverClient,
    stream: u32,
    role: Role,
    client_id: u32,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<Option<xmem_tp_driver::protocol::Grant>> {
    let mut failures = 0;
    while !stop.load(Ordering::Relaxed) {
        match dc.attach(stream, role, client_id) {
            Ok(a) => {
                let g = a.grant.clone();
                outln!(
                    "attached as {} of stream {} through the driver: lease {}, epoch {}, node {}",
                    role.name(),
                    g.announce.stream_id,
                    g.lease_id,
                    g.announce.epoch,
                    g.node_id.unwrap_or(0)
                )?;
                return Ok(Some(g));
            }
            Err(e) if e.is_retryable() => {
                eprintln!("  {e}; retrying");
                std::thread::sleep(xmem_tp_driver::backoff(failures));
                failures += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(None)
}

/// `xmem tp produce`.
#[derive(clap::Args, Debug)]
pub(crate) struct ProduceArgs {
    #[command(flatten)]
    aeron: AeronArgs,
    /// The stream id.
    #[arg(long, default_value_t = 10_000)]
    stream: u32,
    /// Base directory of the regions.
    #[arg(long, default_value = "/dev/shm")]
    base: PathBuf,
    /// Namespace under the base (default `default`; with --attach, the driver's).
    #[arg(long)]
    namespace: Option<String>,
    /// Frame shape, e.g. `1080x1920x3`.
    #[arg(long, default_value = "1080x1920x3")]
    shape: String,
    /// Slots in the ring and the pool (a power of two; default 8; with --attach, the driver's).
    #[arg(long)]
    nslots: Option<u32>,
    /// Frames to produce (0: until stopped).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Frames per second (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    fps: f64,
    /// Stop after this long (`10s`, `1m`).
    #[arg(long, value_parser = super::demo::parse_duration)]
    duration: Option<Duration>,
    /// Wait for a subscriber to the descriptor stream before the first frame.
    #[arg(long)]
    wait_for_consumer: bool,
    /// Send consumers that cannot map shared memory (or, with --fallback-all, every consumer)
    /// to this URI.
    #[arg(long)]
    fallback_uri: Option<String>,
    /// Send every consumer to --fallback-uri.
    #[arg(long, requires = "fallback_uri")]
    fallback_all: bool,
    /// A name for the stream (DataSourceAnnounce).
    #[arg(long)]
    name: Option<String>,
    /// Attach through a tensor-pool driver (`xmem tp driver`) on the control stream: the
    /// driver makes the regions (its profile sets slots and strides) and announces them, this
    /// producer keeps a lease and reattaches, with a new epoch, when it loses it.
    #[arg(long)]
    attach: bool,
}

/// `xmem tp consume`.
#[derive(clap::Args, Debug)]
pub(crate) struct ConsumeArgs {
    #[command(flatten)]
    aeron: AeronArgs,
    /// The stream id.
    #[arg(long, default_value_t = 10_000)]
    stream: u32,
    /// Base directory whose regions may be mapped.
    #[arg(long, default_value = "/dev/shm")]
    base: PathBuf,
    /// The consumer id (0: a random one).
    #[arg(long, default_value_t = 0)]
    consumer_id: u32,
    /// Ask for a descriptor stream of its own with this id (31000-31999 by convention).
    #[arg(long)]
    own_stream: Option<u32>,
    /// RATE_LIMITED at this many frames a second.
    #[arg(long)]
    rate: Option<u32>,
    /// Say it cannot map shared memory (asks for the fallback).
    #[arg(long)]
    no_shm: bool,
    /// Spend this long on each frame (a slow consumer).
    #[arg(long, value_parser = super::demo::parse_duration)]
    slow: Option<Duration>,
    /// Stop after accepting this many frames (0: until stopped).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Stop after this long (`10s`, `1m`).
    #[arg(long, value_parser = super::demo::parse_duration)]
    duration: Option<Duration>,
    /// Give up if nothing is mapped (or no fallback is told) within this long.
    #[arg(long, default_value = "30s", value_parser = super::demo::parse_duration)]
    wait: Duration,
    /// Attach through a tensor-pool driver (`xmem tp driver`): map what it grants at once,
    /// keep the lease, reattach after a revoke, the driver's shutdown or its silence.
    #[arg(long)]
    attach: bool,
}

/// `xmem tp listen`.
#[derive(clap::Args, Debug)]
pub(crate) struct ListenArgs {
    #[command(flatten)]
    aeron: AeronArgs,
    /// Also print every FrameDescriptor (many a second).
    #[arg(long)]
    descriptors: bool,
    /// Stop after this many messages (0: until stopped).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Stop after this long.
    #[arg(long, value_parser = super::demo::parse_duration)]
    duration: Option<Duration>,
    /// Output format (JSON: one object a line).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// `xmem tp media-driver`.
#[derive(clap::Args, Debug)]
pub(crate) struct MediaDriverArgs {
    /// The Aeron directory (default: $AERON_DIR, else /dev/shm/aeron-USER).
    #[arg(long, env = "AERON_DIR")]
    aeron_dir: Option<PathBuf>,
}

fn parse_shape(s: &str) -> Result<Vec<i32>> {
    let dims: Vec<i32> = s
        .split('x')
        .map(|d| {
            d.parse::<i32>()
                .with_context(|| format!("bad shape {s:?}: use e.g. 1080x1920x3"))
        })
        .collect::<Result<_>>()?;
    if dims.is_empty() || dims.len() > 8 || dims.iter().any(|&d| d <= 0) {
        bail!("bad shape {s:?}: 1 to 8 positive dimensions");
    }
    Ok(dims)
}

/// Frame `seq`'s bytes: every byte `seq % 256` (what `consume` checks).
fn byte_of(seq: u64) -> u8 {
    seq as u8
}

pub(crate) fn produce(args: ProduceArgs) -> Result<()> {
    let stop = stop_on_signals()?;
    let dims = parse_shape(&args.shape)?;
    let len: u64 = dims.iter().map(|&d| d as u64).product();
    let len = u32::try_from(len).context("a frame must be under 4 GiB")?;
    // Power-of-two strides: the Julia consumer refuses any other (its validate_stride).
    let stride = len
        .max(64)
        .checked_next_power_of_two()
        .context("a frame must be under 2 GiB")?;
    // D-3-1: in driver mode the driver's URIs and geometry are authoritative.
    if args.attach && (args.nslots.is_some() || args.namespace.is_some()) {
        bail!("--nslots and --namespace are the driver's to choose in driver mode (its profile and [shm] namespace); leave them out with --attach");
    }
    let (client, _driver) = args.aeron.connect()?;
    let (mut dc, tp) = if args.attach {
        let mut dc = args.aeron.driver_client(&client)?;
        let Some(grant) = attach_until(&mut dc, args.stream, Role::Producer, 0, &stop)? else {
            return Ok(());
        };
        let largest = grant
            .announce
            .pools
            .iter()
            .map(|p| p.stride_bytes)
            .max()
            .unwrap_or(0);
        if len > largest {
            bail!(
                "a {} frame is {len} bytes, but the driver's pools hold at most {largest}: use a smaller --shape or a profile with larger strides",
                args.shape
            );
        }
        let tp = TpProducer::attach(&grant.announce, &AllowedDirs::new([&args.base])?)
            .context("open the regions the driver granted")?;
        (Some(dc), tp)
    } else {
        let tp = TpProducer::builder(args.stream)
            .base_dir(&args.base)
            .namespace(args.namespace.as_deref().unwrap_or("default"))
            .nslots(args.nslots.unwrap_or(8))
            .pool(1, stride)
            .create()
            .context("create the regions")?;
        (None, tp)
    };
    let build = if dc.is_some() {
        Producer::driven
    } else {
        Producer::new
    };
    let mut p = build(
        &client,
        tp,
        ProducerOptions {
            channels: args.aeron.channels(),
            announce_period: args.aeron.announce_period,
            supervise: Some(Policy {
                fallback_uri: args.fallback_uri.clone(),
                fallback_all: args.fallback_all,
                ..Policy::default()
            }),
            data_source: args.name.clone().map(|n| (n, format!("{} frames", args.shape))),
        },
    )?;
    let a = p.regions().announce().clone();
    outln!(
        "producing stream {} epoch {} on {}",
        a.stream_id,
        a.epoch,
        args.aeron.channel
    )?;
    outln!("  header ring {}", a.header_region_uri)?;
    if args.wait_for_consumer {
        while !p.is_connected() {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            p.poll()?;
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let spec = FrameSpec {
        tensor: TensorHeader::row_major(Dtype::Uint8, &dims),
        values_len: len,
        timestamp_ns: 0,
        meta_version: 0,
    };
    let start = Instant::now();
    let (mut n, mut last_report, mut last) = (0u64, Instant::now(), p.stats());
    while !stop.load(Ordering::Relaxed)
        && (args.count == 0 || n < args.count)
        && args.duration.is_none_or(|d| start.elapsed() < d)
    {
        if args.fps > 0.0 {
            let due = start + Duration::from_secs_f64(n as f64 / args.fps);
            while let Some(wait) = due.checked_duration_since(Instant::now()) {
                p.poll()?;
                std::thread::sleep(wait.min(Duration::from_millis(5)));
            }
        }
        let mut spec = spec;
        spec.timestamp_ns = xmem_core::os::time::monotonic_ns();
        let seq = p.regions().next_seq();
        p.publish(&spec, 0, |b| b.fill(byte_of(seq)))?;
        n += 1;
        if let Some(dc) = &mut dc {
            for e in dc.poll()? {
                if !e.ends_lease() {
                    continue;
                }
                outln!("lease lost ({e:?}); reattaching")?;
                let Some(grant) = attach_until(dc, args.stream, Role::Producer, 0, &stop)? else {
                    break;
                };
                p.replace_regions(TpProducer::attach(
                    &grant.announce,
                    &AllowedDirs::new([&args.base])?,
                )?);
                outln!("attached again: epoch {}", grant.announce.epoch)?;
            }
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            p.poll()?;
            let s = p.stats();
            let secs = last_report.elapsed().as_secs_f64();
            let rate = (s.frames - last.frames) as f64 / secs;
            outln!(
                "  {n} frames, {rate:.0} frames/s, {}/s; descriptors: {} sent, {} no subscriber, {} back-pressured; {} consumers",
                fmt::bytes((rate * f64::from(len)) as u64),
                s.descriptors,
                s.not_connected,
                s.back_pressured,
                s.consumers
            )?;
            (last_report, last) = (Instant::now(), s);
        }
    }
    let s = p.stats();
    outln!(
        "produced {} frames; descriptors: {} sent, {} no subscriber, {} back-pressured, {} failed",
        s.frames,
        s.descriptors,
        s.not_connected,
        s.back_pressured,
        s.failed
    )?;
    Ok(())
}

pub(crate) fn consume(args: ConsumeArgs) -> Result<()> {
    let stop = stop_on_signals()?;
    let (client, _driver) = args.aeron.connect()?;
    let channels = args.aeron.channels();
    let mut opts = ConsumerOptions::new(args.stream, AllowedDirs::new([&args.base])?);
    opts.consumer_id = args.consumer_id;
    opts.announce_period = args.aeron.announce_period;
    opts.supports_shm = !args.no_shm;
    opts.descriptor_stream = args.own_stream.map(|id| StreamRequest {
        channel: args.aeron.channel.clone(),
        stream_id: id,
    });
    if let Some(rate) = args.rate {
        opts.mode = Mode::RateLimited;
        opts.max_rate_hz = rate;
    }
    opts.channels = channels;
    let consumer_id = opts.consumer_id;
    let mut c = Consumer::new(&client, opts)?;
    let mut dc = match args.attach {
        true => {
            let mut dc = args.aeron.driver_client(&client)?;
            let Some(grant) = attach_until(&mut dc, args.stream, Role::Consumer, consumer_id, &stop)? else {
                return Ok(());
            };
            c.adopt(&grant.announce)?;
            Some(dc)
        }
        false => None,
    };
    outln!(
        "consumer {} of stream {} on {}",
        c.consumer_id(),
        args.stream,
        args.aeron.channel
    )?;
    let start = Instant::now();
    let (mut bad, mut accepted) = (0u64, 0u64);
    let mut last_state = State::Unmapped;
    let mut last_report = Instant::now();
    let mut ever_placed = false;
    let mut descriptors_from = c.descriptor_stream();
    while !stop.load(Ordering::Relaxed)
        && (args.count == 0 || accepted < args.count)
        && args.duration.is_none_or(|d| start.elapsed() < d)
    {
        let work = c.poll(64, |f| {
            if args.count != 0 && accepted >= args.count {
                return; // asked for this many: the rest of this poll's frames are let go
            }
            let want = byte_of(f.accepted.seq);
            if !f.bytes.iter().all(|&b| b == want) {
                bad += 1;
            }
            accepted += 1;
            if let Some(d) = args.slow {
                std::thread::sleep(d);
            }
        })?;
        if let Some(dc) = &mut dc {
            for e in dc.poll()? {
                if !e.ends_lease() {
                    continue;
                }
                c.drop_mapping();
                outln!("lease lost ({e:?}); reattaching")?;
                let Some(grant) = attach_until(dc, args.stream, Role::Consumer, consumer_id, &stop)? else {
                    break;
                };
                c.adopt(&grant.announce)?;
            }
        }
        if c.state() != &last_state {
            last_state = c.state().clone();
            ever_placed = true;
            match &last_state {
                State::Mapped { epoch } => {
                    let per = c.descriptor_stream();
                    outln!("mapped epoch {epoch}; descriptors from {per}")?;
                }
                State::Unmapped => {
                    let s = c.stats();
                    let why = if s.unmaps_activity > 0 {
                        "the regions' activity stamp went stale"
                    } else {
                        "no fresh announce for three periods"
                    };
                    outln!("unmapped: {why} (the producer stopped?); waiting for an announce")?;
                }
                State::Fallback { uri } => {
                    outln!("fallback: told not to map shared memory; payloads at {uri}")?
                }
            }
        }
        if c.descriptor_stream() != descriptors_from && matches!(c.state(), State::Mapped { .. }) {
            descriptors_from = c.descriptor_stream();
            outln!("descriptors now from {descriptors_from} (granted by a ConsumerConfig)")?;
        }
        if !ever_placed && start.elapsed() > args.wait {
            bail!(
                "no producer of stream {} announced on {} within {:?} (is one running with the same --aeron-dir and channel?)",
                args.stream,
                args.aeron.channel,
                args.wait
            );
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            let s = c.stats();
            outln!(
                "  {} accepted; drops: {} gap, {} late, {} invalid, {} epoch, {} unmapped; {bad} bad",
                s.accepted,
                s.drops_gap,
                s.drops_late,
                s.drops_invalid,
                s.drops_epoch,
                s.drops_unmapped
            )?;
            last_report = Instant::now();
        }
        if work == 0 {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    let s = c.stats();
    // The frames this command took and checked (with --count, a last poll may accept one or
    // two more that it lets go: they are not counted here).
    outln!(
        "accepted {accepted} frames, drops: {} gap, {} late, {} invalid; {bad} with wrong bytes",
        s.drops_gap,
        s.drops_late,
        s.drops_invalid
    )?;
    if bad > 0 {
        bail!("{bad} accepted frames had wrong bytes");
    }
    Ok(())
}

pub(crate) fn listen(args: ListenArgs) -> Result<()> {
    let stop = stop_on_signals()?;
    let (client, _driver) = args.aeron.connect()?;
    let ch = args.aeron.channels();
    let mut endpoints = vec![
        ch.control.clone(),
        ch.announce.clone(),
        ch.qos.clone(),
        ch.metadata.clone(),
    ];
    if args.descriptors {
        endpoints.push(ch.descriptor.clone());
    }
    endpoints.dedup();
    let mut subs = Vec::new();
    for e in &endpoints {
        subs.push((e.stream_id, client.subscription(&e.untethered(), e.stream_id)?));
    }
    let start = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed)
        && (args.count == 0 || n < args.count)
        && args.duration.is_none_or(|d| start.elapsed() < d)
    {
        client.check()?;
        let mut got = Vec::new();
        for (stream, s) in &mut subs {
            let stream = *stream;
            s.poll(16, |m| got.push((stream, m.session_id, m.bytes.to_vec())))?;
        }
        if got.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        }
        for (stream, session, bytes) in got {
            if args.count != 0 && n >= args.count {
                break;
            }
            n += 1;
            match (codec::decode_exact(&bytes), args.format) {
                (Ok(m), Format::Json) => {
                    let j = serde_json::json!({"stream": stream, "session": session, "message": text::to_json(&m)});
                    outln!("{j}")?;
                }
                (Ok(m), Format::Text) => {
                    out!("stream {stream} session {session}: {}", text::to_text(&m))?;
                }
                (Err(e), Format::Json) => {
                    let j = serde_json::json!({"stream": stream, "session": session, "undecodable": e.to_string(), "bytes": bytes.len()});
                    outln!("{j}")?;
                }
                (Err(e), Format::Text) => outln!(
                    "stream {stream} session {session}: {} bytes that are not a message: {e}",
                    bytes.len()
                )?,
            }
        }
    }
    Ok(())
}

pub(crate) fn media_driver(args: MediaDriverArgs) -> Result<()> {
    let stop = stop_on_signals()?;
    let d = MediaDriver::launch(&DriverOptions {
        dir: args.aeron_dir,
        ..DriverOptions::default()
    })?;
    if let Some(old) = d.replaced() {
        outln!("replaced a dead media driver's files ({old:?})")?;
    }
    outln!(
        "media driver running in {} (pid {})",
        d.dir().display(),
        std::process::id()
    )?;
    while !stop.load(Ordering::Relaxed) && d.is_running() {
        std::thread::sleep(Duration::from_millis(50));
    }
    if !d.is_running() {
        bail!(
            "the media driver in {} stopped on its own (see the log above)",
            d.dir().display()
        );
    }
    outln!("stopping; its files are removed")?;
    Ok(())
}

/// `xmem tp demo`.
#[derive(clap::Args, Debug)]
pub(crate) struct DemoArgs {
    /// Consumer processes.
    #[arg(long, default_value_t = 2)]
    pub consumers: usize,
    /// How long to run.
    #[arg(long, default_value = "3s", value_parser = super::demo::parse_duration)]
    pub duration: Duration,
    /// Frame shape.
    #[arg(long, default_value = "1080x1920x3")]
    pub shape: String,
    /// Frames per second.
    #[arg(long, default_value_t = 60.0)]
    pub fps: f64,
}

/// A media driver embedded in this process (in a directory of its own), a tensor-pool producer
/// here and consumer processes (`xmem tp consume`) finding it by its announces over Aeron IPC;
/// every accepted frame is checked; nothing is left behind.
pub(crate) fn demo(args: DemoArgs) -> Result<()> {
    if args.consumers == 0 || args.consumers > 16 {
        bail!("--consumers must be 1 to 16");
    }
    let stop = stop_on_signals()?;
    let tag = format!("xmem-tp-demo-{}", std::process::id());
    let aeron_dir = PathBuf::from("/dev/shm").join(&tag);
    let base = PathBuf::from("/dev/shm").join(format!("{tag}-regions"));
    std::fs::create_dir_all(&base).with_context(|| format!("create {}", base.display()))?;
    let _remove = RemoveDir(base.clone());
    let driver = MediaDriver::launch(&DriverOptions {
        dir: Some(aeron_dir.clone()),
        ..DriverOptions::default()
    })?;
    let client = Client::connect(&ClientOptions {
        dir: Some(aeron_dir.clone()),
        ..ClientOptions::default()
    })?;
    let dims = parse_shape(&args.shape)?;
    let len = u32::try_from(dims.iter().map(|&d| d as u64).product::<u64>())
        .context("a frame must be under 4 GiB")?;
    let stride = len
        .max(64)
        .checked_next_power_of_two()
        .context("a frame must be under 2 GiB")?;
    let tp = TpProducer::builder(10_000)
        .base_dir(&base)
        .nslots(8)
        .pool(1, stride)
        .create()?;
    let mut p = Producer::new(&client, tp, ProducerOptions::default())?;
    outln!(
        "xmem tp demo: the SHM Tensor Pool over Aeron IPC (media driver embedded here, {}), 1 producer → {} consumer processes, {} u8 frames ({}) at {} fps",
        aeron_dir.display(),
        args.consumers,
        args.shape,
        fmt::bytes(len.into()),
        args.fps
    )?;
    let exe = std::env::current_exe()?;
    let seconds = format!("{}ms", args.duration.as_millis() + 1500);
    let mut children = Vec::new();
    for _ in 0..args.consumers {
        let child = std::process::Command::new(&exe)
            .args(["tp", "consume", "--driver", "external", "--aeron-dir"])
            .arg(&aeron_dir)
            .arg("--base")
            .arg(&base)
            .args(["--duration", &seconds, "--wait", "10s"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("start a consumer process")?;
        children.push(child);
    }
    // Consumers join within an announce period or two; then frames for the duration.
    let joined = Instant::now() + Duration::from_secs(10);
    while p.stats().consumers < args.consumers && Instant::now() < joined && !stop.load(Ordering::Relaxed) {
        p.poll()?;
        std::thread::sleep(Duration::from_millis(5));
    }
    let spec = FrameSpec {
        tensor: TensorHeader::row_major(Dtype::Uint8, &dims),
        values_len: len,
        timestamp_ns: 0,
        meta_version: 0,
    };
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < args.duration && !stop.load(Ordering::Relaxed) {
        let due = start + Duration::from_secs_f64(n as f64 / args.fps);
        while let Some(wait) = due.checked_duration_since(Instant::now()) {
            p.poll()?;
            std::thread::sleep(wait.min(Duration::from_millis(2)));
        }
        let mut spec = spec;
        spec.timestamp_ns = xmem_core::os::time::monotonic_ns();
        let seq = p.regions().next_seq();
        p.publish(&spec, 0, |b| b.fill(byte_of(seq)))?;
        n += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let s = p.stats();
    drop(p); // its regions go; consumers see the announces stop
    let mut rows = vec![vec![
        "producer".to_string(),
        s.frames.to_string(),
        format!("{:.0}", s.frames as f64 / elapsed),
        format!(
            "{} descriptors sent, {} without subscriber, {} back-pressured",
            s.descriptors, s.not_connected, s.back_pressured
        ),
    ]];
    let mut failures = 0;
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text
            .lines()
            .rev()
            .find(|l| l.starts_with("accepted "))
            .unwrap_or("no report")
            .to_string();
        let frames: u64 = last
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        if !out.status.success() || frames == 0 || !last.ends_with("0 with wrong bytes") {
            failures += 1;
            eprintln!(
                "consumer {}: {}",
                i + 1,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        rows.push(vec![
            format!("consumer {}", i + 1),
            frames.to_string(),
            format!("{:.0}", frames as f64 / elapsed),
            last,
        ]);
    }
    outln!()?;
    fmt::table(&["PROCESS", "FRAMES", "FRAMES/S", "COUNTERS"], &rows)?;
    drop(client);
    drop(driver);
    if aeron_dir.exists() {
        bail!("the media driver left {}", aeron_dir.display());
    }
    if failures > 0 {
        bail!("{failures} consumer(s) saw no frames, damaged ones, or failed");
    }
    outln!("\nevery accepted frame was checked byte for byte; the driver's and the regions' files are gone")?;
    Ok(())
}

/// Removes a directory (the demo's regions) when dropped.
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `xmem tp stat`.
#[derive(clap::Args, Debug)]
pub(crate) struct StatArgs {
    /// The Aeron directory (default: $AERON_DIR, else /dev/shm/aeron-USER).
    #[arg(long, env = "AERON_DIR")]
    aeron_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Every tensor-pool producer's and consumer's counters in the driver's counters file (they
/// are refreshed each announce period), grouped by process.
pub(crate) fn stat(args: StatArgs) -> Result<()> {
    let dir = args.aeron_dir.unwrap_or_else(xmem_aeron::default_dir);
    match driver_status(&dir) {
        DriverStatus::Active { .. } => {}
        other => bail!(
            "no live media driver in {} ({other:?}); its counters are where xmem tp stat reads",
            dir.display()
        ),
    }
    let mut groups: std::collections::BTreeMap<xmem_tp_control::counters::Owner, Vec<(String, i64)>> =
        std::collections::BTreeMap::new();
    for c in xmem_aeron::read_counters(&dir)? {
        if let Some((owner, name, value)) = xmem_tp_control::counters::parse(&c) {
            groups.entry(owner).or_default().push((name, value));
        }
    }
    match args.format {
        Format::Json => {
            let all: Vec<_> = groups
                .iter()
                .map(|(o, cs)| {
                    let counters: serde_json::Map<String, serde_json::Value> =
                        cs.iter().map(|(n, v)| (n.clone(), (*v).into())).collect();
                    serde_json::json!({"role": o.role, "stream": o.stream_id, "id": o.id, "pid": o.pid, "counters": counters})
                })
                .collect();
            outln!("{}", serde_json::to_string_pretty(&all)?)?;
        }
        Format::Text => {
            if groups.is_empty() {
                outln!(
                    "no tensor-pool producer, consumer or bridge uses the driver in {}",
                    dir.display()
                )?;
            }
            for (o, cs) in &groups {
                let id = match o.role {
                    "bridge-sender" => "from local stream",
                    "bridge-receiver" => "payload stream",
                    _ => "id",
                };
                outln!(
                    "{} of stream {} ({id} {}, pid {})",
                    o.role,
                    o.stream_id,
                    o.id,
                    o.pid
                )?;
                for (n, v) in cs {
                    outln!("  {n}: {v}")?;
                }
            }
        }
    }
    Ok(())
}
