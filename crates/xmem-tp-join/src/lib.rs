//! # xmem-tp-join
//!
//! The SHM Tensor Pool's join barrier (tensor-pool digest §4.5, §6): MergeMaps scoped to an
//! output stream and epoch say which input frames an output frame needs — by sequence (OFFSET,
//! WINDOW), by time (OFFSET_NS, WINDOW_NS with lateness, one clock domain, monotonic times), or
//! the latest value of each — and a barrier says, without waiting and without allocating, whether
//! it may be made now. An [`Authority`] answers `*MergeMapRequest`s with the maps it holds.

pub mod authority;
pub mod barrier;
pub mod map;

pub use authority::Authority;
pub use barrier::{LatestValue, ObserveError, Readiness, SequenceBarrier, TimestampBarrier};
pub use map::{MapError, SeqRule, SequenceMap, TimeRule, TimestampMap, TimestampSource};
