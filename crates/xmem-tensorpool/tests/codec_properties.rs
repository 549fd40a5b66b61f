//! Property tests of the SBE codecs (conformance item W-16-1): every message of the six schemas
//! round-trips through encode → decode → encode with arbitrary valid values, and no bytes at all
//! make a decoder panic.

use proptest::prelude::*;
use xmem_tensorpool::codec::schema::{schemas, BlockDef, FieldDef, MessageDef, Presence};
use xmem_tensorpool::codec::{decode, decode_exact, Entry, FrameDescriptor, FrameProgress, Message, Value};

/// Every message layout that is written (legacy v1.1 layouts are decode-only).
fn written_messages() -> Vec<&'static MessageDef> {
    schemas()
        .iter()
        .flat_map(|s| s.messages.iter())
        .filter(|m| m.legacy.is_none())
        .collect()
}

fn scalar(f: &'static FieldDef) -> BoxedStrategy<i128> {
    if let Some(e) = &f.enumeration {
        let values: Vec<i128> = e.values.iter().map(|(_, v)| *v).collect();
        return proptest::sample::select(values).boxed();
    }
    let lo = f.prim.min();
    let hi = f.max.unwrap_or(f.prim.max()).min(f.prim.max());
    let null = match f.presence {
        Presence::Optional { null } => Some(null),
        _ => None,
    };
    // Edges often, anything in range otherwise; never the field's own null (that is `Value::Null`).
    prop_oneof![
        proptest::sample::select(vec![lo, hi, lo + 1, hi - 1, 0.max(lo)]),
        (0u64..=u64::MAX).prop_map(move |r| lo + (r as i128).rem_euclid(hi - lo + 1)),
    ]
    .prop_filter("not the null sentinel", move |v| Some(*v) != null)
    .boxed()
}

fn value(f: &'static FieldDef) -> BoxedStrategy<Value> {
    match f.presence {
        Presence::Constant(c) => Just(Value::Int(c)).boxed(),
        _ if f.count != 1 => proptest::collection::vec(scalar(f), f.count)
            .prop_map(Value::Array)
            .boxed(),
        Presence::Optional { .. } => {
            prop_oneof![1 => Just(Value::Null), 3 => scalar(f).prop_map(Value::Int)].boxed()
        }
        Presence::Required => scalar(f).prop_map(Value::Int).boxed(),
    }
}

fn entry(def: &'static BlockDef, depth: u32) -> BoxedStrategy<Entry> {
    let fields: Vec<BoxedStrategy<Value>> = def.fields.iter().map(value).collect();
    let max_entries = if depth == 0 { 3 } else { 2 };
    let groups: Vec<BoxedStrategy<Vec<Entry>>> = def
        .groups
        .iter()
        .map(|g| proptest::collection::vec(entry(&g.block, depth + 1), 0..max_entries).boxed())
        .collect();
    let data: Vec<BoxedStrategy<Vec<u8>>> = def
        .data
        .iter()
        .map(|d| proptest::collection::vec(any::<u8>(), 0..(d.max_len as usize).min(40)).boxed())
        .collect();
    (fields, groups, data)
        .prop_map(|(fields, groups, data)| Entry { fields, groups, data })
        .boxed()
}

fn message() -> impl Strategy<Value = Message> {
    proptest::sample::select(written_messages()).prop_flat_map(|def| {
        entry(&def.block, 0).prop_map(move |body| Message {
            def,
            version: 1,
            body,
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn w_16_1_every_message_round_trips(m in message()) {
        let bytes = m.encode().unwrap();
        let back = decode_exact(&bytes).unwrap();
        prop_assert_eq!(&back, &m);
        prop_assert_eq!(back.encode().unwrap(), bytes);
    }

    #[test]
    fn truncations_of_any_message_are_errors(m in message(), cut in any::<proptest::sample::Index>()) {
        let bytes = m.encode().unwrap();
        let n = cut.index(bytes.len());
        prop_assert!(decode(&bytes[..n]).is_err());
    }

    #[test]
    fn mutated_messages_never_panic(m in message(), flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..4)) {
        let mut bytes = m.encode().unwrap();
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        if let Ok(back) = decode_exact(&bytes) {
            // What decodes is valid: it encodes back to the same bytes.
            prop_assert_eq!(back.encode().unwrap(), bytes);
        }
    }

    #[test]
    fn any_bytes_never_panic_the_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..200), schema in proptest::sample::select(vec![900u16, 901, 902, 903, 904, 910]), template in 0u16..14) {
        let _ = decode(&bytes);
        let _ = FrameDescriptor::decode(&bytes);
        let _ = FrameProgress::decode(&bytes);
        // And with a plausible header in front, so the bodies get exercised.
        let mut framed = bytes.clone();
        if framed.len() >= 8 {
            framed[2..4].copy_from_slice(&template.to_le_bytes());
            framed[4..6].copy_from_slice(&schema.to_le_bytes());
            framed[6..8].copy_from_slice(&1u16.to_le_bytes());
            if let Some(def) = written_messages().into_iter().find(|m| m.schema_id == schema && m.template_id == template) {
                framed[0..2].copy_from_slice(&def.block.block_length.to_le_bytes());
            }
            let _ = decode(&framed);
        }
    }

    #[test]
    fn typed_descriptor_agrees_with_the_generic_codec(stream in any::<u32>(), epoch in any::<u64>(), seq in any::<u64>(), ts in any::<Option<u64>>(), meta in any::<Option<u32>>(), trace in any::<u64>()) {
        let d = FrameDescriptor { stream_id: stream, epoch, seq, timestamp_ns: ts.filter(|t| *t != u64::MAX), meta_version: meta.filter(|m| *m != u32::MAX), trace_id: trace };
        let bytes = d.encode();
        prop_assert_eq!(FrameDescriptor::decode(&bytes).unwrap(), d);
        let m = decode_exact(&bytes).unwrap();
        prop_assert_eq!(m.encode().unwrap(), bytes.to_vec());
        prop_assert_eq!(m.get("traceId").unwrap(), &if trace == 0 { Value::Null } else { Value::Int(trace.into()) });
    }
}
