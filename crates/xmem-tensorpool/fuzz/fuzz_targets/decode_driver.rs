//! Decoder of the driver schema (901): any bytes, with the schema id forced into the header so
//! that the fuzzer explores this schema's messages. What decodes must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xmem_tensorpool_fuzz::decodes_back_as(data, 901));
