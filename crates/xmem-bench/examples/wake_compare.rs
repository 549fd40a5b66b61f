//! Interleaved wake-up comparison: raw futex vs pool acquire, alternating samples.

use xmem_bench::wake::{PoolWake, RawFutexWake};
use xmem_bench::PeerProgram;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().unwrap())
        .unwrap_or(2000);
    let exe = std::env::current_exe().unwrap();
    let peer = exe.parent().unwrap().parent().unwrap().join("xmem-bench-peer");
    let program = PeerProgram {
        program: peer,
        prefix: vec![],
    };
    let mut raw = RawFutexWake::start(&program).unwrap();
    let mut pool = PoolWake::start(&program).unwrap();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..n {
        a.push(raw.sample());
        b.push(pool.sample());
    }
    a.sort();
    b.sort();
    let p = |v: &Vec<u64>, q: f64| v[((v.len() - 1) as f64 * q) as usize];
    println!(
        "raw futex: p10 {} p50 {} p90 {}",
        p(&a, 0.1),
        p(&a, 0.5),
        p(&a, 0.9)
    );
    println!(
        "pool     : p10 {} p50 {} p90 {}",
        p(&b, 0.1),
        p(&b, 0.5),
        p(&b, 0.9)
    );
    println!("ratio p50 {:.3}", p(&b, 0.5) as f64 / p(&a, 0.5) as f64);
}
