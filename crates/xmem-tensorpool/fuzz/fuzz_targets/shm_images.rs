//! The shared-memory validators on any bytes: a superblock, a 256-byte header slot with its
//! embedded tensor header, and a region URI. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xmem_tensorpool::layout::{SlotHeader, Superblock};
use xmem_tensorpool::uri::ShmUri;

fuzz_target!(|data: &[u8]| {
    if let Ok(sb) = Superblock::decode(data) {
        let _ = sb.validate();
        assert_eq!(&sb.encode()[..], &data[..64]);
    }
    if let Ok(slot) = SlotHeader::decode(data) {
        let _ = slot.validate(slot.payload_slot, &[(slot.pool_id, u32::MAX)]);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ShmUri::parse(text);
    }
});
