//! The Aeron UDP bridge between two media drivers over 127.0.0.1: 1080p throughput and small-
//! frame latency beside raw Aeron UDP of the same run.
//! Run: `cargo bench -p xmem-bench --bench tp_bridge` (`XMEM_BENCH_SCALE=0.2` for a quick look).

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("tp_bridge: bench");
        return;
    }
    let scale = std::env::var("XMEM_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    xmem_bench::tp_bridge::report(scale);
}
