//! Streams against iceoryx2 and Unix sockets, two processes pinned to different cores, all in
//! one run. Run: `cargo bench -p xmem-bench --features peers --bench streams` (without
//! `--features peers`, iceoryx2 is left out). `XMEM_BENCH_ONLY=latency|throughput` runs half.

use std::time::Duration;

use xmem_bench::segment::Clock;
use xmem_bench::streams::{report, Plan};
use xmem_bench::PeerProgram;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("streams: bench");
        return;
    }
    let program = PeerProgram {
        program: env!("CARGO_BIN_EXE_xmem-bench-peer").into(),
        prefix: vec![],
    };
    let plan = Plan::from_env();
    let clock = Clock::calibrate(Duration::from_millis(200));
    report(&program, &plan, &clock);
}
