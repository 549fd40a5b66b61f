//! `xmem tp …`: the SHM Tensor Pool protocol from the shell — decode any control message,
//! inspect a region, and a sample producer and consumer over shared memory (no control plane:
//! the consumer finds the regions through the announce file the producer keeps beside them).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use xmem_tensorpool::codec::{self, text};
use xmem_tensorpool::commit::{Drop, FrameSpec};
use xmem_tensorpool::layout::{Dtype, RegionType, SlotHeader, TensorHeader};
use xmem_tensorpool::paths::{AllowedDirs, Layout};
use xmem_tensorpool::region::Region;
use xmem_tensorpool::stream::{AnnounceFile, TpConsumer, TpProducer};
use xmem_tensorpool::uri::ShmUri;

use crate::{fmt, Format};

#[derive(clap::Subcommand, Debug)]
pub enum TpCommand {
    /// Decode one SBE message of the six tensor-pool schemas (a file, or `-` for stdin).
    Decode {
        /// The message's bytes.
        file: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Show a region: superblock, ring occupancy and the newest frames.
    Inspect {
        /// The region file, or its `shm:file?path=…` URI.
        region: String,
        /// Newest frames to list.
        #[arg(long, default_value_t = 8)]
        frames: usize,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Produce sample frames into a header ring and payload pool (frame n: every byte n % 256).
    Produce(ProduceArgs),
    /// Follow a producer's ring, check every frame, print rates and drops.
    Consume(ConsumeArgs),
}

/// Where a stream's regions live.
#[derive(clap::Args, Debug, Clone)]
pub struct Place {
    /// The stream id.
    #[arg(long, default_value_t = 10_000)]
    stream: u32,
    /// Base directory of the regions.
    #[arg(long, default_value = "/dev/shm")]
    base: PathBuf,
    /// Namespace under the base.
    #[arg(long, default_value = "default")]
    namespace: String,
}

impl Place {
    fn announce_file(&self) -> Result<AnnounceFile> {
        let layout = Layout::new(&self.base, &self.namespace)?;
        Ok(AnnounceFile::in_dir(&layout.root().join(self.stream.to_string())))
    }
}

#[derive(clap::Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    place: Place,
    /// Frame shape, e.g. `1080x1920x3`.
    #[arg(long, default_value = "1080x1920x3")]
    shape: String,
    /// Slots in the ring and the pool (a power of two).
    #[arg(long, default_value_t = 8)]
    nslots: u32,
    /// Frames to produce (0: until stopped).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Frames per second (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    fps: f64,
    /// Stop after this long (`10s`, `1m`).
    #[arg(long, value_parser = super::demo::parse_duration)]
    duration: Option<Duration>,
}

#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    place: Place,
    /// Stop after accepting this many frames (0: until stopped).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Stop after this long (`10s`, `1m`).
    #[arg(long, value_parser = super::demo::parse_duration)]
    duration: Option<Duration>,
    /// Wait this long for a producer's announce.
    #[arg(long, default_value = "10s", value_parser = super::demo::parse_duration)]
    wait: Duration,
}

pub fn run(cmd: TpCommand) -> Result<()> {
    match cmd {
        TpCommand::Decode { file, format } => decode(&file, format),
        TpCommand::Inspect {
            region,
            frames,
            format,
        } => inspect(&region, frames, format),
        TpCommand::Produce(args) => produce(args),
        TpCommand::Consume(args) => consume(args),
    }
}

fn decode(file: &str, format: Format) -> Result<()> {
    let bytes = if file == "-" {
        let mut b = Vec::new();
        std::io::stdin().read_to_end(&mut b).context("read stdin")?;
        b
    } else {
        std::fs::read(file).with_context(|| format!("read {file}"))?
    };
    let m =
        codec::decode_exact(&bytes).with_context(|| format!("{file} is not a valid tensor-pool message"))?;
    match format {
        Format::Text => out!("{}", text::to_text(&m))?,
        Format::Json => outln!("{}", serde_json::to_string_pretty(&text::to_json(&m))?)?,
    }
    Ok(())
}

fn region_path(arg: &str) -> Result<PathBuf> {
    if arg.starts_with("shm:") {
        Ok(ShmUri::parse(arg)?.path().to_path_buf())
    } else {
        Ok(PathBuf::from(arg))
    }
}

/// One committed frame as seen in the ring.
struct SeenFrame {
    seq: u64,
    slot: u32,
    header: SlotHeader,
}

fn inspect(arg: &str, frames: usize, format: Format) -> Result<()> {
    let path = region_path(arg)?;
    let region =
        Region::open_any(&path).with_context(|| format!("{} is not a usable region", path.display()))?;
    let sb = *region.superblock();
    let kind = if sb.region_type == RegionType::HeaderRing as i16 {
        "header ring"
    } else {
        "payload pool"
    };
    let alive = sb.pid != 0 && sb.pid <= i32::MAX as u64 && Path::new(&format!("/proc/{}", sb.pid)).exists();
    let now = xmem_core::os::time::monotonic_ns();
    let activity_age = Duration::from_nanos(now.saturating_sub(region.activity_ns()));
    let (mut empty, mut writing, mut committed) = (0u32, 0u32, Vec::new());
    for i in 0..sb.nslots {
        let Some(word) = region.commit_word_now(i) else {
            break;
        };
        match (word, word & 1) {
            (0, _) => empty += 1,
            (_, 0) => writing += 1,
            _ => {
                let image = region.slot_image(i).expect("a header ring");
                // Trust the copy only if the word did not move while it was taken.
                if region.commit_word_now(i) == Some(word) {
                    if let Ok(header) = SlotHeader::decode(&image) {
                        committed.push(SeenFrame {
                            seq: word >> 1,
                            slot: i,
                            header,
                        });
                    }
                }
            }
        }
    }
    committed.sort_by_key(|f| std::cmp::Reverse(f.seq));
    committed.truncate(frames);
    let shape = |h: &SlotHeader| -> String {
        match h.tensor.validate() {
            Ok(t) => format!(
                "{:?} {}",
                t.dtype,
                t.dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x")
            ),
            Err(e) => format!("invalid: {e}"),
        }
    };
    match format {
        Format::Json => {
            let j = serde_json::json!({
                "path": path,
                "kind": kind,
                "superblock": {
                    "layoutVersion": sb.layout_version, "epoch": sb.epoch, "streamId": sb.stream_id,
                    "regionType": sb.region_type, "poolId": sb.pool_id, "nslots": sb.nslots,
                    "slotBytes": sb.slot_bytes, "strideBytes": sb.stride_bytes, "pid": sb.pid,
                    "pidAlive": alive, "startTimestampNs": sb.start_timestamp_ns,
                    "activityTimestampNs": region.activity_ns(),
                },
                "ring": (sb.region_type == RegionType::HeaderRing as i16).then(|| serde_json::json!({
                    "empty": empty, "writing": writing, "committed": sb.nslots - empty - writing,
                    "newest": committed.iter().map(|f| serde_json::json!({
                        "seq": f.seq, "slot": f.slot, "poolId": f.header.pool_id,
                        "valuesLenBytes": f.header.values_len_bytes, "timestampNs": f.header.timestamp_ns,
                        "tensor": shape(&f.header),
                    })).collect::<Vec<_>>(),
                })),
            });
            outln!("{}", serde_json::to_string_pretty(&j)?)?;
        }
        Format::Text => {
            outln!("{} ({kind})", path.display())?;
            outln!(
                "  stream {}  epoch {}  layout {}  pool {}  {} slots of {}",
                sb.stream_id,
                sb.epoch,
                sb.layout_version,
                sb.pool_id,
                sb.nslots,
                fmt::bytes(
                    if sb.pool_id == 0 {
                        sb.slot_bytes
                    } else {
                        sb.stride_bytes
                    }
                    .into()
                )
            )?;
            outln!(
                "  producer pid {} ({}), activity {} ago",
                sb.pid,
                if alive { "alive" } else { "not running" },
                fmt::duration(activity_age)
            )?;
            if sb.region_type == RegionType::HeaderRing as i16 {
                outln!(
                    "  slots: {} committed, {writing} being written, {empty} never written",
                    sb.nslots - empty - writing
                )?;
                let rows: Vec<Vec<String>> = committed
                    .iter()
                    .map(|f| {
                        vec![
                            f.seq.to_string(),
                            f.slot.to_string(),
                            f.header.pool_id.to_string(),
                            fmt::bytes(f.header.values_len_bytes.into()),
                            shape(&f.header),
                        ]
                    })
                    .collect();
                if !rows.is_empty() {
                    fmt::table(&["SEQ", "SLOT", "POOL", "BYTES", "TENSOR"], &rows)?;
                }
            }
        }
    }
    Ok(())
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

fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    Ok(stop)
}

fn produce(args: ProduceArgs) -> Result<()> {
    let dims = parse_shape(&args.shape)?;
    let len: u64 = dims.iter().map(|&d| d as u64).product();
    let len = u32::try_from(len).context("a frame must be under 4 GiB")?;
    let stride = len.div_ceil(64).max(1) * 64;
    let mut p = TpProducer::builder(args.place.stream)
        .base_dir(&args.place.base)
        .namespace(&args.place.namespace)
        .nslots(args.nslots)
        .pool(1, stride)
        .create()
        .context("create the regions")?;
    let announce_file = AnnounceFile::in_dir(p.stream_dir());
    announce_file.write(p.announce())?;
    let _remove = RemoveOnDrop(announce_file.clone());
    outln!(
        "producing stream {} epoch {}",
        args.place.stream,
        p.announce().epoch
    )?;
    outln!("  header ring {}", p.announce().header_region_uri)?;
    outln!("  announce    {}", announce_file.path().display())?;
    let stop = stop_flag()?;
    let spec = FrameSpec {
        tensor: TensorHeader::row_major(Dtype::Uint8, &dims),
        values_len: len,
        timestamp_ns: 0,
        meta_version: 0,
    };
    let start = Instant::now();
    let (mut n, mut last_refresh, mut last_n) = (0u64, Instant::now(), 0u64);
    while !stop.load(Ordering::Relaxed)
        && (args.count == 0 || n < args.count)
        && args.duration.is_none_or(|d| start.elapsed() < d)
    {
        if args.fps > 0.0 {
            let due = start + Duration::from_secs_f64(n as f64 / args.fps);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let mut spec = spec;
        spec.timestamp_ns = xmem_core::os::time::monotonic_ns();
        let seq = p.publish(&spec, |b| b.fill(n as u8))?.map(|d| d.seq);
        debug_assert_eq!(seq, Some(n));
        n += 1;
        if last_refresh.elapsed() >= Duration::from_secs(1) {
            announce_file.write(p.refresh())?;
            let rate = (n - last_n) as f64 / last_refresh.elapsed().as_secs_f64();
            eprintln!(
                "  {n} frames, {rate:.0} frames/s, {}/s",
                fmt::bytes((rate * len as f64) as u64)
            );
            (last_refresh, last_n) = (Instant::now(), n);
        }
    }
    outln!("produced {n} frames")?;
    Ok(())
}

/// Removes the announce file when the producer stops (its regions go with `TpProducer`).
struct RemoveOnDrop(AnnounceFile);

impl std::ops::Drop for RemoveOnDrop {
    fn drop(&mut self) {
        self.0.remove();
    }
}

fn consume(args: ConsumeArgs) -> Result<()> {
    let announce_file = args.place.announce_file()?;
    let stop = stop_flag()?;
    let deadline = Instant::now() + args.wait;
    let announce = loop {
        match announce_file.read() {
            Ok(a) => break a,
            Err(e) if Instant::now() >= deadline => {
                bail!(
                    "no producer of stream {} announced within {:?}: {e}",
                    args.place.stream,
                    args.wait
                )
            }
            Err(_) if stop.load(Ordering::Relaxed) => bail!("stopped before a producer announced"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut c = TpConsumer::new(AllowedDirs::new([&args.place.base])?);
    c.on_announce(&announce).context("map the announced regions")?;
    outln!("consuming stream {} epoch {}", announce.stream_id, announce.epoch)?;
    let start = Instant::now();
    let mut buf = Vec::new();
    let (mut bad, mut last_report) = (0u64, Instant::now());
    let mut last = c.counters();
    while !stop.load(Ordering::Relaxed)
        && (args.count == 0 || c.counters().accepted < args.count)
        && args.duration.is_none_or(|d| start.elapsed() < d)
    {
        match c.next(&mut buf) {
            Ok(frame) => {
                let want = frame.seq as u8;
                if !buf.iter().all(|&b| b == want) {
                    bad += 1;
                }
            }
            Err(Drop::NotYet) => std::thread::yield_now(),
            Err(Drop::Late | Drop::Invalid(_)) => {}
            Err(Drop::Epoch { .. } | Drop::Unmapped) => {}
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            // The announce is soft state: re-read it, remap on a new epoch.
            match announce_file.read() {
                Ok(a) => {
                    if let Ok(xmem_tensorpool::stream::Remap::Remapped { to, .. }) = c.on_announce(&a) {
                        eprintln!("  remapped to epoch {to}");
                    }
                }
                // The producer removes its announce when it stops.
                Err(_) => {
                    eprintln!("  the producer stopped");
                    break;
                }
            }
            let now = c.counters();
            let secs = last_report.elapsed().as_secs_f64();
            eprintln!(
                "  {:.0} frames/s accepted, drops: {} gap, {} late, {} invalid; {bad} bad",
                (now.accepted - last.accepted) as f64 / secs,
                now.drops_gap,
                now.drops_late,
                now.drops_invalid
            );
            (last, last_report) = (now, Instant::now());
        }
    }
    let total = c.counters();
    outln!(
        "accepted {} frames, drops: {} gap, {} late, {} invalid; {bad} with wrong bytes",
        total.accepted,
        total.drops_gap,
        total.drops_late,
        total.drops_invalid
    )?;
    std::io::stdout().flush()?;
    if bad > 0 {
        bail!("{bad} accepted frames had wrong bytes");
    }
    Ok(())
}
