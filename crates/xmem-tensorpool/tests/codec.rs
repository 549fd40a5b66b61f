//! The SBE codecs against the spec: the layouts of §4 typed in by hand, the project's own vectors
//! (`tests/vectors/*.hex`, written from the spec's offsets), the C implementation's golden
//! messages (`../shared/tensorpool/golden`, where that folder exists), and the conformance items
//! of §7 that are about the codecs, named after the item.

use std::path::{Path, PathBuf};

use xmem_tensorpool::codec::schema::{schemas, Prim};
use xmem_tensorpool::codec::{
    decode, decode_exact, CodecError, FrameDescriptor, FrameProgress, Message, ProgressState,
    ShmPoolAnnounce, Value,
};

/// §4 of the spec digest, typed in by hand: `schema template name block: offset:type:field …`.
const SPEC_LAYOUTS: &str = "
900 1 ShmPoolAnnounce 35: 0:u32:streamId 4:u32:producerId 8:u64:epoch 16:u64:announceTimestampNs 24:u8:announceClockDomain 25:u32:layoutVersion 29:u32:headerNslots 33:u16:headerSlotBytes
900 2 ConsumerHello 39: 0:u32:streamId 4:u32:consumerId 8:u8:supportsShm 9:u8:supportsProgress 10:u8:mode 11:u32:maxRateHz 15:u32:expectedLayoutVersion 19:u32:progressIntervalUs 23:u32:progressBytesDelta 27:u32:progressMajorDeltaUnits 31:u32:descriptorStreamId 35:u32:controlStreamId
900 3 ConsumerConfig 18: 0:u32:streamId 4:u32:consumerId 8:u8:useShm 9:u8:mode 10:u32:descriptorStreamId 14:u32:controlStreamId
900 4 FrameDescriptor 40: 0:u32:streamId 4:u64:epoch 12:u64:seq 20:u64:timestampNs 28:u32:metaVersion 32:u64:traceId
900 11 FrameProgress 29: 0:u32:streamId 4:u64:epoch 12:u64:seq 20:u64:payloadBytesFilled 28:u8:state
900 5 QosConsumer 41: 0:u32:streamId 4:u32:consumerId 8:u64:epoch 16:u64:lastSeqSeen 24:u64:dropsGap 32:u64:dropsLate 40:u8:mode
900 6 QosProducer 28: 0:u32:streamId 4:u32:producerId 8:u64:epoch 16:u64:currentSeq 24:u32:watermark
900 7 DataSourceAnnounce 20: 0:u32:streamId 4:u32:producerId 8:u64:epoch 16:u32:metaVersion
900 8 DataSourceMeta 16: 0:u32:streamId 4:u32:metaVersion 8:u64:timestampNs
900 9 ControlResponse 12: 0:i64:correlationId 8:i32:code
900 10 MetaBlobAnnounce 28: 0:u32:streamId 4:u32:metaVersion 8:u32:blobType 12:u64:totalLen 20:u64:checksum
900 12 MetaBlobChunk 16: 0:u32:streamId 4:u32:metaVersion 8:u64:chunkOffset
900 13 MetaBlobComplete 16: 0:u32:streamId 4:u32:metaVersion 8:u64:checksum
900 50 ShmRegionSuperblock 64: 0:u64:magic 8:u32:layoutVersion 12:u64:epoch 20:u32:streamId 24:i16:regionType 26:u16:poolId 28:u32:nslots 32:u32:slotBytes 36:u32:strideBytes 40:u64:pid 48:u64:startTimestampNs 56:u64:activityTimestampNs
900 51 SlotHeader 60: 0:u64:seqCommit 8:u32:valuesLenBytes 12:u32:payloadSlot 16:u16:poolId 18:u32:payloadOffset 22:u64:timestampNs 30:u32:metaVersion
900 52 TensorHeader 184: 0:i16:dtype 2:i16:majorOrder 4:u8:ndims 5:u8:padAlign 6:u8:progressUnit 7:u32:progressStrideBytes
901 1 ShmAttachRequest 27: 0:i64:correlationId 8:u32:streamId 12:u32:clientId 16:u8:role 17:u32:expectedLayoutVersion 21:u8:publishMode 22:u8:requireHugepages 23:u32:desiredNodeId
901 2 ShmAttachResponse 54: 0:i64:correlationId 8:i32:code 12:u64:leaseId 20:u64:leaseExpiryTimestampNs 28:u32:streamId 32:u64:epoch 40:u32:layoutVersion 44:u32:headerNslots 48:u16:headerSlotBytes 50:u32:nodeId
901 3 ShmDetachRequest 25: 0:i64:correlationId 8:u64:leaseId 16:u32:streamId 20:u32:clientId 24:u8:role
901 4 ShmDetachResponse 12: 0:i64:correlationId 8:i32:code
901 5 ShmLeaseKeepalive 25: 0:u64:leaseId 8:u32:streamId 12:u32:clientId 16:u8:role 17:u64:clientTimestampNs
901 6 ShmDriverShutdown 9: 0:u64:timestampNs 8:u8:reason
901 7 ShmLeaseRevoked 26: 0:u64:timestampNs 8:u64:leaseId 16:u32:streamId 20:u32:clientId 24:u8:role 25:u8:reason
901 8 ShmDriverShutdownRequest 9: 0:i64:correlationId 8:u8:reason
910 1 DiscoveryRequest 32: 0:u64:requestId 8:u32:clientId 12:u32:responseStreamId 16:u32:streamId 20:u32:producerId 24:u64:dataSourceId
910 2 DiscoveryResponse 9: 0:u64:requestId 8:u8:status
902 1 BridgeFrameChunk 53: 0:u32:streamId 4:u64:epoch 12:u64:seq 20:u64:traceId 28:u32:chunkIndex 32:u32:chunkCount 36:u32:chunkOffset 40:u32:chunkLength 44:u32:payloadLength 48:u32:payloadCrc32c 52:u8:headerIncluded
903 1 SequenceMergeMapAnnounce 20: 0:u32:outStreamId 4:u64:epoch 12:u64:staleTimeoutNs
903 2 SequenceMergeMapRequest 12: 0:u32:outStreamId 4:u64:epoch
903 3 TimestampMergeMapAnnounce 29: 0:u32:outStreamId 4:u64:epoch 12:u64:staleTimeoutNs 20:u8:clockDomain 21:u64:latenessNs
903 4 TimestampMergeMapRequest 12: 0:u32:outStreamId 4:u64:epoch
904 1 TraceLinkSet 28: 0:u32:streamId 4:u64:epoch 12:u64:seq 20:u64:traceId
";

/// Group entries of §4: `schema template group block: offset:type:field …`.
const SPEC_GROUPS: &str = "
900 1 payloadPools 10: 0:u16:poolId 2:u32:poolNslots 6:u32:strideBytes
901 2 payloadPools 10: 0:u16:poolId 2:u32:poolNslots 6:u32:strideBytes
910 1 tags 0:
910 2 results 39: 0:u32:streamId 4:u32:producerId 8:u64:epoch 16:u32:layoutVersion 20:u32:headerNslots 24:u16:headerSlotBytes 26:u8:maxDims 27:u64:dataSourceId 35:u32:driverControlStreamId
903 1 rules 13: 0:u32:inputStreamId 4:u8:ruleType 5:i32:offset 9:u32:windowSize
903 3 rules 22: 0:u32:inputStreamId 4:u8:ruleType 5:u8:timestampSource 6:i64:offsetNs 14:u64:windowNs
904 1 parents 8: 0:u64:traceId
";

struct SpecLayout {
    schema: u16,
    template: u16,
    name: String,
    block: u16,
    fields: Vec<(usize, Prim, String)>,
}

fn prim(s: &str) -> Prim {
    match s {
        "u8" => Prim::U8,
        "u16" => Prim::U16,
        "i16" => Prim::I16,
        "u32" => Prim::U32,
        "i32" => Prim::I32,
        "u64" => Prim::U64,
        "i64" => Prim::I64,
        other => panic!("type {other} in the spec table"),
    }
}

fn spec_table(text: &str) -> Vec<SpecLayout> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (head, fields) = l.split_once(':').unwrap();
            let h: Vec<&str> = head.split_whitespace().collect();
            SpecLayout {
                schema: h[0].parse().unwrap(),
                template: h[1].parse().unwrap(),
                name: h[2].to_string(),
                block: h[3].parse().unwrap(),
                fields: fields
                    .split_whitespace()
                    .map(|f| {
                        let p: Vec<&str> = f.split(':').collect();
                        (p[0].parse().unwrap(), prim(p[1]), p[2].to_string())
                    })
                    .collect(),
            }
        })
        .collect()
}

fn spec_layout(schema: u16, template: u16) -> SpecLayout {
    spec_table(SPEC_LAYOUTS)
        .into_iter()
        .find(|l| l.schema == schema && l.template == template)
        .unwrap_or_else(|| panic!("no spec layout for {schema}/{template}"))
}

#[test]
fn every_message_has_the_spec_layout() {
    let table = spec_table(SPEC_LAYOUTS);
    let mut seen = 0;
    for s in schemas() {
        for m in s.messages.iter().filter(|m| m.legacy.is_none()) {
            let spec = table
                .iter()
                .find(|l| l.schema == s.id && l.template == m.template_id)
                .unwrap_or_else(|| panic!("{} {} is not in §4", s.name, m.name));
            assert_eq!(spec.name, m.name);
            assert_eq!(spec.block, m.block.block_length, "{} blockLength", m.name);
            for (offset, p, name) in &spec.fields {
                let f = m
                    .block
                    .fields
                    .iter()
                    .find(|f| &f.name == name)
                    .unwrap_or_else(|| panic!("{}.{name}", m.name));
                assert_eq!((f.offset, f.prim), (*offset, *p), "{}.{name}", m.name);
            }
            seen += 1;
        }
    }
    assert_eq!(seen, table.len(), "every message of §4 is in the schemas");
    let groups = spec_table(SPEC_GROUPS);
    for g in &groups {
        let m = schemas()
            .iter()
            .find(|s| s.id == g.schema)
            .and_then(|s| {
                s.messages
                    .iter()
                    .find(|m| m.template_id == g.template && m.legacy.is_none())
            })
            .unwrap();
        let def = &m.block.groups[m.block.group_index(&g.name).unwrap()].block;
        assert_eq!(def.block_length, g.block, "{}.{}", m.name, g.name);
        for (offset, p, name) in &g.fields {
            let f = def.fields.iter().find(|f| &f.name == name).unwrap();
            assert_eq!((f.offset, f.prim), (*offset, *p), "{}.{}.{name}", m.name, g.name);
        }
    }
}

#[test]
fn the_carried_schemas_are_the_protocols_byte_for_byte() {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tensorpool/schema");
    if !shared.exists() {
        println!("skipped: no ../shared/tensorpool/schema beside the repository");
        return;
    }
    for f in [
        "wire",
        "driver",
        "bridge",
        "join-barrier",
        "trace-link",
        "discovery",
    ] {
        let file = format!("{f}-schema.xml");
        let ours = std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("schema")
                .join(&file),
        )
        .unwrap();
        assert_eq!(ours, std::fs::read(shared.join(&file)).unwrap(), "{file}");
    }
}

// ---------------------------------------------------------------------------------------------
// Values by path, for the vectors' `# path = value` lines.

#[derive(Debug, PartialEq)]
enum Found<'a> {
    Field(&'a Value),
    Data(&'a [u8]),
}

/// Resolves `results[0].payloadPools[1].regionUri` in a message.
fn resolve<'a>(m: &'a Message, path: &str) -> Found<'a> {
    let mut def = &m.def.block;
    let mut entry = &m.body;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if let Some((group, idx)) = part.strip_suffix(']').and_then(|p| p.split_once('[')) {
            let g = def
                .group_index(group)
                .unwrap_or_else(|| panic!("no group {group} in {path}"));
            entry = &entry.groups[g][idx.parse::<usize>().unwrap()];
            def = &def.groups[g].block;
            continue;
        }
        assert_eq!(i, parts.len() - 1, "{path}");
        if let Some(f) = def.field_index(part) {
            return Found::Field(&entry.fields[f]);
        }
        let d = def
            .data_index(part)
            .unwrap_or_else(|| panic!("no member {part} in {path}"));
        return Found::Data(&entry.data[d]);
    }
    panic!("{path} names a group, not a value")
}

fn check_expectation(m: &Message, path: &str, want: &str) {
    let found = resolve(m, path);
    let ok = match &found {
        Found::Field(Value::Null) => want == "null",
        Found::Field(Value::Int(v)) => {
            let def_enum = enum_name(m, path, *v);
            want.parse::<i128>().map(|w| w == *v).unwrap_or(false) || def_enum.as_deref() == Some(want)
        }
        Found::Field(Value::Array(_)) => false,
        Found::Data(b) => {
            if let Some(t) = want.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
                *b == t.as_bytes()
            } else if let Some(h) = want.strip_prefix("hex:") {
                *b == hex(h).as_slice()
            } else if let Some(n) = want.strip_prefix("len:") {
                b.len() == n.parse::<usize>().unwrap()
            } else {
                false
            }
        }
    };
    assert!(
        ok,
        "{} {path}: decoded {found:?}, the vector says {want}",
        m.def.name
    );
}

fn enum_name(m: &Message, path: &str, v: i128) -> Option<String> {
    let mut def = &m.def.block;
    for part in path.split('.') {
        if let Some((group, _)) = part.strip_suffix(']').and_then(|p| p.split_once('[')) {
            def = &def.groups[def.group_index(group)?].block;
        } else {
            let f = &def.fields[def.field_index(part)?];
            return f.enumeration.as_ref()?.name_of(v).map(str::to_string);
        }
    }
    None
}

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    assert!(s.len() % 2 == 0, "odd hex");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// `path = value` lines of a vector.
type Expectations = Vec<(String, String)>;

/// A vector file: its bytes and its `path = value` expectations.
fn read_vector(path: &Path) -> (Vec<u8>, Expectations) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut bytes = String::new();
    let mut expect = Vec::new();
    for line in text.lines() {
        let (data, comment) = line.split_once('#').unwrap_or((line, ""));
        bytes.push_str(data);
        if let Some((p, v)) = comment.split_once(" = ") {
            if !data.trim().is_empty() {
                expect.push((p.trim().to_string(), v.trim().to_string()));
            }
        }
    }
    (hex(&bytes), expect)
}

fn own_vectors() -> Vec<(String, Vec<u8>, Expectations)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hex"))
        .map(|p| {
            let (b, e) = read_vector(&p);
            (p.file_stem().unwrap().to_string_lossy().into_owned(), b, e)
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Every strict prefix is an error (never a panic), and so is one more byte for an exact decode.
fn truncations_fail(name: &str, bytes: &[u8]) {
    for n in 0..bytes.len() {
        assert!(
            decode(&bytes[..n]).is_err(),
            "{name}: {n} of {} bytes decoded",
            bytes.len()
        );
    }
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert_eq!(
        decode_exact(&longer).unwrap_err(),
        CodecError::Trailing(1),
        "{name}"
    );
}

/// Each fixed field decodes to the bytes at the offset §4 gives it (or to null at its sentinel).
fn fields_hold_their_bytes(name: &str, bytes: &[u8], m: &Message) {
    if m.def.legacy.is_some() {
        return;
    }
    let spec = spec_layout(m.def.schema_id, m.def.template_id);
    let body = &bytes[8..];
    for (offset, p, field) in &spec.fields {
        let raw = p_read(*p, &body[*offset..]);
        match m.get(field).unwrap() {
            Value::Int(v) => assert_eq!(*v, raw, "{name}: {field}"),
            Value::Null => {
                let f = &m.def.block.fields[m.def.block.field_index(field).unwrap()];
                match f.presence {
                    xmem_tensorpool::codec::schema::Presence::Optional { null } => {
                        assert_eq!(raw, null, "{name}: {field}")
                    }
                    other => panic!("{name}: {field} is null but {other:?}"),
                }
            }
            Value::Array(_) => panic!("{name}: {field} is an array"),
        }
    }
}

fn p_read(p: Prim, b: &[u8]) -> i128 {
    match p {
        Prim::U8 => b[0] as i128,
        Prim::U16 => u16::from_le_bytes(b[..2].try_into().unwrap()) as i128,
        Prim::I16 => i16::from_le_bytes(b[..2].try_into().unwrap()) as i128,
        Prim::U32 => u32::from_le_bytes(b[..4].try_into().unwrap()) as i128,
        Prim::I32 => i32::from_le_bytes(b[..4].try_into().unwrap()) as i128,
        Prim::U64 => u64::from_le_bytes(b[..8].try_into().unwrap()) as i128,
        Prim::I64 => i64::from_le_bytes(b[..8].try_into().unwrap()) as i128,
        other => panic!("{other:?}"),
    }
}

#[test]
fn own_vectors_decode_to_their_values_and_reencode_to_their_bytes() {
    let vectors = own_vectors();
    assert!(vectors.len() >= 25, "{} vectors", vectors.len());
    let mut schemas_seen = std::collections::BTreeSet::new();
    for (name, bytes, expect) in &vectors {
        let m = decode_exact(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        schemas_seen.insert(m.def.schema_id);
        assert!(!expect.is_empty(), "{name} has no expectations");
        for (path, want) in expect {
            check_expectation(&m, path, want);
        }
        fields_hold_their_bytes(name, bytes, &m);
        if m.def.legacy.is_none() {
            assert_eq!(&m.encode().unwrap(), bytes, "{name} re-encodes");
        } else {
            assert!(m.encode().is_err(), "{name}: legacy layouts are never written");
        }
        truncations_fail(name, bytes);
    }
    assert_eq!(
        schemas_seen.into_iter().collect::<Vec<_>>(),
        vec![900, 901, 902, 903, 904, 910]
    );
}

// ---------------------------------------------------------------------------------------------
// The C implementation's golden files.

fn shared_golden_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/tensorpool/golden");
    if dir.exists() {
        Some(dir)
    } else {
        println!("skipped: no ../shared/tensorpool/golden beside the repository");
        None
    }
}

/// The golden files that are whole SBE messages (§9), with a value each holds.
const GOLDEN_MESSAGES: &[(&str, &str, &str)] = &[
    ("consumer_config.bin", "descriptorStreamId", "1100"),
    ("consumer_hello.bin", "progressIntervalUs", "null"),
    ("control_response.bin", "errorMessage", "\"ok\""),
    ("data_source_announce.bin", "name", "\"camera\""),
    ("data_source_meta.bin", "attributes[0].key", "\"dtype\""),
    ("meta_blob_announce.bin", "totalLen", "4"),
    ("meta_blob_chunk.bin", "bytes", "hex:61626364"),
    ("meta_blob_complete.bin", "checksum", "4660"),
    ("qos_consumer.bin", "lastSeqSeen", "40"),
    ("qos_producer.bin", "watermark", "128"),
    ("sequence_map.bin", "rules[0].windowSize", "null"),
    ("sequence_request.bin", "outStreamId", "2000"),
    ("shm_pool_announce.bin", "payloadPools[0].strideBytes", "1024"),
    ("tensor_header.bin", "dtype", "FLOAT32"),
    (
        "timestamp_map.bin",
        "rules[0].timestampSource",
        "FRAME_DESCRIPTOR",
    ),
    ("timestamp_request.bin", "outStreamId", "2001"),
    ("trace_link_set.bin", "parents[1].traceId", "8738"),
];

#[test]
fn golden_messages_of_the_c_implementation() {
    let Some(dir) = shared_golden_dir() else { return };
    for (file, path, want) in GOLDEN_MESSAGES {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let m = decode_exact(&bytes).unwrap_or_else(|e| panic!("{file}: {e}"));
        check_expectation(&m, path, want);
        fields_hold_their_bytes(file, &bytes, &m);
        assert_eq!(m.encode().unwrap(), bytes, "{file} re-encodes");
        truncations_fail(file, &bytes);
    }
    let announce =
        ShmPoolAnnounce::decode(&std::fs::read(dir.join("shm_pool_announce.bin")).unwrap()).unwrap();
    assert_eq!((announce.header_nslots, announce.pools.len()), (8, 1));
    assert_eq!(announce.header_region_uri, "shm:///tmp/header");
}

#[test]
fn golden_fuzz_seed_out_of_schema_order_is_an_error_not_a_panic() {
    // discovery_response.bin puts errorMessage before the results group (spec digest §4.3).
    let Some(dir) = shared_golden_dir() else { return };
    let bytes = std::fs::read(dir.join("discovery_response.bin")).unwrap();
    assert!(decode_exact(&bytes).is_err());
    for n in 0..bytes.len() {
        let _ = decode(&bytes[..n]);
    }
    // The non-message seeds are not messages either, and say why.
    for file in [
        "shm_uri.bin",
        "shm_uri_validate.bin",
        "progress.bin",
        "claim.bin",
        "superblock.bin",
    ] {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        assert!(decode_exact(&bytes).is_err(), "{file}");
    }
}

// ---------------------------------------------------------------------------------------------
// Conformance items (§7) about the codecs.

fn vector(name: &str) -> Vec<u8> {
    read_vector(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/vectors/{name}.hex"))).0
}

fn with_header(mut bytes: Vec<u8>, at: usize, v: u16) -> Vec<u8> {
    bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
    bytes
}

#[test]
fn d_4_4a_1_gate_on_schema_template_version_and_block_length() {
    let ok = vector("attach_request");
    assert!(decode_exact(&ok).is_ok());
    // blockLength one more or one less than 27.
    for bl in [26, 28] {
        assert!(matches!(
            decode_exact(&with_header(ok.clone(), 0, bl)),
            Err(CodecError::BlockLength { got, want: 27, .. }) if got == bl
        ));
    }
    assert!(matches!(
        decode_exact(&with_header(ok.clone(), 2, 99)),
        Err(CodecError::UnknownTemplate {
            schema: 901,
            template: 99
        })
    ));
    assert_eq!(
        decode_exact(&with_header(ok.clone(), 4, 905)).unwrap_err(),
        CodecError::UnknownSchema(905)
    );
    assert!(matches!(
        decode_exact(&with_header(ok.clone(), 6, 2)),
        Err(CodecError::Version { got: 2, max: 1, .. })
    ));
    assert!(
        matches!(
            decode_exact(&with_header(ok, 6, 0)),
            Err(CodecError::Version { got: 0, max: 1, .. })
        ),
        "version 0 never existed: refused, not re-encoded as 1"
    );
}

#[test]
fn ds_4_2_1_decoders_gate_on_schema_and_template_when_streams_are_shared() {
    // The same template id means different messages in different schemas: the schema id decides.
    let request = decode_exact(&vector("discovery_request_tags")).unwrap();
    let attach = decode_exact(&vector("attach_request")).unwrap();
    assert_eq!((request.def.template_id, attach.def.template_id), (1, 1));
    assert_eq!(
        (request.def.name.as_str(), attach.def.name.as_str()),
        ("DiscoveryRequest", "ShmAttachRequest")
    );
    // A discovery request relabelled as the driver schema fails closed on its block length.
    let relabelled = with_header(vector("discovery_request_tags"), 4, 901);
    assert!(matches!(
        decode_exact(&relabelled),
        Err(CodecError::BlockLength { .. })
    ));
    // The typed decoders refuse other schemas and templates.
    assert!(FrameDescriptor::decode(&vector("frame_progress")).is_err());
    assert!(FrameDescriptor::decode(&with_header(vector("frame_descriptor_traced"), 4, 901)).is_err());
}

#[test]
fn item_86_discovery_tags_are_written_with_group_block_length_zero() {
    let mut m = Message::new("discovery", "DiscoveryRequest").unwrap();
    m.set("requestId", 1)
        .unwrap()
        .set("clientId", 2)
        .unwrap()
        .set("responseStreamId", 7004)
        .unwrap();
    m.set_data("responseChannel", "aeron:ipc").unwrap();
    m.push_entry("tags").unwrap().data[0] = b"tag1".to_vec();
    let bytes = m.encode().unwrap();
    // Header 8 + block 32, then the tags group header: blockLength 0, one entry; u32 4 + "tag1".
    assert_eq!(&bytes[40..52], &[0, 0, 1, 0, 4, 0, 0, 0, b't', b'a', b'g', b'1']);
    assert_eq!(decode_exact(&bytes).unwrap(), m);
    // A 4-byte tags block (what a generator reading the schema naively writes) is refused.
    let mut four = bytes.clone();
    four[40] = 4;
    assert!(matches!(
        decode_exact(&four),
        Err(CodecError::BlockLength { got: 4, want: 0, .. })
    ));
}

#[test]
fn item_87_a_v11_frame_descriptor_is_rejected_by_v12_readers() {
    let v11 = vector("frame_descriptor_v11");
    assert_eq!(
        FrameDescriptor::decode(&v11).unwrap_err(),
        CodecError::Legacy {
            message: "FrameDescriptor".into(),
            block_length: 36
        }
    );
    assert!(matches!(
        FrameProgress::decode(&vector("frame_progress_v11")),
        Err(CodecError::Legacy { block_length: 33, .. })
    ));
    // The generic decoder still shows what it holds, marked as the legacy layout.
    let m = decode_exact(&v11).unwrap();
    assert_eq!((m.def.legacy, m.int("headerIndex")), (Some("v1.1"), Some(1)));
    // Any other block length is neither.
    assert!(matches!(
        FrameDescriptor::decode(&with_header(vector("frame_descriptor_traced"), 0, 44)),
        Err(CodecError::BlockLength { .. })
    ));
}

#[test]
fn tl_8_1_1_descriptor_trace_id_null_is_zero() {
    let traced = decode_exact(&vector("frame_descriptor_traced")).unwrap();
    assert_eq!(traced.int("traceId"), Some(0x0123456789ABCDEF));
    let untraced = decode_exact(&vector("frame_descriptor_untraced")).unwrap();
    assert_eq!(untraced.get("traceId"), Some(&Value::Null));
    // A fresh descriptor writes 0 there, not all-ones.
    let fresh = Message::new("wire", "FrameDescriptor").unwrap().encode().unwrap();
    assert_eq!(&fresh[8 + 32..], &[0u8; 8]);
    assert_eq!(&fresh[8 + 20..8 + 28], &[0xff; 8], "timestampNs null is all-ones");
    assert_eq!(FrameDescriptor::default().encode(), fresh.as_slice());
    // All-ones is a trace id like any other.
    let mut m = Message::new("bridge", "BridgeFrameChunk").unwrap();
    m.set("traceId", u64::MAX).unwrap();
    assert_eq!(
        decode_exact(&m.encode().unwrap()).unwrap().int("traceId"),
        Some(u64::MAX as i128)
    );
}

#[test]
fn typed_frame_messages_match_the_generic_codec() {
    for name in ["frame_descriptor_traced", "frame_descriptor_untraced"] {
        let bytes = vector(name);
        let d = FrameDescriptor::decode(&bytes).unwrap();
        assert_eq!(d.encode().as_slice(), bytes.as_slice(), "{name}");
    }
    let d = FrameDescriptor::decode(&vector("frame_descriptor_untraced")).unwrap();
    assert_eq!(
        (d.timestamp_ns, d.meta_version, d.trace_id),
        (Some(1_700_000_000_000_000_000), None, 0)
    );
    let p = FrameProgress::decode(&vector("frame_progress")).unwrap();
    assert_eq!(
        (p.seq, p.payload_bytes_filled, p.state),
        (99, 65536, ProgressState::Progress)
    );
    assert_eq!(p.encode().as_slice(), vector("frame_progress").as_slice());
    let mut bad_state = vector("frame_progress");
    bad_state[8 + 28] = 4;
    assert!(matches!(
        FrameProgress::decode(&bad_state),
        Err(CodecError::BadValue { value: 4, .. })
    ));
    assert!(decode_exact(&bad_state).is_err(), "the generic decoder agrees");
    let a = ShmPoolAnnounce::decode(&vector("shm_pool_announce")).unwrap();
    assert_eq!(
        a.pools[1].region_uri,
        "shm:file?path=/dev/shm/tp/10000/3/2.pool|require_hugepages=false"
    );
    assert_eq!(a.encode().unwrap(), vector("shm_pool_announce"));
}

/// Found by the `decode_any` fuzz target: a FrameDescriptor (and a FrameProgress) whose header
/// says version 0 was taken by the typed codec and written back as version 1.
#[test]
fn typed_frame_messages_refuse_version_zero_as_the_generic_codec_does() {
    let mut descriptor = hex("28 00 04 00 84 03 00 00");
    descriptor.extend([0u8; 40]);
    assert!(matches!(
        FrameDescriptor::decode(&descriptor),
        Err(CodecError::Version { got: 0, max: 1, .. })
    ));
    assert!(matches!(
        decode_exact(&descriptor),
        Err(CodecError::Version { got: 0, .. })
    ));
    let progress = with_header(vector("frame_progress"), 6, 0);
    assert!(matches!(
        FrameProgress::decode(&progress),
        Err(CodecError::Version { got: 0, max: 1, .. })
    ));
    assert!(decode_exact(&progress).is_err());
    let version_1 = with_header(descriptor, 6, 1);
    let d = FrameDescriptor::decode(&version_1).expect("the same bytes as version 1 decode");
    assert_eq!(d.encode().as_slice(), version_1.as_slice());
}

#[test]
fn w_15_17_1_control_response_codes_round_trip() {
    for (code, name) in [
        (0, "OK"),
        (1, "UNSUPPORTED"),
        (2, "INVALID_PARAMS"),
        (3, "REJECTED"),
        (4, "INTERNAL_ERROR"),
    ] {
        for (schema, message) in [
            ("wire", "ControlResponse"),
            ("driver", "ShmDetachResponse"),
            ("driver", "ShmAttachResponse"),
        ] {
            let mut m = Message::new(schema, message).unwrap();
            m.set("code", code).unwrap();
            let back = decode_exact(&m.encode().unwrap()).unwrap();
            assert_eq!(back.int("code"), Some(code), "{message} {name}");
            let text = xmem_tensorpool::codec::text::to_text(&back);
            assert!(text.contains(&format!("code: {code} ({name})")), "{text}");
        }
    }
}

#[test]
fn d_4_6_1_unknown_response_codes_are_rejected() {
    let mut bytes = vector("control_response_rejected");
    bytes[8 + 8..8 + 12].copy_from_slice(&5i32.to_le_bytes());
    assert!(matches!(
        decode_exact(&bytes),
        Err(CodecError::BadValue { value: 5, .. })
    ));
    let mut m = Message::new("wire", "ControlResponse").unwrap();
    m.set("code", -1).unwrap();
    assert!(m.encode().is_err(), "and never written");
}

#[test]
fn ds_5_0_1_optional_fields_use_the_null_value_and_strings_length_zero() {
    let m = decode_exact(&vector("discovery_request_no_tags")).unwrap();
    for f in ["streamId", "producerId", "dataSourceId"] {
        assert_eq!(m.get(f), Some(&Value::Null), "{f}");
    }
    let fresh = Message::new("discovery", "DiscoveryRequest")
        .unwrap()
        .encode()
        .unwrap();
    assert_eq!(&fresh[8 + 16..8 + 32], &[0xff; 16], "null filters are all-ones");
    assert_eq!(
        &fresh[8 + 32..],
        &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        "empty tags, two empty strings"
    );
    // An optional field cannot be set to its own null value by accident.
    let mut m = Message::new("discovery", "DiscoveryRequest").unwrap();
    m.set("streamId", u32::MAX).unwrap();
    assert!(matches!(m.encode(), Err(CodecError::BadValue { .. })));
}

#[test]
fn w_10_4_1_qos_absent_watermark_is_the_null_value() {
    let m = decode_exact(&vector("qos_producer_no_watermark")).unwrap();
    assert_eq!(m.get("watermark"), Some(&Value::Null));
    assert_eq!(&vector("qos_producer_no_watermark")[8 + 24..], &[0xff; 4]);
}

#[test]
fn w_10_3_1_data_source_and_meta_blob_messages_round_trip() {
    let mut meta = Message::new("wire", "DataSourceMeta").unwrap();
    meta.set("streamId", 10000)
        .unwrap()
        .set("metaVersion", 2)
        .unwrap();
    for (k, f, v) in [
        ("units", "text/plain", b"mm".to_vec()),
        ("calib", "application/msgpack", vec![0x92, 0x01, 0x02]),
    ] {
        let e = meta.push_entry("attributes").unwrap();
        e.data = vec![k.into(), f.into(), v];
    }
    let mut chunk = Message::new("wire", "MetaBlobChunk").unwrap();
    chunk
        .set("chunkOffset", 65536)
        .unwrap()
        .set_data("bytes", vec![7u8; 1000])
        .unwrap();
    let mut announce = Message::new("wire", "DataSourceAnnounce").unwrap();
    announce
        .set_data("name", "camera")
        .unwrap()
        .set_data("summary", "front")
        .unwrap();
    for m in [meta, chunk, announce] {
        let bytes = m.encode().unwrap();
        let back = decode_exact(&bytes).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.encode().unwrap(), bytes);
    }
}

#[test]
fn d_4_2_1_attach_request_and_response_encode_and_decode() {
    let req = decode_exact(&vector("attach_request")).unwrap();
    assert_eq!(
        (req.int("correlationId"), req.get("publishMode")),
        (Some(77), Some(&Value::Null))
    );
    let resp = decode_exact(&vector("attach_response_ok")).unwrap();
    assert_eq!(
        resp.int("correlationId"),
        req.int("correlationId"),
        "the correlation id is echoed"
    );
    assert_eq!(resp.group("payloadPools").unwrap().len(), 2);
    assert_eq!(resp.int("headerSlotBytes"), Some(256));
    let rejected = decode_exact(&vector("attach_response_rejected")).unwrap();
    assert_eq!(rejected.get("leaseId"), Some(&Value::Null));
    assert_eq!(
        rejected.data("errorMessage"),
        Some(&b"expectedLayoutVersion 2 is not 1"[..])
    );
}

#[test]
fn bridge_header_bytes_are_capped_at_256() {
    let mut m = Message::new("bridge", "BridgeFrameChunk").unwrap();
    m.set_data("headerBytes", vec![0u8; 257]).unwrap();
    assert!(matches!(
        m.encode(),
        Err(CodecError::DataTooLong {
            len: 257,
            max: 256,
            ..
        })
    ));
    let mut bytes = vector("bridge_frame_chunk");
    // headerBytes length at body offset 53: make it 257.
    bytes[8 + 53..8 + 57].copy_from_slice(&257u32.to_le_bytes());
    assert!(matches!(
        decode_exact(&bytes),
        Err(CodecError::DataTooLong { len: 257, .. })
    ));
    // chunkLength above its maxValue 65535.
    let mut bytes = vector("bridge_frame_chunk");
    bytes[8 + 40..8 + 44].copy_from_slice(&65536u32.to_le_bytes());
    assert!(matches!(
        decode_exact(&bytes),
        Err(CodecError::BadValue { value: 65536, .. })
    ));
}

#[test]
fn var_data_longer_than_the_input_is_truncation_not_allocation() {
    let mut bytes = vector("control_response_rejected");
    bytes[8 + 12..8 + 16].copy_from_slice(&(1u32 << 30).to_le_bytes());
    assert!(matches!(decode_exact(&bytes), Err(CodecError::Truncated { .. })));
    bytes[8 + 12..8 + 16].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        decode_exact(&bytes),
        Err(CodecError::DataTooLong { .. })
    ));
}

#[test]
fn json_names_enums_and_keeps_schema_order() {
    let m = decode_exact(&vector("shm_pool_announce")).unwrap();
    let j = xmem_tensorpool::codec::text::to_json(&m);
    assert_eq!(j["message"], "ShmPoolAnnounce");
    assert_eq!(j["fields"]["announceClockDomain"], "MONOTONIC");
    assert_eq!(j["fields"]["payloadPools"][1]["strideBytes"], 4096);
    let keys: Vec<&String> = j["fields"].as_object().unwrap().keys().collect();
    assert_eq!(keys.first().map(|s| s.as_str()), Some("streamId"));
    assert_eq!(keys.last().map(|s| s.as_str()), Some("headerRegionUri"));
    let chunk = decode_exact(&vector("bridge_frame_chunk")).unwrap();
    let j = xmem_tensorpool::codec::text::to_json(&chunk);
    assert_eq!(j["fields"]["payloadBytes"]["hex"], "0102030405060708");
    assert_eq!(j["fields"]["traceId"], serde_json::Value::Null);
}
