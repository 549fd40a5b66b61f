//! Segment latency, writer and readers in separate processes: P50/P95/P99/P99.9 of writes and
//! reads of 64 B, 1 KiB, 4 KiB and 64 KiB, and the writer's tail with 1000 readers.
//!
//! Run: `cargo bench -p xmem-bench --bench segment` (about a minute). `XMEM_BENCH_N` sets the
//! operations per series (default 200,000).

use std::time::Duration;

use xmem_bench::segment::{memcpy_latency, read_latency, write_latency, Clock, Percentiles, ReadMode};
use xmem_bench::PeerProgram;

fn row(what: &str, size: &str, p: Percentiles) {
    println!(
        "| {what} | {size} | {} | {} | {} | {} |",
        p.p50, p.p95, p.p99, p.p999
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("segment: bench");
        return;
    }
    let program = PeerProgram {
        program: env!("CARGO_BIN_EXE_xmem-bench-peer").into(),
        prefix: vec![],
    };
    let n: usize = std::env::var("XMEM_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let clock = Clock::calibrate(Duration::from_millis(200));
    println!("segment latency, ns (writer and readers in separate processes; {n} operations a series)\n");
    println!("| operation | size | P50 | P95 | P99 | P99.9 |");
    println!("|---|---|---|---|---|---|");
    for (size, label) in [(64, "64 B"), (1024, "1 KiB"), (4096, "4 KiB"), (65536, "64 KiB")] {
        let (n, period) = if size > 4096 {
            (n / 10, Duration::from_micros(200))
        } else {
            (n, Duration::from_micros(10))
        };
        row(
            "floor: memcpy between private buffers",
            label,
            memcpy_latency(size, n, &clock),
        );
        row(
            "write, no reader",
            label,
            write_latency(&program, size, n, 0, ReadMode::Nonstop, &clock),
        );
        let poll = ReadMode::Poll { us: 50 };
        row(
            "write, a reader process checking every 50 µs",
            label,
            write_latency(&program, size, n, 1, poll, &clock),
        );
        row(
            "write, a reader process copying nonstop",
            label,
            write_latency(&program, size, n, 1, ReadMode::Nonstop, &clock),
        );
        row(
            &format!("read, the writer process writing every {} µs", period.as_micros()),
            label,
            read_latency(&program, size, n, period, &clock),
        );
    }
    println!("\nwriter tail, 1 KiB writes, readers copying nonstop:\n");
    println!("| readers | P50 | P95 | P99 | P99.9 |");
    println!("|---|---|---|---|---|");
    for readers in [0, 1000] {
        // 1000 reader threads in four processes of 250.
        let p = if readers == 0 {
            write_latency(&program, 1024, n, 0, ReadMode::Nonstop, &clock)
        } else {
            xmem_bench::segment::write_latency_with_reader_processes(
                &program,
                1024,
                n,
                4,
                readers / 4,
                ReadMode::Nonstop,
                &clock,
            )
        };
        println!("| {readers} | {} | {} | {} | {} |", p.p50, p.p95, p.p99, p.p999);
    }
}
