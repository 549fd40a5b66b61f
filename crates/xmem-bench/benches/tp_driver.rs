//! The tensor-pool driver: attach response times under churn by 100 clients, attach → first
//! frame, and the driver's CPU per request, beside a raw Aeron round trip of the same run.
//! Run: `cargo bench -p xmem-bench --bench tp_driver` (`XMEM_BENCH_SCALE=0.2` for a quick look).

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("tp_driver: bench");
        return;
    }
    let scale = std::env::var("XMEM_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    xmem_bench::tp_driver::report(scale);
}
