//! # xmem-aeron
//!
//! Aeron as xmem uses it: the transport of the SHM Tensor Pool's control plane (announces,
//! descriptors, QoS, metadata) and, later, of its bridge between hosts. The payloads never cross
//! it on one machine; they stay in shared memory.
//!
//! * [`dir`]: which Aeron directory a process uses (`--aeron-dir`, `AERON_DIR`, Aeron's default
//!   `/dev/shm/aeron-<user>`), and whether a live media driver runs there. A directory left by a
//!   dead driver is recognised at once by its pid, not after Aeron's 10 s timeout.
//! * [`MediaDriver`]: a media driver on a thread of this process, in a directory of its own or in
//!   one a dead driver left, with small terms, its files removed when it stops.
//! * [`Client`]: one Aeron client per process; [`Publication`] offers that never wait and say
//!   why a message did not go, [`Subscription`] polls that reassemble fragmented messages.
//!
//! Built on rusteron (Aeron's C client and driver, compiled from source by its build script,
//! which needs CMake ≥ 3.30, libclang, uuid and libbsd: `scripts/aeron-prereqs`). Every rusteron
//! handle is `!Send`: a [`Client`] and what it creates live on the thread that made them.

mod client;
pub mod dir;
mod driver;
mod error;

pub use client::{
    read_counters, Client, ClientOptions, Counter, CounterValue, Message, Offer, PendingCounter, Publication,
    Subscription,
};
pub use dir::{default_dir, driver_status, DriverStatus};
pub use driver::{DriverOptions, MediaDriver};
pub use error::{Error, Result};

/// Aeron's IPC channel as the tensor-pool implementations (C and Julia) write it. A publication
/// of the same stream with other parameters is refused by the driver ("existing publication has
/// different 'term-length'"), so peers must use this exact string.
pub const TP_CHANNEL: &str = "aeron:ipc?term-length=4m";
