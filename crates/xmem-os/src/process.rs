//! Process identity and liveness.
//!
//! A pid alone does not name a process: pids are reused. xmem names a process by its pid *and*
//! its start time (field 22 of `/proc/PID/stat`, clock ticks since boot), which no two processes
//! with the same pid share. A process is dead when its `/proc` entry is gone, when the entry
//! belongs to a process with another start time (the pid was reused), or when it is a zombie
//! (killed but not yet reaped: its `/proc` entry and start time remain, its state is `Z`).

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};

/// A process, named by pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProcessIdentity {
    /// Process id (thread-group id) in the caller's pid namespace.
    pub pid: u32,
    /// Start time in clock ticks since boot.
    pub start_ticks: u64,
}

/// What is known about whether a process lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// It runs (or is stopped, which is not dead).
    Alive,
    /// It exited, was killed, or its pid now belongs to another process.
    Dead,
    /// `/proc` would not tell (e.g. mounted with `hidepid`); treated as alive.
    Unknown,
}

/// The fields of `/proc/PID/stat` that xmem uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    /// The command name (without the parentheses).
    pub comm: String,
    /// The state letter (`R`, `S`, `D`, `T`, `Z`, `X`, ...).
    pub state: char,
    /// Start time in clock ticks since boot.
    pub start_ticks: u64,
}

/// Parses the text of `/proc/PID/stat`.
///
/// The command name may itself contain spaces and parentheses, so the fields after it are found
/// after the *last* `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    if close < open {
        return None;
    }
    let comm = text[open + 1..close].to_string();
    let mut rest = text[close + 1..].split_ascii_whitespace();
    // Field 3 is the state; field 22 is the start time, 19 fields after the state.
    let state = rest.next()?.chars().next()?;
    let start_ticks = rest.nth(18)?.parse().ok()?;
    Some(ProcStat {
        comm,
        state,
        start_ticks,
    })
}

/// Reads `/proc/PID/stat`.
pub fn read_stat(pid: u32) -> io::Result<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unparsable /proc stat"))
}

/// The identity of the calling process, cached per pid (a forked child gets its own).
pub fn current() -> ProcessIdentity {
    static CACHE: AtomicU64 = AtomicU64::new(0);
    static START: AtomicU64 = AtomicU64::new(0);
    let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
    if CACHE.load(Ordering::Acquire) == u64::from(pid) {
        return ProcessIdentity {
            pid,
            start_ticks: START.load(Ordering::Relaxed),
        };
    }
    // Our own /proc entry is always readable; if /proc is missing we fall back to 0, which
    // still distinguishes nothing but keeps pid-only identity working.
    let start_ticks = read_stat(pid).map(|s| s.start_ticks).unwrap_or(0);
    START.store(start_ticks, Ordering::Relaxed);
    CACHE.store(u64::from(pid), Ordering::Release);
    ProcessIdentity { pid, start_ticks }
}

impl ProcessIdentity {
    /// The identity of the calling process.
    pub fn current() -> Self {
        current()
    }

    /// Whether this process is alive, dead, or unknown.
    pub fn liveness(&self) -> Liveness {
        let start = self.start_ticks;
        liveness_of(self.pid, |ticks| start == 0 || ticks == start)
    }

    /// The command name of the process, if it is alive and visible.
    pub fn command(&self) -> Option<String> {
        read_stat(self.pid)
            .ok()
            .filter(|s| s.start_ticks == self.start_ticks || self.start_ticks == 0)
            .map(|s| s.comm)
    }
}

/// Waits until the process with this pid exits (becomes a zombie or is reaped), for at most
/// `timeout`; returns whether it did. Uses a pidfd, which becomes readable at exit.
pub fn wait_exit(pid: u32, timeout: std::time::Duration) -> io::Result<bool> {
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else {
        return Ok(true);
    };
    let fd = match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::SRCH) => return Ok(true),
        Err(e) => return Err(e.into()),
    };
    pidfd_poll(&fd, timeout).map_err(Into::into)
}

/// Waits at most `timeout` (zero: not at all) for the process of `pidfd` to exit; returns
/// whether it has. A pidfd becomes readable when its process exits.
fn pidfd_poll(pidfd: &OwnedFd, timeout: std::time::Duration) -> rustix::io::Result<bool> {
    use rustix::event::{poll, PollFd, PollFlags};
    let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
    let ts = rustix::time::Timespec {
        tv_sec: timeout.as_secs() as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    loop {
        match poll(&mut fds, Some(&ts)) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Whether the process of `pidfd` has exited, without waiting.
pub fn pidfd_exited(pidfd: &OwnedFd) -> bool {
    pidfd_poll(pidfd, std::time::Duration::ZERO).unwrap_or(false)
}

/// Whether process `pid` lives, given a test of its start time (pid reuse makes a different
/// start time mean a different, so dead, process). Zombies count as dead: they were killed and
/// only wait to be reaped.
pub fn liveness_of(pid: u32, same_start: impl FnOnce(u64) -> bool) -> Liveness {
    if pid == 0 {
        return Liveness::Dead;
    }
    match read_stat(pid) {
        Ok(stat) if !same_start(stat.start_ticks) => Liveness::Dead,
        Ok(stat) if matches!(stat.state, 'Z' | 'X' | 'x') => Liveness::Dead,
        Ok(_) => Liveness::Alive,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Liveness::Dead,
        // ESRCH can surface while the entry disappears under us.
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error()) => Liveness::Dead,
        Err(_) => Liveness::Unknown,
    }
}

/// Whether a process with this pid exists (a zombie does), asked without a file descriptor:
/// the fallback where `/proc` cannot be opened.
pub fn exists(pid: u32) -> bool {
    match rustix::process::Pid::from_raw(pid as i32) {
        Some(p) => {
            rustix::process::test_kill_process(p).map_or_else(|e| e != rustix::io::Errno::SRCH, |()| true)
        }
        None => false,
    }
}

/// The inode of the caller's pid namespace (0 if `/proc` does not say).
///
/// Pids are only meaningful inside one pid namespace, so shared objects record the creator's.
pub fn pid_namespace() -> u64 {
    fs::metadata("/proc/self/ns/pid").map(|m| m.ino()).unwrap_or(0)
}

/// The caller's effective user id.
pub fn uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// A pidfd for `pid`: `Ok(None)` if no such process exists, `Err` if none could be had for one
/// that may (out of descriptors). The caller checks the identity after: a pidfd pins the process
/// it names, so a check after it cannot be fooled by a reused pid.
pub fn pidfd_open(pid: u32) -> io::Result<Option<OwnedFd>> {
    let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) else {
        return Ok(None);
    };
    match rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(rustix::io::Errno::SRCH) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Stops this process (SIGSTOP) until a SIGCONT: the kill tests' pause points.
pub fn stop_self() {
    // SAFETY: raise is async-signal-safe and takes no pointers.
    unsafe { libc::raise(libc::SIGSTOP) };
}

/// Ends this process at once with `code`, running nothing (as a kill would).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(code) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_names() {
        let line = "1234 (we ird) (x)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 50";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.comm, "we ird) (x)");
        assert_eq!(s.state, 'S');
        assert_eq!(s.start_ticks, 987654);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("12 (x) S 1 2"), None);
        assert_eq!(parse_stat(") ("), None);
    }

    #[test]
    fn current_process_is_alive_and_a_reused_pid_is_not() {
        let me = current();
        assert!(me.start_ticks > 0);
        assert_eq!(me.liveness(), Liveness::Alive);
        let impostor = ProcessIdentity {
            pid: me.pid,
            start_ticks: me.start_ticks + 1,
        };
        assert_eq!(impostor.liveness(), Liveness::Dead);
        let gone = ProcessIdentity {
            pid: 0,
            start_ticks: 1,
        };
        assert_eq!(gone.liveness(), Liveness::Dead);
    }

    #[test]
    fn a_reaped_child_is_dead_and_a_zombie_is_dead() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let id = ProcessIdentity {
            pid: child.id(),
            start_ticks: read_stat(child.id()).unwrap().start_ticks,
        };
        assert_eq!(id.liveness(), Liveness::Alive);
        child.kill().unwrap();
        // Not yet reaped: once the pidfd says it exited, it is a zombie, and must count as dead.
        assert!(wait_exit(id.pid, std::time::Duration::from_secs(10)).unwrap());
        assert_eq!(read_stat(id.pid).unwrap().state, 'Z');
        assert_eq!(id.liveness(), Liveness::Dead);
        child.wait().unwrap();
        assert_eq!(id.liveness(), Liveness::Dead);
    }
}
