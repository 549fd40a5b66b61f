//! Property tests: round trips of every image, and validators that never panic on any bytes.

use proptest::prelude::*;
use xmem_tensorpool::layout::*;
use xmem_tensorpool::uri::ShmUri;

fn tensor() -> impl Strategy<Value = TensorHeader> {
    (
        any::<i16>(),
        any::<i16>(),
        any::<u8>(),
        any::<u8>(),
        any::<u8>(),
        any::<u32>(),
        any::<[i32; 8]>(),
        any::<[i32; 8]>(),
    )
        .prop_map(
            |(dtype, major_order, ndims, pad_align, progress_unit, progress_stride_bytes, dims, strides)| {
                TensorHeader {
                    dtype,
                    major_order,
                    ndims,
                    pad_align,
                    progress_unit,
                    progress_stride_bytes,
                    dims,
                    strides,
                }
            },
        )
}

/// Valid row-major tensors, some of them one field away from an invalid one.
fn valid_tensor() -> impl Strategy<Value = TensorHeader> {
    (
        proptest::collection::vec(1i32..64, 1..4),
        any::<bool>(),
        0usize..3,
    )
        .prop_map(|(dims, spoil, which)| {
            let mut t = TensorHeader::row_major(Dtype::Uint8, &dims);
            if spoil {
                match which {
                    0 => t.ndims = 9,
                    1 => t.dims[0] = -1,
                    _ => t.major_order = 3,
                }
            }
            t
        })
}

proptest! {
    #[test]
    fn superblocks_round_trip(bytes in proptest::collection::vec(any::<u8>(), 64)) {
        // Every 64-byte image decodes to its fields and encodes back to itself.
        let sb = Superblock::decode(&bytes).unwrap();
        prop_assert_eq!(sb.encode().to_vec(), bytes);
        prop_assert_eq!(Superblock::decode(&sb.encode()).unwrap(), sb);
    }

    #[test]
    fn slots_round_trip(t in tensor(), seq in any::<u64>(), len in any::<u32>(), ps in any::<u32>(), pool in any::<u16>(), off in any::<u32>(), ts in any::<u64>(), mv in any::<u32>()) {
        let s = SlotHeader { seq_commit: seq, values_len_bytes: len, payload_slot: ps, pool_id: pool, payload_offset: off, timestamp_ns: ts, meta_version: mv, header_bytes_len: 192, tensor: t };
        prop_assert_eq!(SlotHeader::decode(&s.encode()).unwrap(), s);
    }

    #[test]
    fn any_superblock_image_is_judged_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(sb) = Superblock::decode(&bytes) {
            let _ = sb.validate();
            let _ = sb.check_against(&Superblock::header_ring(1, 1, 8, 1, 1));
        }
    }

    #[test]
    fn any_slot_image_is_judged_without_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..300), fix in any::<bool>()) {
        if fix && bytes.len() >= 72 {
            // Often make the framing right, so that the tensor rules get exercised too.
            bytes[60..72].copy_from_slice(&[0xc0, 0, 0, 0, 0xb8, 0, 0x34, 0, 0x84, 3, 1, 0]);
        }
        if let Ok(s) = SlotHeader::decode(&bytes) {
            let _ = s.validate(s.payload_slot, &[(s.pool_id, u32::MAX)]);
        }
    }

    #[test]
    fn any_tensor_is_judged_without_panic(t in tensor()) {
        if let Ok(v) = t.validate() {
            prop_assert!(v.dims().len() == t.ndims as usize);
        }
    }

    #[test]
    fn a_memo_judges_every_tensor_as_a_fresh_validation_does(ts in proptest::collection::vec(prop_oneof![tensor(), valid_tensor()], 1..12), order in proptest::collection::vec(0usize..12, 1..40)) {
        // Shapes repeated, alternated and changed: the memo never keeps a verdict past a change.
        let mut memo = TensorMemo::default();
        for i in order {
            let t = &ts[i % ts.len()];
            prop_assert_eq!(memo.validate(t).ok(), t.validate().ok());
        }
    }

    #[test]
    fn any_uri_is_judged_without_panic(s in ".{0,64}") {
        let _ = ShmUri::parse(&s);
        let _ = ShmUri::parse(&format!("shm:file?{s}"));
    }
}
