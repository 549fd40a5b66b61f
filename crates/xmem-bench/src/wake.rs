//! Cross-process wake-up latency: a thread parked in a blocking `acquire` in one process, woken by
//! a release in another, beside the raw floor: a bare futex wait woken by a bare futex wake.
//!
//! Both measure the same window, from just before the waking call in the parent to just after
//! the wait returns in the peer (`CLOCK_MONOTONIC` is the same clock in every process), and both
//! start each sample the same way: the peer is parked, then left 50 µs to fall asleep.

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicU32, Ordering::SeqCst};
use std::time::Duration;

use xmem_core::os::map::MapOptions;
use xmem_core::os::shm::{self, Created};
use xmem_core::os::time::monotonic_ns;
use xmem_core::os::{futex, Mapping, ShmDir, ShmFile};
use xmem_core::{BufferMut, BufferPool};

use crate::{Peer, PeerProgram};

const SETTLE: Duration = Duration::from_micros(50);

fn settle_then_now() -> u64 {
    std::thread::sleep(SETTLE);
    monotonic_ns()
}

/// The floor: a futex word in shared memory, one process waiting, the other waking.
pub struct RawFutexWake {
    peer: Peer,
    map: Mapping,
    path: std::path::PathBuf,
}

fn words(map: &Mapping) -> &[AtomicU32] {
    map.slice_at::<AtomicU32>(0, 2).expect("two words")
}

impl RawFutexWake {
    /// Creates the shared word and starts the waiting peer.
    pub fn start(program: &PeerProgram) -> std::io::Result<Self> {
        let path = ShmDir::default().join(&format!("xmem-bench-futex-{}", std::process::id()));
        let _ = shm::unlink(&path);
        let Ok(Created::New(file)) = ShmFile::create_exclusive(&path, 0o600) else {
            return Err(std::io::Error::other("cannot create the futex region"));
        };
        file.allocate(4096).map_err(std::io::Error::other)?;
        let map = Mapping::map(
            &file,
            4096,
            MapOptions {
                writable: true,
                populate: true,
            },
            &path,
        )
        .map_err(std::io::Error::other)?;
        let peer = Peer::start(program, "futex", &[path.to_str().unwrap()])?;
        Ok(RawFutexWake { peer, map, path })
    }

    /// One wake-up, in nanoseconds.
    pub fn sample(&mut self) -> u64 {
        let [word, parked] = words(&self.map) else {
            unreachable!()
        };
        self.peer.send("go");
        while parked.load(SeqCst) == 0 {
            std::hint::spin_loop();
        }
        let t0 = settle_then_now();
        word.store(1, SeqCst);
        futex::wake(word, 1);
        let t1: u64 = self.peer.line().parse().expect("t1");
        t1.saturating_sub(t0)
    }
}

impl Drop for RawFutexWake {
    fn drop(&mut self) {
        let _ = shm::unlink(&self.path);
    }
}

/// The peer side of [`RawFutexWake`].
pub(crate) fn raw_futex_waiter(path: &str) -> i32 {
    let file = ShmFile::open(std::path::Path::new(path)).unwrap().unwrap();
    let map = Mapping::map(
        &file,
        4096,
        MapOptions {
            writable: true,
            populate: true,
        },
        path,
    )
    .unwrap();
    let [word, parked] = words(&map) else {
        unreachable!()
    };
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    for line in stdin.lock().lines() {
        if line.map(|l| l != "go").unwrap_or(true) {
            break;
        }
        parked.store(1, SeqCst);
        while word.load(SeqCst) == 0 {
            futex::wait(word, 0, Duration::from_secs(1));
        }
        let t1 = monotonic_ns();
        word.store(0, SeqCst);
        parked.store(0, SeqCst);
        writeln!(out, "{t1}").unwrap();
        out.flush().unwrap();
    }
    0
}

/// xmem: the peer blocks in `acquire` on an exhausted one-buffer pool; this process releases.
pub struct PoolWake {
    // Field order is drop order: the peer goes first, so that this process is the last one
    // attached and its pool handle removes the pool.
    peer: Peer,
    held: Option<BufferMut>,
    pool: BufferPool,
}

impl PoolWake {
    /// Creates the pool and starts the waiting peer.
    pub fn start(program: &PeerProgram) -> xmem_core::Result<Self> {
        let name = format!("bench-wake-{}", std::process::id());
        let _ = BufferPool::remove(&name);
        let pool = BufferPool::builder(&name).buffers(1).buffer_size(64).create()?;
        let mut peer = Peer::start(program, "pool", &[&name])
            .map_err(|e| xmem_core::Error::InvalidConfig(e.to_string()))?;
        assert_eq!(peer.line(), "ready");
        Ok(PoolWake {
            peer,
            held: None,
            pool,
        })
    }

    /// One wake-up, in nanoseconds.
    pub fn sample(&mut self) -> u64 {
        // Take the only buffer (the peer released it after the last sample).
        let held = self.held.insert(self.pool.acquire().expect("acquire"));
        let _ = held;
        self.peer.send("go");
        while self.pool.waiting_processes() == 0 {
            std::hint::spin_loop();
        }
        let t0 = settle_then_now();
        drop(self.held.take());
        let t1: u64 = self.peer.line().parse().expect("t1");
        t1.saturating_sub(t0)
    }
}

/// The peer side of [`PoolWake`].
pub(crate) fn pool_waiter(name: &str) -> i32 {
    let pool = BufferPool::open(name).expect("open");
    let mut out = std::io::stdout();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        if line.map(|l| l != "go").unwrap_or(true) {
            break;
        }
        let b = pool.acquire().expect("acquire");
        let t1 = monotonic_ns();
        drop(b);
        writeln!(out, "{t1}").unwrap();
        out.flush().unwrap();
    }
    0
}
