//! What every decoder target checks, written once: no input makes a decoder panic, and what
//! decodes re-encodes to the very bytes it came from.

use xmem_tensorpool::codec::{decode, encode};

/// Decodes `bytes` with the generic decoder; a message that decodes (a legacy one excepted,
/// whose encoding is the current one) must re-encode to the bytes it used. Returns its schema.
pub fn decodes_back(bytes: &[u8]) -> Option<u16> {
    let (m, used) = decode(bytes).ok()?;
    if m.def.legacy.is_none() {
        assert_eq!(encode(&m).expect("a decoded message encodes"), &bytes[..used]);
    }
    Some(m.def.schema_id)
}

/// [`decodes_back`] on `data` with schema id `schema` forced into the header, so that the
/// fuzzer explores that schema's messages.
pub fn decodes_back_as(data: &[u8], schema: u16) {
    let mut bytes = data.to_vec();
    if bytes.len() >= 6 {
        bytes[4..6].copy_from_slice(&schema.to_le_bytes());
    }
    if let Some(decoded) = decodes_back(&bytes) {
        assert_eq!(decoded, schema);
    }
}
