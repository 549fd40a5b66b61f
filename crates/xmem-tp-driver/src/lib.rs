//! # xmem-tp-driver
//!
//! The SHM Tensor Pool's driver model (tensor-pool digest §5), both sides, interoperable with
//! tensor_pool_c's `tp_driver` and clients:
//!
//! * [`Driver`]: the one process of a host that creates, truncates and unlinks its streams'
//!   shared memory. It answers `ShmAttachRequest` after the C driver's checks in their order,
//!   makes a new epoch (new files) on every producer attach and on a producer's loss, announces
//!   every period, keeps leases alive by keepalive and expires them after three missed ones,
//!   sends `ShmLeaseRevoked` for every invalidation and `ShmDriverShutdown` when it closes, and
//!   collects old epochs.
//! * [`DriverClient`]: attach with retries (the same request every 200 ms, a new auto-assigned
//!   client id on "already attached"), keepalives, and the events that end a lease — a revoke,
//!   the driver's shutdown, failing keepalives, or a driver gone silent.
//! * [`config`]: TOML with tensor_pool_c's keys and defaults, environment overrides.
//! * [`run`]: the driver's loop as `xmem tp driver` and the `xmem-tp-driver` binary run it.
//!
//! Producers and consumers in driver mode are xmem-tp-control's, fed the regions an attach
//! grants: `TpProducer::attach` opens them read-write and creates nothing (D-2.2).

pub mod client;
pub mod config;
pub mod leases;
pub mod protocol;
mod server;

pub use client::{backoff, AttachError, Attachment, DriverClient, DriverClientOptions, Event};
pub use config::{ConfigError, DriverConfig};
pub use protocol::{Code, RevokeReason, Role};
pub use server::{Driver, DriverStats, Lease};

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Errors of the driver.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Aeron.
    #[error(transparent)]
    Aeron(#[from] xmem_aeron::Error),
    /// The regions (a full /dev/shm, a base directory that cannot be made).
    #[error(transparent)]
    TensorPool(#[from] xmem_tensorpool::Error),
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs `driver` until `stop` is set (SIGINT/SIGTERM) or a requested shutdown completes, then
/// closes it: the shutdown notice goes out and its regions are removed.
pub fn run(mut driver: Driver, stop: &AtomicBool) -> Result<DriverStats> {
    let mut idle = Backoff::default();
    while !stop.load(Ordering::Relaxed) && !driver.is_shut_down() {
        idle.idle(driver.do_work()?);
    }
    let stats = driver.stats();
    driver.close();
    tracing::info!(?stats, "tensor-pool driver closed");
    Ok(stats)
}

/// The driver loop's idle strategy (as Aeron's backoff): after work, yield for a while (a
/// request that follows another is answered at once), then nap 500 µs at a time (an idle
/// driver costs next to no CPU).
#[derive(Debug, Default)]
pub struct Backoff {
    idle: u32,
}

impl Backoff {
    /// Yields this many idle cycles before napping.
    const SPINS: u32 = 2_000;

    /// Call after each duty cycle with the work it did.
    pub fn idle(&mut self, work: usize) {
        if work > 0 {
            self.idle = 0;
        } else if self.idle < Self::SPINS {
            self.idle += 1;
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(500));
        }
    }
}
