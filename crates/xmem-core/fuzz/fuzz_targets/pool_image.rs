#![no_main]
//! Any bytes as a pool's file: listed, inspected, opened, a buffer taken, dead holders reclaimed.

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use xmem_core::BufferPool;
use xmem_core_fuzz::{clear, dir, look, place};

fuzz_target!(|data: &[u8]| {
    let path = place(data);
    look();
    let _ = xmem_core::pool::inspect_path(&path, "case");
    if let Ok(pool) = BufferPool::builder("case")
        .directory(dir())
        .open_timeout(Duration::ZERO)
        .open()
    {
        if let Ok(mut b) = pool.try_acquire() {
            b.bytes_mut().fill(1);
            let frozen = b.freeze();
            let _ = pool.get(frozen.token());
        }
        let _ = pool.reclaim();
    }
    clear();
});
