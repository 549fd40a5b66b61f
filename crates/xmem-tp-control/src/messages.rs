//! The control-plane messages a producer, consumer and supervisor exchange, typed, and the gate
//! every received message passes: schema id 900 (the wire schema), a template this side handles,
//! the exact block length; anything else is ignored (streams mix schemas 900–904 on 1000).

use xmem_tensorpool::codec::{
    decode_exact, peek_header, CodecError, FrameDescriptor, FrameProgress, Message, ShmPoolAnnounce,
    WIRE_SCHEMA_ID,
};

/// `Mode` of the wire schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every descriptor; late frames dropped.
    #[default]
    Stream,
    /// At most `max_rate_hz` descriptors a second, on a per-consumer stream.
    RateLimited,
}

impl Mode {
    fn wire(self) -> i128 {
        match self {
            Mode::Stream => 1,
            Mode::RateLimited => 2,
        }
    }

    fn from_wire(v: i128) -> Mode {
        if v == 2 {
            Mode::RateLimited
        } else {
            Mode::Stream
        }
    }
}

/// A per-consumer stream: a channel and a stream id, both set or neither (W-10.1.2-2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRequest {
    /// The Aeron channel.
    pub channel: String,
    /// The stream id (nonzero).
    pub stream_id: u32,
}

/// Reads a (channel, stream id) pair: both empty is "none", both set is a stream, one without
/// the other is refused (W-10.1.2-2, W-10.1.3-1).
fn stream_pair(
    field: &'static str,
    channel: &[u8],
    stream_id: u32,
) -> Result<Option<StreamRequest>, CodecError> {
    match (channel.is_empty(), stream_id) {
        (true, 0) => Ok(None),
        (false, id) if id != 0 => Ok(Some(StreamRequest {
            channel: String::from_utf8_lossy(channel).into_owned(),
            stream_id: id,
        })),
        _ => Err(CodecError::Shape(format!(
            "{field}: a per-consumer stream needs both a channel and a nonzero stream id, or neither"
        ))),
    }
}

fn pair_parts(s: &Option<StreamRequest>) -> (Vec<u8>, u32) {
    match s {
        Some(r) => (r.channel.as_bytes().to_vec(), r.stream_id),
        None => (Vec::new(), 0),
    }
}

/// ConsumerHello: a consumer says what it supports and asks (template 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerHello {
    /// The stream.
    pub stream_id: u32,
    /// The consumer.
    pub consumer_id: u32,
    /// It can map shared memory (else it needs the fallback).
    pub supports_shm: bool,
    /// It wants FrameProgress.
    pub supports_progress: bool,
    /// Its mode.
    pub mode: Mode,
    /// Most descriptors a second on a per-consumer stream (0: unlimited).
    pub max_rate_hz: u32,
    /// The layout version it speaks.
    pub expected_layout_version: u32,
    /// Progress: smallest interval (µs), bytes delta, major units delta; `None` is null.
    pub progress: [Option<u32>; 3],
    /// A per-consumer descriptor stream asked for.
    pub descriptor: Option<StreamRequest>,
    /// A per-consumer control stream asked for.
    pub control: Option<StreamRequest>,
}

/// ConsumerConfig: the answer of a producer's consumer manager or a supervisor (template 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// The stream.
    pub stream_id: u32,
    /// The consumer it is for.
    pub consumer_id: u32,
    /// Map shared memory (`false`: use `fallback_uri`).
    pub use_shm: bool,
    /// The mode granted.
    pub mode: Mode,
    /// The per-consumer descriptor stream granted (`None`: declined, stay on the shared one).
    pub descriptor: Option<StreamRequest>,
    /// The per-consumer control stream granted.
    pub control: Option<StreamRequest>,
    /// Where to get payloads when not from shared memory.
    pub fallback_uri: String,
}

/// QosProducer (template 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QosProducer {
    /// The stream.
    pub stream_id: u32,
    /// The producer.
    pub producer_id: u32,
    /// Its epoch.
    pub epoch: u64,
    /// Its next sequence number.
    pub current_seq: u64,
    /// Optional watermark (`None` is the null).
    pub watermark: Option<u32>,
}

/// QosConsumer (template 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QosConsumer {
    /// The stream.
    pub stream_id: u32,
    /// The consumer.
    pub consumer_id: u32,
    /// The epoch it has mapped.
    pub epoch: u64,
    /// The highest sequence it saw.
    pub last_seq_seen: u64,
    /// Frames skipped (sequence gaps).
    pub drops_gap: u64,
    /// Frames overwritten or torn before it read them.
    pub drops_late: u64,
    /// Its mode.
    pub mode: Mode,
}

/// DataSourceAnnounce (template 7): what the stream is, for people and tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSourceAnnounce {
    /// The stream.
    pub stream_id: u32,
    /// The producer.
    pub producer_id: u32,
    /// Its epoch.
    pub epoch: u64,
    /// Version of the metadata.
    pub meta_version: u32,
    /// A short name.
    pub name: String,
    /// A line of description.
    pub summary: String,
}

/// DataSourceMeta (template 8): key, format, value attributes of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSourceMeta {
    /// The stream.
    pub stream_id: u32,
    /// Version of the metadata.
    pub meta_version: u32,
    /// When it was set.
    pub timestamp_ns: u64,
    /// `(key, format, value)`, format like `text/plain` or `application/json`.
    pub attributes: Vec<(String, String, Vec<u8>)>,
}

/// A wire-schema message this crate handles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Template 1.
    Announce(ShmPoolAnnounce),
    /// Template 2.
    Hello(ConsumerHello),
    /// Template 3.
    Config(ConsumerConfig),
    /// Template 4.
    Descriptor(FrameDescriptor),
    /// Template 11.
    Progress(FrameProgress),
    /// Template 5.
    QosConsumer(QosConsumer),
    /// Template 6.
    QosProducer(QosProducer),
    /// Template 7.
    DataSource(DataSourceAnnounce),
    /// Template 8.
    Meta(DataSourceMeta),
}

/// Why a received message was not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ignored {
    /// Another schema's (driver, bridge, join barrier, trace link, discovery): not ours to read.
    OtherSchema(u16),
    /// A wire template this side does not handle (ControlResponse, MetaBlob…).
    OtherTemplate(u16),
    /// Bytes that fail the codec's checks.
    Malformed(CodecError),
}

fn bool_of(m: &Message, f: &str) -> bool {
    m.int(f) == Some(1)
}

fn u32_of(m: &Message, f: &str) -> u32 {
    m.int(f).unwrap_or(0) as u32
}

fn u64_of(m: &Message, f: &str) -> u64 {
    m.int(f).unwrap_or(0) as u64
}

fn opt_u32(m: &Message, f: &str) -> Option<u32> {
    m.int(f).map(|v| v as u32)
}

fn text(m: &Message, d: &str) -> String {
    String::from_utf8_lossy(m.data(d).unwrap_or_default()).into_owned()
}

/// Decodes one received message, or says why it is not taken. Never panics.
pub fn decode(bytes: &[u8]) -> Result<Incoming, Ignored> {
    let header = peek_header(bytes).map_err(Ignored::Malformed)?;
    if header.schema_id != WIRE_SCHEMA_ID {
        return Err(Ignored::OtherSchema(header.schema_id));
    }
    let malformed = Ignored::Malformed;
    match header.template_id {
        1 => ShmPoolAnnounce::decode(bytes)
            .map(Incoming::Announce)
            .map_err(malformed),
        4 => FrameDescriptor::decode(bytes)
            .map(Incoming::Descriptor)
            .map_err(malformed),
        11 => FrameProgress::decode(bytes)
            .map(Incoming::Progress)
            .map_err(malformed),
        2 | 3 | 5 | 6 | 7 | 8 => {
            let m = decode_exact(bytes).map_err(malformed)?;
            from_message(&m).map_err(malformed)
        }
        t => Err(Ignored::OtherTemplate(t)),
    }
}

fn from_message(m: &Message) -> Result<Incoming, CodecError> {
    Ok(match m.def.name.as_str() {
        "ConsumerHello" => Incoming::Hello(ConsumerHello {
            stream_id: u32_of(m, "streamId"),
            consumer_id: u32_of(m, "consumerId"),
            supports_shm: bool_of(m, "supportsShm"),
            supports_progress: bool_of(m, "supportsProgress"),
            mode: Mode::from_wire(m.int("mode").unwrap_or(1)),
            max_rate_hz: u32_of(m, "maxRateHz"),
            expected_layout_version: u32_of(m, "expectedLayoutVersion"),
            progress: [
                opt_u32(m, "progressIntervalUs"),
                opt_u32(m, "progressBytesDelta"),
                opt_u32(m, "progressMajorDeltaUnits"),
            ],
            descriptor: stream_pair(
                "descriptor",
                m.data("descriptorChannel").unwrap_or_default(),
                u32_of(m, "descriptorStreamId"),
            )?,
            control: stream_pair(
                "control",
                m.data("controlChannel").unwrap_or_default(),
                u32_of(m, "controlStreamId"),
            )?,
        }),
        "ConsumerConfig" => Incoming::Config(ConsumerConfig {
            stream_id: u32_of(m, "streamId"),
            consumer_id: u32_of(m, "consumerId"),
            use_shm: bool_of(m, "useShm"),
            mode: Mode::from_wire(m.int("mode").unwrap_or(1)),
            descriptor: stream_pair(
                "descriptor",
                m.data("descriptorChannel").unwrap_or_default(),
                u32_of(m, "descriptorStreamId"),
            )?,
            control: stream_pair(
                "control",
                m.data("controlChannel").unwrap_or_default(),
                u32_of(m, "controlStreamId"),
            )?,
            fallback_uri: text(m, "payloadFallbackUri"),
        }),
        "QosConsumer" => Incoming::QosConsumer(QosConsumer {
            stream_id: u32_of(m, "streamId"),
            consumer_id: u32_of(m, "consumerId"),
            epoch: u64_of(m, "epoch"),
            last_seq_seen: u64_of(m, "lastSeqSeen"),
            drops_gap: u64_of(m, "dropsGap"),
            drops_late: u64_of(m, "dropsLate"),
            mode: Mode::from_wire(m.int("mode").unwrap_or(1)),
        }),
        "QosProducer" => Incoming::QosProducer(QosProducer {
            stream_id: u32_of(m, "streamId"),
            producer_id: u32_of(m, "producerId"),
            epoch: u64_of(m, "epoch"),
            current_seq: u64_of(m, "currentSeq"),
            watermark: opt_u32(m, "watermark"),
        }),
        "DataSourceAnnounce" => Incoming::DataSource(DataSourceAnnounce {
            stream_id: u32_of(m, "streamId"),
            producer_id: u32_of(m, "producerId"),
            epoch: u64_of(m, "epoch"),
            meta_version: u32_of(m, "metaVersion"),
            name: text(m, "name"),
            summary: text(m, "summary"),
        }),
        "DataSourceMeta" => Incoming::Meta(DataSourceMeta {
            stream_id: u32_of(m, "streamId"),
            meta_version: u32_of(m, "metaVersion"),
            timestamp_ns: u64_of(m, "timestampNs"),
            attributes: m
                .group("attributes")
                .unwrap_or_default()
                .iter()
                .map(|e| {
                    let s =
                        |i: usize| String::from_utf8_lossy(e.data.get(i).map_or(&[][..], |d| d)).into_owned();
                    (s(0), s(1), e.data.get(2).cloned().unwrap_or_default())
                })
                .collect(),
        }),
        other => return Err(CodecError::Shape(format!("{other} is not handled here"))),
    })
}

fn wire(name: &str) -> Message {
    Message::new("wire", name).expect("the wire schema has the messages this crate sends")
}

fn set(m: &mut Message, field: &str, v: impl Into<i128>) {
    m.set(field, v).expect("the field exists in the wire schema");
}

fn set_data(m: &mut Message, field: &str, v: impl Into<Vec<u8>>) {
    m.set_data(field, v)
        .expect("the var data exists in the wire schema");
}

fn set_opt(m: &mut Message, field: &str, v: Option<u32>) {
    match v {
        Some(v) => set(m, field, v),
        None => {
            m.set_null(field).expect("the optional field exists");
        }
    }
}

impl ConsumerHello {
    /// Encodes it (a half-set stream request cannot be built: [`StreamRequest`] has both).
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut m = wire("ConsumerHello");
        set(&mut m, "streamId", self.stream_id);
        set(&mut m, "consumerId", self.consumer_id);
        set(&mut m, "supportsShm", u8::from(self.supports_shm));
        set(&mut m, "supportsProgress", u8::from(self.supports_progress));
        set(&mut m, "mode", self.mode.wire());
        set(&mut m, "maxRateHz", self.max_rate_hz);
        set(&mut m, "expectedLayoutVersion", self.expected_layout_version);
        set_opt(&mut m, "progressIntervalUs", self.progress[0]);
        set_opt(&mut m, "progressBytesDelta", self.progress[1]);
        set_opt(&mut m, "progressMajorDeltaUnits", self.progress[2]);
        let (dc, di) = pair_parts(&self.descriptor);
        let (cc, ci) = pair_parts(&self.control);
        set(&mut m, "descriptorStreamId", di);
        set(&mut m, "controlStreamId", ci);
        set_data(&mut m, "descriptorChannel", dc);
        set_data(&mut m, "controlChannel", cc);
        m.encode()
    }
}

impl ConsumerConfig {
    /// Encodes it.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut m = wire("ConsumerConfig");
        set(&mut m, "streamId", self.stream_id);
        set(&mut m, "consumerId", self.consumer_id);
        set(&mut m, "useShm", u8::from(self.use_shm));
        set(&mut m, "mode", self.mode.wire());
        let (dc, di) = pair_parts(&self.descriptor);
        let (cc, ci) = pair_parts(&self.control);
        set(&mut m, "descriptorStreamId", di);
        set(&mut m, "controlStreamId", ci);
        set_data(
            &mut m,
            "payloadFallbackUri",
            self.fallback_uri.as_bytes().to_vec(),
        );
        set_data(&mut m, "descriptorChannel", dc);
        set_data(&mut m, "controlChannel", cc);
        m.encode()
    }
}

impl QosProducer {
    /// Encodes it.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut m = wire("QosProducer");
        set(&mut m, "streamId", self.stream_id);
        set(&mut m, "producerId", self.producer_id);
        set(&mut m, "epoch", self.epoch);
        set(&mut m, "currentSeq", self.current_seq);
        set_opt(&mut m, "watermark", self.watermark);
        m.encode()
    }
}

impl QosConsumer {
    /// Encodes it.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut m = wire("QosConsumer");
        set(&mut m, "streamId", self.stream_id);
        set(&mut m, "consumerId", self.consumer_id);
        set(&mut m, "epoch", self.epoch);
        set(&mut m, "lastSeqSeen", self.last_seq_seen);
        set(&mut m, "dropsGap", self.drops_gap);
        set(&mut m, "dropsLate", self.drops_late);
        set(&mut m, "mode", self.mode.wire());
        m.encode()
    }
}

impl DataSourceAnnounce {
    /// Encodes it.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut m = wire("DataSourceAnnounce");
        set(&mut m, "streamId", self.stream_id);
        set(&mut m, "producerId", self.producer_id);
        set(&mut m, "epoch", self.epoch);
        set(&mut m, "metaVersion", self.meta_version);
        set_data(&mut m, "name", self.name.as_bytes().to_vec());
        set_data(&mut m, "summary", self.summary.as_bytes().to_vec());
        m.encode()
    }
}

impl DataSourceMeta {
    /// Encodes it.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut m = wire("DataSourceMeta");
        set(&mut m, "streamId", self.stream_id);
        set(&mut m, "metaVersion", self.meta_version);
        set(&mut m, "timestampNs", self.timestamp_ns);
        for (k, f, v) in &self.attributes {
            let e = m.push_entry("attributes")?;
            e.data[0] = k.as_bytes().to_vec();
            e.data[1] = f.as_bytes().to_vec();
            e.data[2] = v.clone();
        }
        m.encode()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello() -> ConsumerHello {
        ConsumerHello {
            stream_id: 10000,
            consumer_id: 7,
            supports_shm: true,
            supports_progress: false,
            mode: Mode::RateLimited,
            max_rate_hz: 30,
            expected_layout_version: 1,
            progress: [None, Some(65536), None],
            descriptor: Some(StreamRequest {
                channel: "aeron:ipc?term-length=4m".into(),
                stream_id: 31007,
            }),
            control: None,
        }
    }

    #[test]
    fn every_message_sent_reads_back_the_same() {
        let h = hello();
        assert_eq!(decode(&h.encode().unwrap()), Ok(Incoming::Hello(h.clone())));
        let c = ConsumerConfig {
            stream_id: 10000,
            consumer_id: 7,
            use_shm: false,
            mode: Mode::Stream,
            descriptor: None,
            control: Some(StreamRequest {
                channel: "aeron:ipc".into(),
                stream_id: 32007,
            }),
            fallback_uri: "aeron:udp?endpoint=10.0.0.2:40000".into(),
        };
        assert_eq!(decode(&c.encode().unwrap()), Ok(Incoming::Config(c.clone())));
        let q = QosProducer {
            stream_id: 1,
            producer_id: 2,
            epoch: 3,
            current_seq: 4,
            watermark: None,
        };
        assert_eq!(decode(&q.encode().unwrap()), Ok(Incoming::QosProducer(q)));
        let q = QosConsumer {
            stream_id: 1,
            consumer_id: 2,
            epoch: 3,
            last_seq_seen: 4,
            drops_gap: 5,
            drops_late: 6,
            mode: Mode::Stream,
        };
        assert_eq!(decode(&q.encode().unwrap()), Ok(Incoming::QosConsumer(q)));
        let d = DataSourceAnnounce {
            stream_id: 1,
            producer_id: 2,
            epoch: 3,
            meta_version: 4,
            name: "cam1".into(),
            summary: "1080p RGB".into(),
        };
        assert_eq!(decode(&d.encode().unwrap()), Ok(Incoming::DataSource(d.clone())));
        let m = DataSourceMeta {
            stream_id: 1,
            meta_version: 4,
            timestamp_ns: 5,
            attributes: vec![("fps".into(), "text/plain".into(), b"30".to_vec())],
        };
        assert_eq!(decode(&m.encode().unwrap()), Ok(Incoming::Meta(m.clone())));
    }

    /// W-10.1.2-2: a per-consumer request with a channel but no id (or an id but no channel) is
    /// refused on receipt; the typed request cannot be half-set on send.
    #[test]
    fn w_10_1_2_2_half_set_per_consumer_requests_are_refused() {
        for (channel, id) in [("aeron:ipc", 0u32), ("", 31001)] {
            let mut m = wire("ConsumerHello");
            set(&mut m, "streamId", 1u32);
            set(&mut m, "mode", 1);
            set(&mut m, "descriptorStreamId", id);
            set_data(&mut m, "descriptorChannel", channel.as_bytes().to_vec());
            match decode(&m.encode().unwrap()) {
                Err(Ignored::Malformed(CodecError::Shape(s))) => assert!(s.contains("both"), "{s}"),
                other => panic!("{channel:?}/{id}: {other:?}"),
            }
        }
    }

    proptest::proptest! {
        /// Nothing read from the wire is trusted: any bytes, and any mutation of a valid
        /// message, are judged (taken or ignored) without a panic.
        #[test]
        fn any_bytes_are_judged_without_a_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = decode(&bytes);
            let _ = crate::trace::TraceLinkSet::decode(&bytes);
        }

        #[test]
        fn mutated_messages_are_judged_without_a_panic(at in 0usize..120, to in proptest::num::u8::ANY, cut in 0usize..140) {
            let mut b = hello().encode().unwrap();
            let at = at % b.len();
            b[at] = to;
            b.truncate(cut.min(b.len()));
            let _ = decode(&b);
        }
    }

    /// DS-4.2-1 / D-4.4a-1 on a shared stream: another schema's message and a template not handled
    /// here are ignored, not errors.
    #[test]
    fn other_schemas_and_templates_are_ignored() {
        let mut m = Message::new("driver", "ShmLeaseKeepalive").unwrap();
        m.set("streamId", 1).unwrap();
        assert_eq!(decode(&m.encode().unwrap()), Err(Ignored::OtherSchema(901)));
        let r = wire("ControlResponse").encode().unwrap();
        assert_eq!(decode(&r), Err(Ignored::OtherTemplate(9)));
        assert!(matches!(decode(&[1, 2, 3]), Err(Ignored::Malformed(_))));
    }
}
