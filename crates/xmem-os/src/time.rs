//! Clocks.
//!
//! Read through libc's `clock_gettime` (vDSO), not rustix's own vDSO parser, which valgrind's
//! synthetic vDSO crashes: users debugging a pipeline under valgrind must be able to.

fn now(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clocks exist on every Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64
}

/// Nanoseconds since the Unix epoch (wall clock), for timestamps shown to people.
pub fn unix_now_ns() -> u64 {
    now(libc::CLOCK_REALTIME)
}

/// Nanoseconds of `CLOCK_MONOTONIC`, comparable across processes on one machine.
pub fn monotonic_ns() -> u64 {
    now(libc::CLOCK_MONOTONIC)
}

/// `CLOCK_MONOTONIC_COARSE` in ns: a few ns to read (no TSC read), ticks every few ms. Good
/// enough for heartbeats on hot paths.
pub fn monotonic_coarse_ns() -> u64 {
    now(libc::CLOCK_MONOTONIC_COARSE)
}

/// `CLOCK_REALTIME_COARSE` in ns since the epoch (see [`monotonic_coarse_ns`]).
pub fn unix_coarse_ns() -> u64 {
    now(libc::CLOCK_REALTIME_COARSE)
}
