//! The conformance checklist of the spec (§7), the items this crate covers so far; each test is
//! named after its item. The crate README lists the items not covered yet.

use xmem_tensorpool::layout::*;
use xmem_tensorpool::uri::ShmUri;
use xmem_tensorpool::Error;

fn ring() -> Superblock {
    Superblock::header_ring(1000, 77, 16, 1, 2)
}

fn field_of(e: Error) -> &'static str {
    match e {
        Error::Invalid { field, .. } | Error::Mismatch { field, .. } => field,
        Error::BadMagic(_) => "magic",
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn w_6_1_superblock_is_64_bytes_and_offsets_start_after_it() {
    assert_eq!(SUPERBLOCK_SIZE, 64);
    assert_eq!(ring().encode().len(), 64);
    assert_eq!(slot_offset(0), 64);
    assert_eq!(payload_offset(3, 4096), 64 + 3 * 4096);
}

#[test]
fn w_7_1_1_wrong_geometry_fails_closed() {
    let want = ring();
    assert_eq!(want.check_against(&want).unwrap(), RegionType::HeaderRing);
    type Damage = fn(&mut Superblock);
    let cases: [(&str, Damage); 8] = [
        ("magic", |s| s.magic ^= 1),
        ("layoutVersion", |s| s.layout_version = 2),
        ("streamId", |s| s.stream_id += 1),
        ("regionType", |s| s.region_type = 3),
        ("nslots", |s| s.nslots = 12),
        ("nslots", |s| s.nslots = 32),
        ("slotBytes", |s| s.slot_bytes = 128),
        ("epoch", |s| s.epoch += 1),
    ];
    for (field, damage) in cases {
        let mut got = want;
        damage(&mut got);
        let bytes = got.encode();
        let decoded = Superblock::decode(&bytes).unwrap();
        assert_eq!(field_of(decoded.check_against(&want).unwrap_err()), field);
    }
}

#[test]
fn w_7_1_2_ring_is_pool_0_and_a_pool_has_its_announced_id() {
    let mut r = ring();
    r.pool_id = 1;
    assert_eq!(field_of(r.validate().unwrap_err()), "poolId");
    let pool = Superblock::payload_pool(1000, 77, 3, 16, 4096, 1, 2);
    assert_eq!(pool.validate().unwrap(), RegionType::PayloadPool);
    let mut other = pool;
    other.pool_id = 4;
    assert_eq!(field_of(other.check_against(&pool).unwrap_err()), "poolId");
    other.pool_id = 0;
    assert_eq!(field_of(other.validate().unwrap_err()), "poolId");
    // slotBytes: the stride (Julia) or 0xFFFFFFFF (C) are both accepted; anything else is not.
    let mut c_style = pool;
    c_style.slot_bytes = u32::MAX;
    c_style.validate().unwrap();
    c_style.slot_bytes = 64;
    assert_eq!(field_of(c_style.validate().unwrap_err()), "slotBytes");
}

#[test]
fn w_8_1_1_slots_are_256_bytes_at_64_plus_i_256() {
    assert_eq!(SLOT_SIZE, 256);
    for i in [0u32, 1, 7, 1023] {
        assert_eq!(slot_offset(i), 64 + i as usize * 256);
    }
}

fn slot(seq: u64) -> SlotHeader {
    SlotHeader {
        seq_commit: commit_word(seq, true),
        values_len_bytes: 24,
        payload_slot: (seq & 15) as u32,
        pool_id: 1,
        payload_offset: 0,
        timestamp_ns: 5,
        meta_version: 0,
        header_bytes_len: 192,
        tensor: TensorHeader::row_major(Dtype::Float32, &[2, 3]),
    }
}

#[test]
fn w_8_2_1_slot_is_a_raw_body_with_seq_commit_at_byte_0() {
    let b = slot(9).encode();
    assert_eq!(&b[..8], &commit_word(9, true).to_le_bytes());
    assert_eq!(
        &b[64..72],
        &[0xb8, 0, 0x34, 0, 0x84, 3, 1, 0],
        "the embedded header, no outer one"
    );
}

#[test]
fn w_8_2_2_header_bytes_length_and_embedded_header_are_checked() {
    let good = slot(1).encode();
    let mut b = good;
    b[60] = 191;
    assert!(matches!(
        SlotHeader::decode(&b),
        Err(Error::Invalid {
            field: "headerBytes length",
            ..
        })
    ));
    for (at, field) in [
        (64, "blockLength"),
        (66, "templateId"),
        (68, "schemaId"),
        (70, "version"),
    ] {
        let mut b = good;
        b[at] ^= 0x40;
        assert_eq!(field_of(SlotHeader::decode(&b).unwrap_err()), field);
    }
}

#[test]
fn w_8_2_3_ndims_in_1_to_8_and_nothing_negative() {
    for n in [0u8, 9, 255] {
        let mut t = TensorHeader::row_major(Dtype::Uint8, &[4]);
        t.ndims = n;
        assert_eq!(field_of(t.validate().unwrap_err()), "ndims");
    }
    let mut t = TensorHeader::row_major(Dtype::Uint8, &[4, -1]);
    assert_eq!(field_of(t.validate().unwrap_err()), "dims");
    t = TensorHeader::row_major(Dtype::Uint8, &[4, 4]);
    t.strides[0] = -4;
    assert_eq!(field_of(t.validate().unwrap_err()), "strides");
    // Entries past ndims are written as zeros.
    let b = TensorHeader::row_major(Dtype::Uint8, &[4, 4]).encode();
    assert!(b[8 + 11 + 8..8 + 43].iter().all(|&x| x == 0));
    assert!(TensorHeader::row_major(Dtype::Uint8, &[1; 8]).validate().is_ok());
}

#[test]
fn w_8_2_4_strides_follow_the_major_order_without_overlap() {
    let t = TensorHeader::row_major(Dtype::Int16, &[3, 4]).validate().unwrap();
    assert_eq!(
        t.strides(),
        [8, 2],
        "zeros are filled with the minimum, row major"
    );
    let mut col = TensorHeader::row_major(Dtype::Int16, &[3, 4]);
    col.major_order = MajorOrder::Column as i16;
    assert_eq!(col.validate().unwrap().strides(), [2, 6]);
    let mut overlap = TensorHeader::row_major(Dtype::Int16, &[3, 4]);
    overlap.strides[..2].copy_from_slice(&[4, 2]); // rows overlap: 4 < 2 × 4
    assert_eq!(field_of(overlap.validate().unwrap_err()), "strides");
    let mut padded = TensorHeader::row_major(Dtype::Int16, &[3, 4]);
    padded.strides[..2].copy_from_slice(&[64, 2]); // padded rows are fine
    assert_eq!(padded.validate().unwrap().extent, 2 * 64 + 3 * 2 + 2);
    let mut unknown = TensorHeader::row_major(Dtype::Int16, &[3, 4]);
    unknown.major_order = 0;
    assert_eq!(field_of(unknown.validate().unwrap_err()), "majorOrder");
}

#[test]
fn w_8_2_5_progress_stride_is_the_real_row_or_column_stride() {
    let mut t = TensorHeader::row_major(Dtype::Uint8, &[4, 10]);
    t.progress_unit = ProgressUnit::Rows as u8;
    assert_eq!(field_of(t.validate().unwrap_err()), "progressStrideBytes");
    t.progress_stride_bytes = 10;
    t.validate().unwrap();
    t.progress_stride_bytes = 11;
    assert_eq!(field_of(t.validate().unwrap_err()), "progressStrideBytes");
    t.progress_unit = ProgressUnit::Columns as u8;
    t.progress_stride_bytes = 1;
    t.validate().unwrap();
}

#[test]
fn w_8_2_6_a_nonzero_payload_offset_is_dropped() {
    let mut s = slot(3);
    s.validate(3, &[(1, 64)]).unwrap();
    s.payload_offset = 64;
    assert_eq!(field_of(s.validate(3, &[(1, 64)]).unwrap_err()), "payloadOffset");
}

#[test]
fn w_9_1_pool_stride_is_a_multiple_of_64() {
    for s in [0u32, 32, 100, 65] {
        assert!(check_stride(s).is_err(), "{s}");
    }
    for s in [64u32, 128, 6_220_800] {
        check_stride(s).unwrap();
    }
    let mut pool = Superblock::payload_pool(1, 1, 1, 16, 4096, 1, 1);
    pool.stride_bytes = 4000;
    pool.slot_bytes = 4000;
    assert_eq!(field_of(pool.validate().unwrap_err()), "strideBytes");
}

#[test]
fn w_15_5_1_payload_slot_equals_header_index() {
    let s = slot(17); // 17 & 15 = 1
    s.validate(1, &[(1, 64)]).unwrap();
    assert_eq!(field_of(s.validate(2, &[(1, 64)]).unwrap_err()), "payloadSlot");
}

#[test]
fn w_15_8_1_unknown_dtype_major_order_or_progress_unit_rejects_the_frame() {
    for d in [0i16, 12, 15, -1] {
        let mut t = TensorHeader::row_major(Dtype::Uint8, &[4]);
        t.dtype = d;
        assert_eq!(field_of(t.validate().unwrap_err()), "dtype");
    }
    let mut t = TensorHeader::row_major(Dtype::Uint8, &[4]);
    t.progress_unit = 3;
    assert_eq!(field_of(t.validate().unwrap_err()), "progressUnit");
    t.progress_unit = 0;
    t.major_order = 3;
    assert_eq!(field_of(t.validate().unwrap_err()), "majorOrder");
}

#[test]
fn w_15_22_1_uri_grammar() {
    let ok = ShmUri::parse("shm:file?path=/dev/shm/tp/1.pool|require_hugepages=true").unwrap();
    assert!(ok.require_hugepages());
    assert_eq!(
        ShmUri::parse("shm:file?path=/x").unwrap().to_string(),
        "shm:file?path=/x|require_hugepages=false"
    );
    for bad in [
        "file?path=/x",                           // scheme
        "shm:file?path=x",                        // relative
        "shm:file?path=/x|mode=1",                // unknown parameter
        "shm:file?pa=/x",                         // key prefixes are not keys
        "shm:file?path=/x|require_hugepages=yes", // bad bool
        "shm:file?path=/x|path=/y",               // duplicate
        "shm:file?path=",                         // empty value
        "shm:file?require_hugepages=false",       // no path
        "shm:file?path=/a b",                     // space
        "shm:///dev/shm/x",                       // the non-conforming form some seeds use
    ] {
        assert!(matches!(ShmUri::parse(bad), Err(Error::BadUri { .. })), "{bad}");
    }
    assert!(ShmUri::parse(&format!("shm:file?path=/{}", "a".repeat(5000))).is_err());
    // `&` is not a separator: it is part of the path.
    let amp = ShmUri::parse("shm:file?path=/x&require_hugepages=true").unwrap();
    assert_eq!(amp.path().to_str(), Some("/x&require_hugepages=true"));
    assert!(!amp.require_hugepages());
}
