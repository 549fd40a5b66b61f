#![no_main]
//! Any bytes as a segment's file: listed, inspected, opened and read.

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use xmem_core::segment::SegmentReader;
use xmem_core_fuzz::{clear, dir, look, place};

fuzz_target!(|data: &[u8]| {
    let path = place(data);
    look();
    let _ = xmem_core::segment::inspect_path(&path, "case");
    if let Ok(mut r) = SegmentReader::builder("case")
        .directory(dir())
        .open_timeout(Duration::ZERO)
        .max_retries(16)
        .open()
    {
        let mut buf = vec![0u8; r.size().min(1 << 20)];
        let _ = r.read_into(&mut buf);
    }
    clear();
});
