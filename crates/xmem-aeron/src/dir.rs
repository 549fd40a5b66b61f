//! The Aeron directory: where a media driver keeps its command-and-control file (`cnc.dat`) and
//! the logs of its publications, and how to tell whether the driver that made it still lives.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusteron_client::{Aeron, AeronCnc, AeronCncMetadata, AeronContext};

/// A driver that has not heart-beaten for this long, and whose pid is not a live process, is
/// dead. A live driver updates its heartbeat every few milliseconds; the pid alone is not trusted,
/// as a driver in another pid namespace (a container sharing /dev/shm) has a pid that means
/// nothing here.
const DEAD_AFTER_SILENCE: Duration = Duration::from_millis(1000);

/// Aeron's own rule for a driver with a live-looking pid (reused, or another namespace's) that
/// stopped heart-beating: the default driver timeout.
const DEAD_AFTER_TIMEOUT: Duration = Duration::from_secs(10);

/// The Aeron directory a process uses when none is given: `AERON_DIR` if set, else Aeron's
/// default, `/dev/shm/aeron-<user>`.
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AERON_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    match AeronContext::new() {
        Ok(ctx) => PathBuf::from(ctx.get_dir()),
        Err(_) => PathBuf::from(format!(
            "/dev/shm/aeron-{}",
            std::env::var("USER").unwrap_or_else(|_| "root".into())
        )),
    }
}

/// What runs in an Aeron directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverStatus {
    /// No `cnc.dat`: no driver has run there, or it removed its files when it stopped.
    Absent,
    /// A live driver.
    Active {
        /// Its pid (in its own pid namespace).
        pid: i64,
    },
    /// A `cnc.dat` whose driver is gone (killed, crashed): the directory can be replaced.
    Dead {
        /// The pid it recorded.
        pid: i64,
        /// How long since its last heartbeat.
        silent_for: Duration,
    },
    /// A `cnc.dat` that cannot be read as one: a driver still creating it, another Aeron
    /// version's layout, or damage.
    Unreadable(String),
}

/// Looks at `dir` without changing anything.
pub fn driver_status(dir: &Path) -> DriverStatus {
    if !dir.join("cnc.dat").exists() {
        return DriverStatus::Absent;
    }
    let Some(dir_str) = dir.to_str() else {
        return DriverStatus::Unreadable("the directory's name is not UTF-8".into());
    };
    let pid = match AeronCncMetadata::load_from_file(dir_str) {
        Ok(meta) => meta.pid(),
        Err(e) => return DriverStatus::Unreadable(format!("cnc.dat: {e}")),
    };
    let Ok(c_dir) = CString::new(dir_str) else {
        return DriverStatus::Unreadable("the directory's name holds a NUL byte".into());
    };
    let heartbeat_ms = match AeronCnc::open(&c_dir).and_then(|cnc| cnc.get_to_driver_heartbeat_ms()) {
        Ok(ms) => ms,
        Err(e) => return DriverStatus::Unreadable(format!("cnc.dat: {e}")),
    };
    let silent_for = Duration::from_millis(Aeron::epoch_clock().saturating_sub(heartbeat_ms).max(0) as u64);
    let dead = (silent_for > DEAD_AFTER_SILENCE && !process_exists(pid)) || silent_for > DEAD_AFTER_TIMEOUT;
    if dead {
        DriverStatus::Dead { pid, silent_for }
    } else {
        DriverStatus::Active { pid }
    }
}

/// Whether `pid` names a process here (`kill(pid, 0)`; EPERM means it exists).
fn process_exists(pid: i64) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}
