#![no_main]
//! Any bytes as a stream's file (its queue, its subscriber records): listed, inspected, joined
//! and received from. No publisher holds the copy's lock, so a join must end at once.

use libfuzzer_sys::fuzz_target;
use xmem_core::stream::Subscriber;
use xmem_core_fuzz::{clear, dir, look, place};

fuzz_target!(|data: &[u8]| {
    let path = place(data);
    look();
    let _ = xmem_core::stream::inspect_path(&path, "case");
    if let Ok(mut s) = Subscriber::builder("case").directory(dir()).open() {
        let _ = s.try_receive();
    }
    clear();
});
