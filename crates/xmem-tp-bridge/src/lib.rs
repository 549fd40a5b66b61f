//! # xmem-tp-bridge
//!
//! The SHM Tensor Pool's Aeron UDP bridge (AeronTensorPool.jl's bridge spec v1.1, tensor-pool
//! digest §6): a local stream's frames cut into `BridgeFrameChunk`s over Aeron UDP, reassembled
//! on the other host and republished into a local stream there. Only payload chunks cross UDP;
//! announces travel on the bridge's control channel. Aeron UDP (reliable, flow-controlled) is the
//! transport: xmem builds none of its own.
//!
//! * [`chunk`]: the chunk message at fixed offsets, and chunk sizes.
//! * [`assembly`]: reassembly by offset with its drop rules and caps.
//! * [`Sender`], [`Receiver`]: the two ends of a mapping.
//! * [`xmem_stream`]: either end on an xmem stream instead of a tensor-pool one.

pub mod assembly;
pub mod chunk;
pub mod config;
pub mod forward;
pub mod receiver;
pub mod sender;
pub mod xmem_stream;

pub use receiver::{Receiver, ReceiverOptions, ReceiverStats};
pub use sender::{Sender, SenderOptions, SenderStats};

/// Errors of the bridge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Aeron.
    #[error(transparent)]
    Aeron(#[from] xmem_aeron::Error),
    /// The local regions.
    #[error(transparent)]
    TensorPool(#[from] xmem_tensorpool::Error),
    /// The local control plane.
    #[error(transparent)]
    Control(#[from] xmem_tp_control::Error),
    /// An xmem stream at one end.
    #[error(transparent)]
    Stream(xmem_core::Error),
}
