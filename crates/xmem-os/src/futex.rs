//! Futex wait and wake on a 32-bit word in shared memory.
//!
//! The words live in `MAP_SHARED` mappings, so the futexes are *not* private: the kernel keys
//! them by physical page, which is what makes a wake in one process reach a waiter in another.

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rustix::io::Errno;
use rustix::thread::futex;

/// Why a [`wait`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitResult {
    /// Woken, interrupted, or the word no longer held the expected value.
    Woken,
    /// The timeout elapsed.
    TimedOut,
}

/// Sleeps while `word` holds `expected`, for at most `timeout`.
///
/// Spurious returns are possible; callers re-check their condition in a loop.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) -> WaitResult {
    let ts = futex::Timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    match futex::wait(word, futex::Flags::empty(), expected, Some(&ts)) {
        Err(Errno::TIMEDOUT) => WaitResult::TimedOut,
        // Ok: woken; AGAIN: the value changed first; INTR: a signal. All mean "look again".
        _ => WaitResult::Woken,
    }
}

/// Wakes up to `count` waiters on `word`; returns how many were woken.
pub fn wake(word: &AtomicU32, count: u32) -> usize {
    futex::wake(word, futex::Flags::empty(), count).unwrap_or(0)
}
