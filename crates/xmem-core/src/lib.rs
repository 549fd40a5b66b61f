//! # xmem-core
//!
//! Zero-copy sharing of tensors and frames between processes on one machine, through shared
//! memory that is typed, recycled, crash-safe and observable.
//!
//! * [`BufferPool`]: a fixed pool of reference-counted buffers; guards ([`Buffer`],
//!   [`BufferMut`]) in this process, 16-byte tokens ([`BufferRef`]) for others. The references
//!   of a process that dies are returned exactly.
//! * [`segment`]: seqlock segments: one writer publishes a latest value that many readers take
//!   without locks, never torn.
//! * [`discovery`]: what exists, who owns it, whether it lives; change events; orphan cleanup.
//! * [`object`]: what every shared object has: a name, an owner, a published header, discovery.
//! * [`tensor`]: dtype, shape and strides, validated against the buffer they describe.
//! * [`os`]: the only module that makes system calls.
//!
//! Linux only: xmem relies on futexes, `/proc`, `memfd` and tmpfs.

#![warn(missing_docs)]

#[cfg(not(target_os = "linux"))]
compile_error!("xmem supports Linux only (futex, /proc, memfd, tmpfs)");

pub mod crash;
pub mod discovery;
mod dtype;
mod error;
pub mod object;
pub mod pool;
pub mod segment;
pub mod stream;
mod sync;
pub mod tensor;

pub use error::{Error, Result};
pub use pool::{
    Buffer, BufferMut, BufferPool, BufferRef, DeviceKind, DeviceRecord, Peer, PoolBuilder, PoolConfig,
    ReclaimReport, Storage,
};
pub use tensor::{DType, Element, TensorDesc};
/// The operating-system layer (the `xmem-os` crate), under the name the modules here use.
pub use xmem_os as os;
