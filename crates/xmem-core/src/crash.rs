//! Named crash points for the kill tests (feature `crash-points`).
//!
//! With the feature on, `XMEM_CRASH_AT=name` (or `name:n` for the n-th hit, counting from 1)
//! makes the process `_exit(137)` at that point: no destructor, no unlock, no cleanup, exactly
//! like a `SIGKILL` there. `XMEM_PAUSE_AT=name` instead stops the process there (it sends itself
//! `SIGSTOP`, at the first hit), so that a test can look at what others see while it is there
//! and then let it go on with `SIGCONT`. Without the feature the points compile to nothing.

#[cfg(feature = "crash-points")]
use std::sync::atomic::{AtomicU64, Ordering};
#[cfg(feature = "crash-points")]
use std::sync::OnceLock;

/// Environment variable naming the crash point.
pub const CRASH_AT_ENV: &str = "XMEM_CRASH_AT";

/// Environment variable naming a point to stop at (`name`).
pub const PAUSE_AT_ENV: &str = "XMEM_PAUSE_AT";

#[cfg(feature = "crash-points")]
fn pause() -> &'static Option<String> {
    static PAUSE: OnceLock<Option<String>> = OnceLock::new();
    PAUSE.get_or_init(|| std::env::var(PAUSE_AT_ENV).ok())
}

#[cfg(feature = "crash-points")]
fn target() -> &'static Option<(String, u64)> {
    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    TARGET.get_or_init(|| {
        let spec = std::env::var(CRASH_AT_ENV).ok()?;
        match spec.split_once(':') {
            Some((name, n)) => Some((name.to_string(), n.parse().unwrap_or(1).max(1))),
            None => Some((spec, 1)),
        }
    })
}

/// Called at each crash point; exits the process if it is the chosen one.
#[cfg(feature = "crash-points")]
pub fn hit(name: &str) {
    static PAUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if pause().as_deref() == Some(name) && !PAUSED.swap(true, Ordering::Relaxed) {
        crate::os::process::stop_self();
    }
    static HITS: AtomicU64 = AtomicU64::new(0);
    if let Some((target, nth)) = target() {
        if target == name && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *nth {
            crate::os::process::exit_now(137);
        }
    }
}

/// Marks a point where the kill tests may end the process.
#[macro_export]
#[doc(hidden)]
macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(feature = "crash-points")]
        $crate::crash::hit($name);
    };
}
