//! Criterion benchmarks of the buffer pool.
//!
//! * `floor/*`: N uncontended locked instructions, the cost the hot paths cannot go below.
//! * `pool/*`: the uncontended hot paths (no system call; see `tests/pool_syscalls.rs`).
//! * `wake/*`: cross-process wake-up of a blocked acquire, beside a raw futex wake measured in
//!   the same run (the floor it cannot beat).
//!
//! Run: `cargo bench -p xmem-bench --bench pool`.

use std::hint::black_box;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{criterion_group, criterion_main, Criterion};
use xmem_bench::wake::{PoolWake, RawFutexWake};
use xmem_bench::{parse_token, Peer, PeerProgram};
use xmem_core::BufferPool;

fn program() -> PeerProgram {
    PeerProgram {
        program: env!("CARGO_BIN_EXE_xmem-bench-peer").into(),
        prefix: vec![],
    }
}

fn hot_paths(c: &mut Criterion) {
    let name = format!("bench-pool-{}", std::process::id());
    let _ = BufferPool::remove(&name);
    let pool = BufferPool::builder(&name)
        .buffers(8)
        .buffer_size(4096)
        .create()
        .unwrap();
    let mut g = c.benchmark_group("pool");
    g.measurement_time(Duration::from_secs(5)).sample_size(200);
    g.bench_function("acquire+drop", |b| {
        b.iter(|| drop(black_box(pool.try_acquire().unwrap())))
    });
    g.bench_function("acquire+freeze+drop", |b| {
        b.iter(|| drop(black_box(pool.try_acquire().unwrap().freeze())))
    });
    let mine = pool.try_acquire().unwrap().freeze();
    let token = mine.token();
    g.bench_function("get+drop/held-here", |b| {
        b.iter(|| drop(black_box(pool.get(black_box(token)).unwrap())))
    });
    g.bench_function("clone+drop", |b| b.iter(|| drop(black_box(mine.clone()))));
    // A buffer only another process holds: every get is this process's first reference.
    let mut holder = Peer::start(&program(), "hold", &[&name]).unwrap();
    let theirs = parse_token(&holder.line());
    g.bench_function("get+drop/held-elsewhere", |b| {
        b.iter(|| drop(black_box(pool.get(black_box(theirs)).unwrap())))
    });
    g.finish();
    drop(holder);
}

/// The floor under the hot paths, measured in the same run: uncontended locked read-modify-write
/// instructions on separate cache lines. acquire+drop needs 3, get+drop 2 (another reference of
/// this process) or 4 (this process's first), and no shared-memory pool can do with fewer than
/// one per change of shared state.
fn floors(c: &mut Criterion) {
    #[repr(align(64))]
    struct Line(AtomicU64);
    let lines: Vec<Line> = (0..4).map(|_| Line(AtomicU64::new(0))).collect();
    let mut g = c.benchmark_group("floor");
    g.measurement_time(Duration::from_secs(5)).sample_size(200);
    for n in [2usize, 3, 4] {
        g.bench_function(format!("{n}-locked-rmw"), |b| {
            b.iter(|| {
                for l in &lines[..n] {
                    l.0.fetch_add(black_box(1), Ordering::AcqRel);
                }
            })
        });
    }
    g.finish();
}

fn wake(c: &mut Criterion) {
    let mut g = c.benchmark_group("wake");
    g.sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(300));
    let mut raw = RawFutexWake::start(&program()).unwrap();
    let mut pool = PoolWake::start(&program()).unwrap();
    // Paired: every recorded sample of one kind follows one (discarded) sample of the other, so
    // both are measured under the same conditions on a shared, noisy machine.
    g.bench_function("raw-futex", |b| {
        b.iter_custom(|iters| {
            Duration::from_nanos(
                (0..iters)
                    .map(|_| {
                        pool.sample();
                        raw.sample()
                    })
                    .sum(),
            )
        })
    });
    g.bench_function("pool-acquire", |b| {
        b.iter_custom(|iters| {
            Duration::from_nanos(
                (0..iters)
                    .map(|_| {
                        raw.sample();
                        pool.sample()
                    })
                    .sum(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, floors, hot_paths, wake);
criterion_main!(benches);
