//! # xmem-tp-control
//!
//! The SHM Tensor Pool's control plane over Aeron, in the protocol's no-driver mode: the
//! messages that let an xmem producer or consumer work with the C (tensor_pool_c) and Julia
//! (AeronTensorPool.jl) implementations. The payloads stay in shared memory
//! (`xmem-tensorpool`); only what describes them crosses Aeron (`xmem-aeron`).
//!
//! * [`Producer`]: creates a stream's regions, commits frames, sends a `FrameDescriptor` for
//!   each (never waiting: back-pressure and no subscriber are counted), `ShmPoolAnnounce` every
//!   announce period and on every epoch, `QosProducer`, `DataSourceAnnounce`/`DataSourceMeta`;
//!   serves per-consumer descriptor streams that a `ConsumerConfig` grants, throttled to the
//!   consumer's `max_rate_hz`.
//! * [`Consumer`]: finds its stream by announces (fresh, after its join time), maps, follows
//!   descriptors, validates each frame through the seqlock, counts drops by reason, sends
//!   `ConsumerHello` and `QosConsumer`, and goes UNMAPPED → MAPPED → FALLBACK as announces,
//!   activity stamps and configs say.
//! * [`Supervisor`]: answers each `ConsumerHello` with a `ConsumerConfig` by policy, handing out
//!   per-consumer stream ids from the 31000/32000 ranges without collisions.
//! * [`messages`]: the typed messages and the gate every received one passes.
//! * [`trace`]: TraceLink ids and sets.
//!
//! Everything runs on the caller's thread through `poll` calls (a duty cycle): Aeron handles are
//! `!Send`, and the caller decides how often to look.

pub mod channels;
mod consumer;
pub mod counters;
pub mod messages;
mod producer;
mod supervisor;
pub mod trace;

pub use channels::{Channels, Endpoint};
pub use consumer::{Consumer, ConsumerOptions, ConsumerStats, Frame, State};
pub use messages::{Mode, StreamRequest};
pub use producer::{Producer, ProducerOptions, ProducerStats};
pub use supervisor::{Policy, Supervisor};

use std::time::Duration;

/// The announce period both implementations default to.
pub const ANNOUNCE_PERIOD: Duration = Duration::from_secs(1);

/// Errors of the control plane.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Aeron (the driver, the client).
    #[error(transparent)]
    Aeron(#[from] xmem_aeron::Error),
    /// The tensor pool (regions, announces).
    #[error(transparent)]
    TensorPool(#[from] xmem_tensorpool::Error),
    /// A message could not be encoded.
    #[error("encoding {what}: {detail}")]
    Encode {
        /// The message.
        what: &'static str,
        /// Why.
        detail: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// CLOCK_MONOTONIC in nanoseconds: the clock announces and activity stamps use (one host).
pub(crate) fn now_ns() -> u64 {
    xmem_core::os::time::monotonic_ns()
}

/// CLOCK_REALTIME in nanoseconds (announces stamped REALTIME_SYNCED).
pub(crate) fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

pub(crate) fn encode_err(what: &'static str) -> impl FnOnce(xmem_tensorpool::codec::CodecError) -> Error {
    move |e| Error::Encode {
        what,
        detail: e.to_string(),
    }
}
