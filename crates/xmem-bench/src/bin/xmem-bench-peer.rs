//! Peer process for xmem's cross-process benchmarks (see `xmem_bench::peer_main`).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(xmem_bench::peer_main(&args));
}
