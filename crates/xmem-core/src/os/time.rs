//! Clocks.

use rustix::time::{clock_gettime, ClockId};

/// Nanoseconds since the Unix epoch (wall clock), for timestamps shown to people.
pub fn unix_now_ns() -> u64 {
    let ts = clock_gettime(ClockId::Realtime);
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// Nanoseconds of `CLOCK_MONOTONIC`, comparable across processes on one machine.
pub fn monotonic_ns() -> u64 {
    let ts = clock_gettime(ClockId::Monotonic);
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}
