//! Arbitrary bytes, cut into messages, through chunk decoding and one stream's assembly: nothing
//! panics, and the memory held never passes the cap.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use xmem_tp_bridge::assembly::Assembly;
use xmem_tp_bridge::chunk::Chunk;

const CAP: u32 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let mut a = Assembly::new(CAP, Duration::from_millis(250), data.first().is_some_and(|b| b & 1 == 1));
    let now = Instant::now();
    let mut rest = data;
    while rest.len() >= 2 {
        let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        let tail = &rest[2..];
        let n = len.min(tail.len());
        if let Ok(c) = Chunk::decode(&tail[..n]) {
            let _ = a.push(&c, now);
            assert!(a.held() <= CAP as usize);
        }
        rest = &tail[n..];
    }
    let _ = a.expire(now + Duration::from_secs(1));
    assert_eq!(a.held(), 0);
});
