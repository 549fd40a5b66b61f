//! `xmem tp bridge --config FILE`: one end (or both) of the Aeron UDP bridge, per mapping.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;
use xmem_tp_bridge::config::{BridgeConfig, Role};
use xmem_tp_bridge::{Receiver, Sender};

use super::produce::stop_on_signals;
use super::tp_live::{connect_media, DriverMode};

/// `xmem tp bridge`.
#[derive(clap::Args, Debug)]
pub(crate) struct BridgeArgs {
    /// The configuration: AeronTensorPool.jl's `[bridge]` and `[[mappings]]` keys, each mapping
    /// with `role = "sender"` or `"receiver"`, `[local]` and `[profiles.*]` for this host.
    #[arg(long)]
    config: PathBuf,
    /// The Aeron directory (default: the configuration's local.aeron_dir, else $AERON_DIR,
    /// else /dev/shm/aeron-USER).
    #[arg(long)]
    aeron_dir: Option<PathBuf>,
    /// Which media driver to use.
    #[arg(long, value_enum, default_value_t = DriverMode::External)]
    media_driver: DriverMode,
    /// Stop after this long.
    #[arg(long, value_parser = super::demo::parse_duration)]
    duration: Option<Duration>,
}

pub(crate) fn bridge(args: BridgeArgs) -> Result<()> {
    let config = BridgeConfig::load(&args.config).map_err(anyhow::Error::msg)?;
    let b = &config.bridge;
    if (b.forward_metadata || b.forward_tracelink) && b.metadata_channel.is_empty() {
        eprintln!("  bridge.forward_metadata / forward_tracelink without a metadata_channel: metadata and TraceLinkSets stay local");
    }
    let dir = args
        .aeron_dir
        .clone()
        .or_else(|| (!config.local.aeron_dir.is_empty()).then(|| PathBuf::from(&config.local.aeron_dir)))
        .or_else(|| std::env::var_os("AERON_DIR").map(PathBuf::from))
        .unwrap_or_else(xmem_aeron::default_dir);
    let stop = stop_on_signals()?;
    let (client, _media) = connect_media(dir, args.media_driver)?;
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for m in &config.mappings {
        match m.role {
            Role::Sender => {
                senders.push(Sender::new(&client, config.sender(m)?)?);
                outln!(
                    "sending stream {} as {} on {} stream {}",
                    m.source_stream_id,
                    m.dest_stream_id,
                    b.payload_channel,
                    b.payload_stream_id
                )?;
            }
            Role::Receiver => {
                receivers.push(Receiver::new(&client, config.receiver(m))?);
                outln!(
                    "receiving stream {} from {} stream {} into local stream {}",
                    m.dest_stream_id,
                    b.payload_channel,
                    b.payload_stream_id,
                    m.dest_stream_id
                )?;
            }
        }
    }
    let start = Instant::now();
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) && args.duration.is_none_or(|d| start.elapsed() < d) {
        client.check()?;
        let mut work = 0;
        for s in &mut senders {
            work += s.poll()?;
        }
        for r in &mut receivers {
            work += r.poll()?;
        }
        if last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            for s in &senders {
                let st = s.stats();
                outln!(
                    "  sender: {} frames, {} chunks, {} abandoned",
                    st.frames,
                    st.chunks,
                    st.abandoned
                )?;
            }
            for r in &receivers {
                let st = r.stats();
                outln!(
                    "  receiver: {} frames; drops: {} incomplete, {} conflicts, {} crc, {} too large, {} invalid, {} before announce",
                    st.frames, st.incomplete, st.conflicts, st.crc, st.too_large, st.invalid, st.before_announce
                )?;
            }
        }
        if work == 0 {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    Ok(())
}
