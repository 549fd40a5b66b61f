//! `xmem tp …`: the SHM Tensor Pool protocol from the shell — decode any control message,
//! inspect a region; producers, consumers, a listener and a media driver over Aeron
//! (`tp_live`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use xmem_tensorpool::codec::{self, text};
use xmem_tensorpool::layout::{RegionType, SlotHeader};
use xmem_tensorpool::region::Region;
use xmem_tensorpool::uri::ShmUri;

use crate::{fmt, Format};

#[derive(clap::Subcommand, Debug)]
pub(crate) enum TpCommand {
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
    /// Produce sample frames over Aeron (frame n: every byte n % 256): regions in shared
    /// memory, announces and descriptors on the control plane, as tensor_pool_c speaks it.
    Produce(super::tp_live::ProduceArgs),
    /// Find a stream by its announces, follow its descriptors, check every frame, print drops.
    Consume(super::tp_live::ConsumeArgs),
    /// Print every message on the control, announce, QoS and metadata streams, decoded.
    Listen(super::tp_live::ListenArgs),
    /// Run an Aeron media driver as a process of its own (until SIGINT or SIGTERM).
    MediaDriver(super::tp_live::MediaDriverArgs),
    /// Every tensor-pool producer's, consumer's and bridge end's counters (sent, dropped by reason,
    /// back-pressure, consumers seen), read from the media driver's counters file.
    Stat(super::tp_live::StatArgs),
    /// A producer here and consumer processes over an embedded media driver, every frame checked.
    Demo(super::tp_live::DemoArgs),
    /// Run a tensor-pool driver: it owns the streams' shared memory and leases it to
    /// producers and consumers that attach (`produce --attach`, `consume --attach`, or
    /// tensor_pool_c's clients). Until SIGINT or SIGTERM, which shut it down gracefully.
    Driver(super::tp_driver::DriverArgs),
    /// The leases a tensor-pool driver holds now: stream, client, role, node, time left.
    Leases(super::tp_driver::LeasesArgs),
    /// Ask a discovery provider which streams exist (by name, tags, stream, producer), retrying
    /// until it answers.
    Discover(super::tp_driver::DiscoverArgs),
    /// Run a standalone discovery provider (tensor_pool_c's `[discovery]` configuration).
    Discoveryd(super::tp_driver::DiscoverydArgs),
    /// Run the Aeron UDP bridge: local streams' frames to another host, or another host's
    /// into local streams (per mapping), until SIGINT or SIGTERM.
    Bridge(super::tp_bridge::BridgeArgs),
    /// Remove what dead producers and media drivers left: epoch regions whose producer is gone
    /// (idle past --grace), empty layout directories, an Aeron directory whose driver is dead.
    Clean(super::tp_clean::CleanArgs),
}

pub(crate) fn run(cmd: TpCommand) -> Result<()> {
    match cmd {
        TpCommand::Decode { file, format } => decode(&file, format),
        TpCommand::Inspect {
            region,
            frames,
            format,
        } => inspect(&region, frames, format),
        TpCommand::Produce(args) => super::tp_live::produce(args),
        TpCommand::Consume(args) => super::tp_live::consume(args),
        TpCommand::Listen(args) => super::tp_live::listen(args),
        TpCommand::MediaDriver(args) => super::tp_live::media_driver(args),
        TpCommand::Demo(args) => super::tp_live::demo(args),
        TpCommand::Driver(args) => super::tp_driver::driver(args),
        TpCommand::Leases(args) => super::tp_driver::leases(args),
        TpCommand::Discover(args) => super::tp_driver::discover(args),
        TpCommand::Discoveryd(args) => super::tp_driver::discoveryd(args),
        TpCommand::Bridge(args) => super::tp_bridge::bridge(args),
        TpCommand::Stat(args) => super::tp_live::stat(args),
        TpCommand::Clean(args) => super::tp_clean::clean(args),
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
                t.dims()
                    .iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join("x")
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
