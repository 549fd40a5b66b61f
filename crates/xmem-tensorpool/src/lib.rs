//! The SHM Tensor Pool protocol, v1.2, byte-compatible with its C and Julia implementations.
//!
//! What is here so far is the shared-memory side: the 64-byte region superblock, the 256-byte
//! header slot with its embedded `TensorHeader`, their validation with typed errors
//! ([`layout`]), region URIs ([`uri`]), region files ([`region`]) and the seqlock commit
//! protocol between a producer and consumers ([`commit`]). Every value is read and written with explicit
//! little-endian offsets, never by casting a struct over the bytes: the protocol's fields are
//! packed and unaligned (the tensor's `dims` start at an odd offset), and a consumer maps the
//! producer's memory read-only and must survive any bytes in it.
//!
//! Still to come (see this crate's README): the SBE control-plane codecs of the six schemas,
//! announces, epochs and remapping, and the CLI.

pub mod codec;
pub mod commit;
pub mod error;
pub mod layout;
pub mod region;
pub mod uri;

pub use error::{Error, Result};
