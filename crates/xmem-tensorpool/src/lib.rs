//! The SHM Tensor Pool protocol, v1.2, byte-compatible with its C and Julia implementations.
//!
//! * [`codec`]: the SBE messages of the six schemas (wire, driver, bridge, join-barrier,
//!   trace-link, discovery), one decoder and one encoder driven by the schemas themselves;
//! * [`layout`]: the 64-byte region superblock and the 256-byte header slot with its embedded
//!   `TensorHeader`, validated with typed errors;
//! * [`uri`], [`paths`], [`region`]: region URIs, the canonical path layout and the checks before
//!   mapping (containment, no symlinks, file identity, permissions, huge pages), region files;
//! * [`commit`]: the seqlock commit protocol between a producer and consumers;
//! * [`stream`]: producer and consumer over announces and descriptors, with epochs and remapping,
//!   and the one seam where the Aeron control plane will carry those messages.
//!
//! Every value is read and written with explicit little-endian offsets, never by casting a struct
//! over the bytes: the protocol's fields are packed and unaligned (the tensor's `dims` start at
//! an odd offset), and a consumer maps the producer's memory read-only and must survive any bytes
//! in it.

pub mod codec;
pub mod commit;
pub mod error;
pub mod layout;
#[cfg(all(test, loom))]
mod model;
pub mod paths;
pub mod region;
pub mod stream;
pub mod uri;

pub use error::{Error, Result};
