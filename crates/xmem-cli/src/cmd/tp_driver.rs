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
pub struct DriverArgs {
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

pub fn driver(args: DriverArgs) -> Result<()> {
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
pub struct LeasesArgs {
    /// The Aeron directory (default: $AERON_DIR, else /dev/shm/aeron-USER).
    #[arg(long, env = "AERON_DIR")]
    aeron_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

pub fn leases(args: LeasesArgs) -> Result<()> {
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
