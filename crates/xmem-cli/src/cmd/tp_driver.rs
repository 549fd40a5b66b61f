//! `xmem tp driver` and `xmem tp leases`: the tensor pool's driver model — one process per host
//! that owns the streams' shared memory and leases it (xmem-tp-driver), and the leases it holds,
//! read from the media driver's counters file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use xmem_tp_driver::{Driver, DriverConfig};

use super::produce::stop_on_signals;
use super::tp_live::{connect_media, DriverMode};
use crate::Format;

/// `xmem tp driver`.
#[derive(clap::Args, Debug)]
pub(crate) struct DriverArgs {
    /// The configuration: TOML with tensor_pool_c's sections and keys (an example is
    /// crates/xmem-tp-driver/config/driver.toml); without it, the defaults. Environment
    /// variables override keys (`DRIVER_CONTROL_STREAM_ID=1100`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Print the effective configuration (file, environment and defaults) and exit.
    #[arg(long)]
    print_config: bool,
    /// The Aeron directory (default: the configuration's `driver.aeron_dir`, else
    /// $AERON_DIR, else /dev/shm/aeron-USER).
    #[arg(long)]
    aeron_dir: Option<PathBuf>,
    /// Which media driver to use.
    #[arg(long, value_enum, default_value_t = DriverMode::Auto)]
    media_driver: DriverMode,
}

pub(crate) fn driver(args: DriverArgs) -> Result<()> {
    let config = match &args.config {
        Some(path) => DriverConfig::load(path)?,
        None => DriverConfig::parse("", "the defaults", |k| std::env::var(k).ok())?,
    };
    if args.print_config {
        out!("{}", config.to_toml())?;
        return Ok(());
    }
    let dir = args
        .aeron_dir
        .clone()
        .or_else(|| (!config.driver.aeron_dir.is_empty()).then(|| config.driver.aeron_dir.clone().into()))
        .unwrap_or_else(xmem_aeron::default_dir);
    let stop = stop_on_signals()?;
    let (client, _media) = connect_media(dir.clone(), args.media_driver)?;
    let (announce_channel, announce_stream) = config.announce();
    outln!(
        "tensor-pool driver {} on {} stream {} (announces on {announce_channel} stream {announce_stream}), regions under {}/tensorpool-<user>/{}, Aeron in {}",
        config.driver.instance_id,
        config.driver.control_channel,
        config.driver.control_stream_id,
        config.shm.base_dir,
        config.shm.namespace,
        dir.display()
    )?;
    let driver = Driver::new(&client, config).context("start the driver")?;
    let stats = xmem_tp_driver::run(driver, &stop)?;
    outln!(
        "driver closed: {} attaches granted, {} refused, {} leases expired, {} epochs made, {} collected",
        stats.attached,
        stats.refused,
        stats.expired,
        stats.epochs,
        stats.collected
    )?;
    Ok(())
}

/// `xmem tp leases`.
#[derive(clap::Args, Debug)]
pub(crate) struct LeasesArgs {
    /// The Aeron directory (default: $AERON_DIR, else /dev/shm/aeron-USER).
    #[arg(long, env = "AERON_DIR")]
    aeron_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Revoke this lease instead of listing (reason REVOKED; a producer's stream gets a new
    /// epoch). Needs the driver's `shutdown_token`; an xmem driver only (C drivers have no
    /// such request).
    #[arg(long, value_name = "LEASE_ID", requires = "token")]
    revoke: Option<u64>,
    /// The driver's `policies.shutdown_token`.
    #[arg(long, env = "POLICIES_SHUTDOWN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Why (sent in the revoke notice).
    #[arg(long, default_value = "")]
    why: String,
    /// The driver's control channel.
    #[arg(long, default_value = xmem_aeron::TP_CHANNEL)]
    control_channel: String,
    /// The driver's control stream.
    #[arg(long, default_value_t = 1000)]
    control_stream_id: i32,
}

pub(crate) fn leases(args: LeasesArgs) -> Result<()> {
    if let Some(lease_id) = args.revoke {
        return revoke(&args, lease_id);
    }
    let dir = args.aeron_dir.unwrap_or_else(xmem_aeron::default_dir);
    let counters = xmem_aeron::read_counters(&dir)?;
    let mut leases: Vec<_> = counters
        .iter()
        .filter_map(xmem_tp_driver::leases::parse)
        .collect();
    leases.sort();
    match args.format {
        Format::Json => {
            for (l, left) in &leases {
                let j = serde_json::json!({
                    "lease_id": l.lease_id, "stream_id": l.stream_id, "client_id": l.client_id,
                    "role": l.role.name(), "node_id": l.node_id, "driver_pid": l.driver_pid, "ms_left": left,
                });
                outln!("{j}")?;
            }
        }
        Format::Text => {
            if leases.is_empty() {
                outln!(
                    "no tensor-pool leases in {} (is `xmem tp driver` running there?)",
                    dir.display()
                )?;
                return Ok(());
            }
            outln!(
                "{:<20} {:>8} {:>10} {:<8} {:>10} {:>8} {:>8}",
                "LEASE",
                "STREAM",
                "CLIENT",
                "ROLE",
                "NODE",
                "DRIVER",
                "MS LEFT"
            )?;
            for (l, left) in &leases {
                outln!(
                    "{:<20} {:>8} {:>10} {:<8} {:>10} {:>8} {:>8}",
                    l.lease_id,
                    l.stream_id,
                    l.client_id,
                    l.role.name(),
                    l.node_id,
                    l.driver_pid,
                    left
                )?;
            }
        }
    }
    Ok(())
}

/// Sends the revoke request every 200 ms until the driver's revoke notice of `lease_id` comes
/// back (3 s at most).
fn revoke(args: &LeasesArgs, lease_id: u64) -> Result<()> {
    use xmem_tp_driver::protocol::{decode_notice, Notice, RevokeRequest};
    let dir = args.aeron_dir.clone().unwrap_or_else(xmem_aeron::default_dir);
    let (client, _media) = connect_media(dir, DriverMode::External)?;
    let out = client.publication(&args.control_channel, args.control_stream_id)?;
    let mut inn = client.subscription(&args.control_channel, args.control_stream_id)?;
    let request = RevokeRequest {
        correlation_id: std::process::id().into(),
        lease_id,
        token: args.token.clone().unwrap_or_default(),
        message: args.why.clone(),
    }
    .encode();
    let start = std::time::Instant::now();
    let mut next = start;
    while start.elapsed() < std::time::Duration::from_secs(3) {
        if std::time::Instant::now() >= next && out.is_connected() {
            let _ = out.offer(&request);
            next = std::time::Instant::now() + std::time::Duration::from_millis(200);
        }
        let mut done = None;
        inn.poll(64, |m| {
            if let Some(Notice::Revoked(r)) = decode_notice(m.bytes) {
                if r.lease_id == lease_id {
                    done = Some(r);
                }
            }
        })?;
        if let Some(r) = done {
            outln!(
                "lease {lease_id} ({} of stream {}, client {}) revoked: {}",
                r.role.name(),
                r.stream_id,
                r.client_id,
                r.message
            )?;
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    anyhow::bail!(
        "no revoke of lease {lease_id} came within 3 s on {} stream {}: the driver holds no such lease (`xmem tp leases` lists them), the token is not its shutdown_token, or no xmem driver listens there",
        args.control_channel,
        args.control_stream_id
    )
}

/// `xmem tp discover`.
#[derive(clap::Args, Debug)]
pub(crate) struct DiscoverArgs {
    /// The Aeron directory (default: $AERON_DIR, else /dev/shm/aeron-USER).
    #[arg(long, env = "AERON_DIR")]
    aeron_dir: Option<PathBuf>,
    /// The channel of requests and responses.
    #[arg(long, default_value = xmem_aeron::TP_CHANNEL)]
    channel: String,
    /// Where providers take requests.
    #[arg(long, default_value_t = 9000)]
    request_stream: i32,
    /// Where this asks for the answer.
    #[arg(long, default_value_t = 9001)]
    response_stream: i32,
    /// Only the stream of this data source name (byte for byte).
    #[arg(long)]
    name: Option<String>,
    /// Only streams with this tag (case-sensitive; repeat for several, all required).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Only this stream id.
    #[arg(long)]
    stream: Option<u32>,
    /// Only this producer id.
    #[arg(long)]
    producer: Option<u32>,
    /// Give up after this long without an answer (the request is re-sent every 200 ms).
    #[arg(long, default_value = "5s", value_parser = super::demo::parse_duration)]
    timeout: std::time::Duration,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub(crate) fn discover(args: DiscoverArgs) -> Result<()> {
    let dir = args.aeron_dir.clone().unwrap_or_else(xmem_aeron::default_dir);
    let (client, _media) = connect_media(dir, DriverMode::External)?;
    let e = |id| xmem_tp_control::Endpoint {
        channel: args.channel.clone(),
        stream_id: id,
    };
    let mut d = xmem_tp_discovery::Discoverer::new(&client, e(args.request_stream), e(args.response_stream))?;
    let filters = xmem_tp_discovery::Request {
        stream_id: args.stream,
        producer_id: args.producer,
        data_source_name: args.name.clone().unwrap_or_default(),
        tags: args.tags.clone(),
        ..Default::default()
    };
    let r = d.query(&filters, args.timeout, std::time::Duration::from_millis(200))?;
    for f in &r.results {
        match args.format {
            Format::Json => {
                let j = serde_json::json!({
                    "stream_id": f.stream_id, "producer_id": f.producer_id, "epoch": f.epoch,
                    "header_nslots": f.header_nslots, "name": f.data_source_name, "tags": f.tags,
                    "header_region_uri": f.header_region_uri,
                    "pools": f.pools.iter().map(|p| serde_json::json!({"pool_id": p.pool_id, "stride_bytes": p.stride_bytes, "region_uri": p.region_uri})).collect::<Vec<_>>(),
                    "driver": {"instance_id": f.driver_instance_id, "control_channel": f.driver_control_channel, "control_stream_id": f.driver_control_stream_id},
                });
                outln!("{j}")?;
            }
            Format::Text => outln!(
                "stream {} epoch {} producer {} name {:?} tags [{}]: {} slots, pools {}; attach at {} {} stream {}",
                f.stream_id,
                f.epoch,
                f.producer_id,
                f.data_source_name,
                f.tags.join(", "),
                f.header_nslots,
                f.pools.iter().map(|p| format!("{}×{} B", p.pool_id, p.stride_bytes)).collect::<Vec<_>>().join(" "),
                f.driver_instance_id,
                f.driver_control_channel,
                f.driver_control_stream_id
            )?,
        }
    }
    if r.results.is_empty() && args.format == Format::Text {
        outln!("no stream matches")?;
    }
    Ok(())
}

/// `xmem tp discoveryd`.
#[derive(clap::Args, Debug)]
pub(crate) struct DiscoverydArgs {
    /// The configuration (tensor_pool_c's `[discovery]` keys).
    #[arg(long)]
    config: PathBuf,
    /// Which media driver to use.
    #[arg(long, value_enum, default_value_t = DriverMode::External)]
    media_driver: DriverMode,
}

pub(crate) fn discoveryd(args: DiscoverydArgs) -> Result<()> {
    let config =
        xmem_tp_discovery::config::DiscoveryConfig::load(&args.config).map_err(anyhow::Error::msg)?;
    let dir = (!config.driver.aeron_dir.is_empty())
        .then(|| PathBuf::from(&config.driver.aeron_dir))
        .or_else(|| std::env::var_os("AERON_DIR").map(PathBuf::from))
        .unwrap_or_else(xmem_aeron::default_dir);
    let stop = stop_on_signals()?;
    let (client, _media) = connect_media(dir, args.media_driver)?;
    let registry = xmem_tp_discovery::Registry::new(config.announce_period(), config.discovery.max_results);
    let mut provider = xmem_tp_discovery::Provider::new(&client, config.provider_options(), registry)?;
    outln!(
        "discovery provider for {} on {} stream {}",
        config.discovery.driver_instance_id,
        config.discovery.request_channel,
        config.discovery.request_stream_id
    )?;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        client.check()?;
        if provider.poll()? == 0 {
            std::thread::sleep(std::time::Duration::from_micros(500));
        }
    }
    let s = provider.stats();
    outln!(
        "provider stopped: {} answered, {} announces registered",
        s.answered,
        s.announces
    )?;
    Ok(())
}
