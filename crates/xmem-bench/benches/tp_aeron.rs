//! The SHM Tensor Pool over Aeron beside raw Aeron IPC, in one run: latency, message rate, and
//! 1080p producer throughput as a fraction of the memset bound.
//! Run: `cargo bench -p xmem-bench --bench tp_aeron` (`XMEM_BENCH_SCALE=0.2` for a quick look).

use std::time::Duration;

use xmem_bench::segment::Clock;
use xmem_bench::PeerProgram;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("tp_aeron: bench");
        return;
    }
    let program = PeerProgram {
        program: env!("CARGO_BIN_EXE_xmem-bench-peer").into(),
        prefix: vec![],
    };
    let scale = std::env::var("XMEM_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let clock = Clock::calibrate(Duration::from_millis(200));
    xmem_bench::tp_aeron::report(&program, &clock, scale);
}
