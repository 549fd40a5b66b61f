//! A tight loop over one hot path, for profilers: `hot_loop acquire|get|clone [iterations]`.

use std::hint::black_box;

fn main() {
    let mut args = std::env::args().skip(1);
    let what = args.next().unwrap_or_else(|| "acquire".into());
    let n: u64 = args.next().map(|a| a.parse().unwrap()).unwrap_or(50_000_000);
    let name = format!("hot-loop-{}", std::process::id());
    let pool = xmem_core::BufferPool::builder(&name)
        .buffers(8)
        .buffer_size(4096)
        .create()
        .unwrap();
    let held = pool.try_acquire().unwrap().freeze();
    let token = held.token();
    let start = std::time::Instant::now();
    for _ in 0..n {
        match what.as_str() {
            "acquire" => drop(black_box(pool.try_acquire().unwrap())),
            "get" => drop(black_box(pool.get(black_box(token)).unwrap())),
            _ => drop(black_box(held.clone())),
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    println!("{what}: {ns:.1} ns per iteration");
}
