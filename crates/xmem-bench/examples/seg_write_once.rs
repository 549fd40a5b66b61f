//! One segment write-latency series: `seg_write_once SIZE READERS MODE_US [N]` (MODE_US 0:
//! nonstop copies, else poll every MODE_US µs). For looking at one condition at a time.

use std::time::Duration;
use xmem_bench::segment::{write_latency, Clock, ReadMode};
use xmem_bench::PeerProgram;

fn main() {
    let a: Vec<u64> = std::env::args().skip(1).map(|x| x.parse().unwrap()).collect();
    let exe = std::env::current_exe().unwrap();
    let peer = exe.parent().unwrap().parent().unwrap().join("xmem-bench-peer");
    let program = PeerProgram {
        program: peer,
        prefix: vec![],
    };
    let clock = Clock::calibrate(Duration::from_millis(200));
    let mode = if a[2] == 0 {
        ReadMode::Nonstop
    } else {
        ReadMode::Poll { us: a[2] }
    };
    let p = write_latency(
        &program,
        a[0] as usize,
        *a.get(3).unwrap_or(&200_000) as usize,
        a[1] as usize,
        mode,
        &clock,
    );
    println!("P50 {} P95 {} P99 {} P99.9 {}", p.p50, p.p95, p.p99, p.p999);
}
