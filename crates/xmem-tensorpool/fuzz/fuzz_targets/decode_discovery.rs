//! Decoder of the discovery schema (910): any bytes, with the schema id forced into the header so
//! that the fuzzer explores this schema's messages. What decodes must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xmem_tensorpool::codec::{decode, encode};

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.to_vec();
    if bytes.len() >= 6 {
        bytes[4..6].copy_from_slice(&910u16.to_le_bytes());
    }
    if let Ok((m, used)) = decode(&bytes) {
        assert_eq!(m.def.schema_id, 910);
        if m.def.legacy.is_none() {
            assert_eq!(encode(&m).expect("a decoded message encodes"), &bytes[..used]);
        }
    }
});
