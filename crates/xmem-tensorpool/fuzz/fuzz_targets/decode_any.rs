//! The generic decoder and the typed frame codecs on any bytes: never a panic; what decodes
//! re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xmem_tensorpool::codec::{decode, encode, FrameDescriptor, FrameProgress};

fuzz_target!(|data: &[u8]| {
    if let Ok((m, used)) = decode(data) {
        if m.def.legacy.is_none() {
            assert_eq!(encode(&m).expect("a decoded message encodes"), &data[..used]);
        }
    }
    if let Ok(d) = FrameDescriptor::decode(data) {
        assert_eq!(&d.encode()[..], &data[..FrameDescriptor::ENCODED_LEN]);
    }
    let _ = FrameProgress::decode(data);
});
