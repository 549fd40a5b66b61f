//! Golden images: the project's own vectors (written from the spec, run everywhere) and the bytes
//! the C implementation wrote (`../shared/tensorpool/golden`, where that folder exists).

use std::path::PathBuf;

use xmem_tensorpool::layout::{Dtype, SlotHeader, Superblock, TensorHeader, MAGIC, SLOT_SIZE};
use xmem_tensorpool::uri::ShmUri;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The C implementation's golden folder, if this checkout has `../shared` beside it.
fn shared_golden(file: &str) -> Option<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tensorpool/golden");
    match std::fs::read(dir.join(file)) {
        Ok(b) => Some(b),
        Err(_) => {
            println!("skipped: {file} (no ../shared/tensorpool/golden beside the repository)");
            None
        }
    }
}

/// Every truncation is an error, never a panic.
fn truncations_fail<T: std::fmt::Debug>(bytes: &[u8], decode: impl Fn(&[u8]) -> xmem_tensorpool::Result<T>) {
    for n in 0..bytes.len() {
        assert!(
            decode(&bytes[..n]).is_err(),
            "{n} of {} bytes decoded",
            bytes.len()
        );
    }
}

#[test]
fn own_vector_superblock_of_a_header_ring() {
    // Spec §2.2: magic "1MHSLPOT" on disk, layout 1, epoch 7, stream 1000, ring (1), pool 0,
    // 8 slots of 256 bytes, stride 0, pid 42, start 5, activity 6.
    let bytes = hex(
        "314d48534c504f54 01000000 0700000000000000 e8030000 0100 0000 08000000 00010000 00000000
         2a00000000000000 0500000000000000 0600000000000000",
    );
    let mut sb = Superblock::header_ring(1000, 7, 8, 42, 5);
    sb.activity_timestamp_ns = 6;
    assert_eq!(sb.encode().to_vec(), bytes);
    assert_eq!(Superblock::decode(&bytes).unwrap(), sb);
    assert_eq!(sb.magic, MAGIC);
    truncations_fail(&bytes, Superblock::decode);
}

#[test]
fn own_vector_slot_with_a_1080p_tensor() {
    let mut tensor = TensorHeader::row_major(Dtype::Uint8, &[1080, 1920, 3]);
    tensor.strides[..3].copy_from_slice(&[5760, 3, 1]);
    let slot = SlotHeader {
        seq_commit: (5 << 1) | 1,
        values_len_bytes: 6_220_800,
        payload_slot: 5,
        pool_id: 1,
        payload_offset: 0,
        timestamp_ns: 0x0102_0304_0506_0708,
        meta_version: 9,
        header_bytes_len: 192,
        tensor,
    };
    let b = slot.encode();
    // Fixed offsets of §2.3, read back by hand.
    assert_eq!(&b[0..8], &11u64.to_le_bytes());
    assert_eq!(&b[8..12], &6_220_800u32.to_le_bytes());
    assert_eq!(&b[22..30], &0x0102_0304_0506_0708u64.to_le_bytes());
    assert_eq!(&b[60..72], &hex("c0000000 b8003400 84030100")[..]);
    assert_eq!(&b[72..74], &1i16.to_le_bytes()); // dtype UINT8
    assert_eq!(b[76], 3); // ndims
    assert_eq!(&b[83..87], &1080i32.to_le_bytes()); // dims[0] at the odd offset 83
    assert_eq!(&b[115..119], &5760i32.to_le_bytes()); // strides[0]
    assert!(b[34..60].iter().all(|&x| x == 0) && b[147..].iter().all(|&x| x == 0));
    assert_eq!(SlotHeader::decode(&b).unwrap(), slot);
    let t = slot.validate(5, &[(1, 6_220_800)]).unwrap();
    assert_eq!(t.extent, 6_220_800);
    truncations_fail(&b, SlotHeader::decode);
}

#[test]
fn c_superblock_decodes_validates_and_reencodes() {
    let Some(b) = shared_golden("superblock.bin") else {
        return;
    };
    let sb = Superblock::decode(&b).unwrap();
    assert_eq!(&b[..8], b"1MHSLPOT");
    assert_eq!(
        (sb.magic, sb.layout_version, sb.epoch, sb.stream_id),
        (MAGIC, 1, 1, 1000)
    );
    assert_eq!(
        (
            sb.region_type,
            sb.pool_id,
            sb.nslots,
            sb.slot_bytes,
            sb.stride_bytes
        ),
        (1, 0, 8, 256, 0)
    );
    sb.validate().unwrap();
    assert_eq!(sb.encode().to_vec(), b);
    truncations_fail(&b, Superblock::decode);
}

#[test]
fn c_slots_decode_validate_and_reencode() {
    for file in ["slot_header.bin", "slot_tensor.bin"] {
        let Some(b) = shared_golden(file) else { return };
        assert_eq!(b.len(), SLOT_SIZE);
        let slot = SlotHeader::decode(&b).unwrap();
        assert_eq!(slot.header_bytes_len, 192, "{file}");
        assert_eq!(slot.encode().to_vec(), b, "{file}: re-encodes to the same bytes");
        let t = slot.tensor.validate().unwrap();
        println!(
            "{file}: seq {} committed {} {:?}",
            slot.seq(),
            slot.seq_commit & 1,
            t
        );
        truncations_fail(&b, SlotHeader::decode);
    }
}

#[test]
fn c_slot_header_holds_a_committed_float32_vector() {
    let Some(b) = shared_golden("slot_header.bin") else {
        return;
    };
    let slot = SlotHeader::decode(&b).unwrap();
    assert_eq!(
        (
            slot.seq_commit,
            slot.values_len_bytes,
            slot.payload_slot,
            slot.pool_id
        ),
        (1, 192, 0, 1)
    );
    let t = slot.validate(0, &[(1, 256)]).unwrap();
    assert_eq!(
        (t.dtype, t.dims(), t.strides()),
        (Dtype::Float32, &[1u32][..], &[4u32][..])
    );
}

#[test]
fn c_tensor_header_decodes_and_reencodes() {
    let Some(b) = shared_golden("tensor_header.bin") else {
        return;
    };
    let h = TensorHeader::decode(&b).unwrap();
    assert_eq!(h.encode().to_vec(), b);
    assert_eq!(
        &b[19..23],
        &h.dims[0].to_le_bytes(),
        "dims[0] at header-bytes offset 19"
    );
    truncations_fail(&b, TensorHeader::decode);
}

#[test]
fn c_uris_parse() {
    let Some(b) = shared_golden("shm_uri.bin") else {
        return;
    };
    let uri = ShmUri::parse(std::str::from_utf8(&b).unwrap()).unwrap();
    assert_eq!(uri.path().to_str(), Some("/dev/shm/tensorpool"));
    assert!(!uri.require_hugepages());
    assert_eq!(uri.to_string().as_bytes(), &b[..]);
    let Some(v) = shared_golden("shm_uri_validate.bin") else {
        return;
    };
    let stride = u32::from_le_bytes(v[..4].try_into().unwrap());
    let parsed = std::str::from_utf8(&v[4..]).map(ShmUri::parse);
    println!(
        "shm_uri_validate.bin: stride {stride}, uri {:?} → {parsed:?}",
        std::str::from_utf8(&v[4..])
    );
}
