//! The generic decoder and the typed frame codecs on any bytes: never a panic; what decodes
//! re-encodes to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xmem_tensorpool::codec::{FrameDescriptor, FrameProgress};

fuzz_target!(|data: &[u8]| {
    xmem_tensorpool_fuzz::decodes_back(data);
    if let Ok(d) = FrameDescriptor::decode(data) {
        assert_eq!(&d.encode()[..], &data[..FrameDescriptor::ENCODED_LEN]);
    }
    let _ = FrameProgress::decode(data);
});
