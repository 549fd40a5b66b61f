//! Segment latency, writer and readers in separate processes: per-operation times in HDR
//! histograms, read with the time-stamp counter (calibrated against `CLOCK_MONOTONIC`; the cost
//! of an empty measurement, taken in the same run, is subtracted).

use std::io::Write;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use xmem_core::segment::{SegmentReader, SegmentWriter};

use crate::{Peer, PeerProgram};

/// Ticks of a cycle counter, or nanoseconds where there is none.
#[inline(always)]
pub fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: rdtsc has no preconditions.
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
    #[cfg(not(target_arch = "x86_64"))]
    xmem_core::os::time::monotonic_ns()
}

/// Converts ticks to nanoseconds, minus the cost of an empty measurement.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    ns_per_tick: f64,
    empty_ticks: u64,
}

impl Clock {
    /// Calibrates over `over`.
    pub fn calibrate(over: Duration) -> Clock {
        let (t0, c0) = (Instant::now(), ticks());
        while t0.elapsed() < over {
            std::hint::spin_loop();
        }
        let ns_per_tick = t0.elapsed().as_nanos() as f64 / (ticks() - c0) as f64;
        let mut empty: Vec<u64> = (0..10_000)
            .map(|_| {
                let a = ticks();
                let b = ticks();
                b - a
            })
            .collect();
        empty.sort_unstable();
        Clock {
            ns_per_tick,
            empty_ticks: empty[empty.len() / 2],
        }
    }

    /// Nanoseconds of an interval of `t` ticks.
    pub fn ns(&self, t: u64) -> u64 {
        (t.saturating_sub(self.empty_ticks) as f64 * self.ns_per_tick) as u64
    }
}

/// Percentiles of one series, in ns.
#[derive(Debug, Clone, Copy)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 95th.
    pub p95: u64,
    /// 99th.
    pub p99: u64,
    /// 99.9th.
    pub p999: u64,
}

impl Percentiles {
    pub(crate) fn of(h: &Histogram<u64>) -> Self {
        Percentiles {
            p50: h.value_at_quantile(0.5),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
        }
    }
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds")
}

/// The floor under a write: `n` plain copies of `size` bytes between two private buffers, timed
/// the same way (no atomics, no other process: what any shared-memory write must at least pay).
pub fn memcpy_latency(size: usize, n: usize, clock: &Clock) -> Percentiles {
    let src = vec![0x5au8; size];
    let mut dst = vec![0u8; size];
    let mut h = histogram();
    for i in 0..n + n / 10 {
        let t0 = ticks();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        let t = ticks() - t0;
        if i >= n / 10 {
            h.record(clock.ns(t).max(1)).unwrap();
        }
    }
    Percentiles::of(&h)
}

/// How a benchmark's reader threads read.
#[derive(Debug, Clone, Copy)]
pub enum ReadMode {
    /// Copy the value again and again.
    Nonstop,
    /// Check `has_changed` every `us` µs and copy only a new value (how state is usually read).
    Poll {
        /// Microseconds between checks.
        us: u64,
    },
}

impl ReadMode {
    fn arg(self) -> String {
        match self {
            ReadMode::Nonstop => "0".into(),
            ReadMode::Poll { us } => us.to_string(),
        }
    }
}

/// Times `n` writes of `size` bytes while `readers` reader threads in another process read.
pub fn write_latency(
    program: &PeerProgram,
    size: usize,
    n: usize,
    readers: usize,
    mode: ReadMode,
    clock: &Clock,
) -> Percentiles {
    let processes = usize::from(readers > 0);
    write_latency_with_reader_processes(program, size, n, processes, readers, mode, clock)
}

/// Times `n` writes of `size` bytes while `processes` processes of `threads` reader threads read.
pub fn write_latency_with_reader_processes(
    program: &PeerProgram,
    size: usize,
    n: usize,
    processes: usize,
    threads: usize,
    mode: ReadMode,
    clock: &Clock,
) -> Percentiles {
    let name = format!("bench-seg-w-{}-{size}", std::process::id());
    let seg_size = size.max(4096).div_ceil(4096) as u64 * 4096;
    let mut w = SegmentWriter::create(&name, seg_size).expect("create segment");
    let value = vec![0x5au8; size];
    w.write(&value).unwrap();
    let mut peers: Vec<Peer> = (0..processes)
        .map(|_| {
            Peer::start(program, "segreader", &[&name, &threads.to_string(), &mode.arg()])
                .expect("reader peer")
        })
        .collect();
    for p in &mut peers {
        assert_eq!(p.line(), "ready");
    }
    let mut h = histogram();
    for i in 0..n + n / 10 {
        let t0 = ticks();
        w.write(&value).unwrap();
        let t = ticks() - t0;
        if i >= n / 10 {
            h.record(clock.ns(t).max(1)).unwrap();
        }
    }
    drop(peers);
    Percentiles::of(&h)
}

/// Times `n` reads of `size` bytes while a writer in another process writes every `period`.
pub fn read_latency(
    program: &PeerProgram,
    size: usize,
    n: usize,
    period: Duration,
    clock: &Clock,
) -> Percentiles {
    let name = format!("bench-seg-r-{}-{size}", std::process::id());
    let seg_size = size.max(4096).div_ceil(4096) as u64 * 4096;
    let _cleanup = RemoveOnDrop(name.clone());
    let mut peer = Peer::start(
        program,
        "segwriter",
        &[
            &name,
            &seg_size.to_string(),
            &size.to_string(),
            &period.as_nanos().to_string(),
        ],
    )
    .expect("writer peer");
    assert_eq!(peer.line(), "ready");
    let mut r = SegmentReader::open(&name).expect("open segment");
    let mut buf = vec![0u8; size];
    let mut h = histogram();
    for i in 0..n + n / 10 {
        let t0 = ticks();
        r.read_into(&mut buf).unwrap();
        let t = ticks() - t0;
        if i >= n / 10 {
            h.record(clock.ns(t).max(1)).unwrap();
        }
    }
    drop(peer);
    Percentiles::of(&h)
}

/// Removes segment `0` when dropped (the writer peer is killed, so nothing else will).
struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Ok(path) = xmem_core::object::path_of(&xmem_core::os::ShmDir::default(), &self.0) {
            let _ = xmem_core::segment::clean_path(&path, false);
        }
    }
}

/// Peer role: `threads` threads read segment `name` until stdin closes; `poll_us` > 0 reads
/// only changed values, checking every `poll_us` µs.
pub(crate) fn reader_role(name: &str, threads: usize, poll_us: u64) -> i32 {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (name, stop) = (name.to_string(), stop.clone());
            std::thread::Builder::new()
                .stack_size(128 << 10)
                .spawn(move || {
                    let mut r = SegmentReader::open(&name).expect("open");
                    let mut buf = vec![0u8; r.size()];
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        if poll_us == 0 || r.has_changed() {
                            let _ = r.read_into(&mut buf);
                        }
                        if poll_us > 0 {
                            std::thread::sleep(Duration::from_micros(poll_us));
                        }
                    }
                })
                .unwrap()
        })
        .collect();
    println!("ready");
    std::io::stdout().flush().unwrap();
    crate::wait_for_stdin_to_close();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    0
}

/// Peer role: writes `len` bytes to a new segment `name` of `size` bytes every `period_ns`
/// until stdin closes.
pub(crate) fn writer_role(name: &str, size: u64, len: usize, period_ns: u64) -> i32 {
    let mut w = SegmentWriter::create(name, size).expect("create");
    let value = vec![0xa5u8; len];
    w.write(&value).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    std::thread::spawn(move || {
        crate::wait_for_stdin_to_close();
        s2.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    println!("ready");
    std::io::stdout().flush().unwrap();
    let period = Duration::from_nanos(period_ns);
    let mut next = Instant::now();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        w.write(&value).unwrap();
        next += period;
        while Instant::now() < next {
            std::hint::spin_loop();
        }
    }
    0
}
