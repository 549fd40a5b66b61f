//! Typed messages for the ones a producer and consumer handle themselves.
//!
//! [`FrameDescriptor`] and [`FrameProgress`] travel once per frame, so they have fixed-offset
//! codecs that allocate nothing; the tests check them byte for byte against the generic codec.
//! [`ShmPoolAnnounce`] converts to and from the generic [`Message`].

use super::{
    decode_exact, peek_header, CodecError, Entry, Message, Value, MESSAGE_HEADER_LEN, WIRE_SCHEMA_ID,
};

const FRAME_DESCRIPTOR_TEMPLATE: u16 = 4;
const FRAME_DESCRIPTOR_BLOCK: u16 = 40;
const FRAME_DESCRIPTOR_V11_BLOCK: u16 = 36;
const FRAME_PROGRESS_TEMPLATE: u16 = 11;
const FRAME_PROGRESS_BLOCK: u16 = 29;
const FRAME_PROGRESS_V11_BLOCK: u16 = 33;

/// "Frame `seq` is committed in the ring": the frame-available signal (wire template 4, v1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameDescriptor {
    /// The stream.
    pub stream_id: u32,
    /// The epoch of the regions the frame is in.
    pub epoch: u64,
    /// The frame's sequence number; its slot is `seq & (nslots - 1)`.
    pub seq: u64,
    /// Publish time (null by default; the slot holds the capture time).
    pub timestamp_ns: Option<u64>,
    /// Version of the stream's metadata the frame goes with.
    pub meta_version: Option<u32>,
    /// Trace id, 0 when the frame is not traced (this field's null is 0, not all-ones).
    pub trace_id: u64,
}

impl FrameDescriptor {
    /// Bytes of an encoded descriptor, header included.
    pub const ENCODED_LEN: usize = MESSAGE_HEADER_LEN + FRAME_DESCRIPTOR_BLOCK as usize;

    /// Writes the descriptor with its header.
    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut b = [0u8; Self::ENCODED_LEN];
        put_header(&mut b, FRAME_DESCRIPTOR_BLOCK, FRAME_DESCRIPTOR_TEMPLATE);
        let body = &mut b[MESSAGE_HEADER_LEN..];
        body[0..4].copy_from_slice(&self.stream_id.to_le_bytes());
        body[4..12].copy_from_slice(&self.epoch.to_le_bytes());
        body[12..20].copy_from_slice(&self.seq.to_le_bytes());
        body[20..28].copy_from_slice(&self.timestamp_ns.unwrap_or(u64::MAX).to_le_bytes());
        body[28..32].copy_from_slice(&self.meta_version.unwrap_or(u32::MAX).to_le_bytes());
        body[32..40].copy_from_slice(&self.trace_id.to_le_bytes());
        b
    }

    /// Reads a v1.2 descriptor; a v1.1 one (blockLength 36) is refused with
    /// [`CodecError::Legacy`]. Bytes after the message are ignored.
    pub fn decode(b: &[u8]) -> Result<FrameDescriptor, CodecError> {
        let body = typed_body(
            b,
            "FrameDescriptor",
            FRAME_DESCRIPTOR_TEMPLATE,
            FRAME_DESCRIPTOR_BLOCK,
            FRAME_DESCRIPTOR_V11_BLOCK,
        )?;
        let ts = u64_at(body, 20);
        let meta = u32_at(body, 28);
        Ok(FrameDescriptor {
            stream_id: u32_at(body, 0),
            epoch: u64_at(body, 4),
            seq: u64_at(body, 12),
            timestamp_ns: (ts != u64::MAX).then_some(ts),
            meta_version: (meta != u32::MAX).then_some(meta),
            trace_id: u64_at(body, 32),
        })
    }
}

/// Where a frame's writing stands (wire enum `FrameProgressState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum ProgressState {
    /// Not said.
    #[default]
    Unknown = 0,
    /// Writing started.
    Started = 1,
    /// Part of the payload is filled.
    Progress = 2,
    /// The payload is filled (the seqlock must still pass).
    Complete = 3,
}

/// A hint of how much of frame `seq` is written (wire template 11, v1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FrameProgress {
    /// The stream.
    pub stream_id: u32,
    /// The epoch.
    pub epoch: u64,
    /// The frame.
    pub seq: u64,
    /// Bytes of the payload written so far; never goes down within a frame.
    pub payload_bytes_filled: u64,
    /// The stage.
    pub state: ProgressState,
}

impl FrameProgress {
    /// Bytes of an encoded progress message, header included.
    pub const ENCODED_LEN: usize = MESSAGE_HEADER_LEN + FRAME_PROGRESS_BLOCK as usize;

    /// Writes the message with its header.
    pub fn encode(&self) -> [u8; Self::ENCODED_LEN] {
        let mut b = [0u8; Self::ENCODED_LEN];
        put_header(&mut b, FRAME_PROGRESS_BLOCK, FRAME_PROGRESS_TEMPLATE);
        let body = &mut b[MESSAGE_HEADER_LEN..];
        body[0..4].copy_from_slice(&self.stream_id.to_le_bytes());
        body[4..12].copy_from_slice(&self.epoch.to_le_bytes());
        body[12..20].copy_from_slice(&self.seq.to_le_bytes());
        body[20..28].copy_from_slice(&self.payload_bytes_filled.to_le_bytes());
        body[28] = self.state as u8;
        b
    }

    /// Reads a v1.2 message; v1.1 (blockLength 33) is refused with [`CodecError::Legacy`].
    pub fn decode(b: &[u8]) -> Result<FrameProgress, CodecError> {
        let body = typed_body(
            b,
            "FrameProgress",
            FRAME_PROGRESS_TEMPLATE,
            FRAME_PROGRESS_BLOCK,
            FRAME_PROGRESS_V11_BLOCK,
        )?;
        let state = match body[28] {
            0 => ProgressState::Unknown,
            1 => ProgressState::Started,
            2 => ProgressState::Progress,
            3 => ProgressState::Complete,
            v => {
                return Err(CodecError::BadValue {
                    field: "FrameProgress.state".into(),
                    value: v.into(),
                    why: "not a valid FrameProgressState".into(),
                })
            }
        };
        Ok(FrameProgress {
            stream_id: u32_at(body, 0),
            epoch: u64_at(body, 4),
            seq: u64_at(body, 12),
            payload_bytes_filled: u64_at(body, 20),
            state,
        })
    }
}

/// One payload pool of an announce.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PoolAnnounce {
    /// The pool's id (1 and up; 0 is the header ring).
    pub pool_id: u16,
    /// Its slots (equal to the ring's).
    pub nslots: u32,
    /// Bytes per slot, a multiple of 64.
    pub stride_bytes: u32,
    /// `shm:file?path=…` of its region.
    pub region_uri: String,
}

/// The regions of a stream and their geometry (wire template 1): soft state, sent about 1 Hz.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShmPoolAnnounce {
    /// The stream.
    pub stream_id: u32,
    /// The producer's lease id, 0 without a driver.
    pub producer_id: u32,
    /// The epoch of the regions.
    pub epoch: u64,
    /// When it was sent.
    pub announce_timestamp_ns: u64,
    /// Clock of the time stamps: 1 MONOTONIC, 2 REALTIME_SYNCED.
    pub announce_clock_domain: u8,
    /// Layout version (1).
    pub layout_version: u32,
    /// Slots of the header ring (a power of two).
    pub header_nslots: u32,
    /// Bytes per header slot (256).
    pub header_slot_bytes: u16,
    /// The payload pools.
    pub pools: Vec<PoolAnnounce>,
    /// `shm:file?path=…` of the header ring.
    pub header_region_uri: String,
}

impl ShmPoolAnnounce {
    /// As a generic message.
    pub fn to_message(&self) -> Message {
        let mut m = Message::new("wire", "ShmPoolAnnounce").expect("the wire schema has ShmPoolAnnounce");
        let ints: [(&str, i128); 8] = [
            ("streamId", self.stream_id.into()),
            ("producerId", self.producer_id.into()),
            ("epoch", self.epoch.into()),
            ("announceTimestampNs", self.announce_timestamp_ns.into()),
            ("announceClockDomain", self.announce_clock_domain.into()),
            ("layoutVersion", self.layout_version.into()),
            ("headerNslots", self.header_nslots.into()),
            ("headerSlotBytes", self.header_slot_bytes.into()),
        ];
        for (name, v) in ints {
            m.set(name, v).expect("field of ShmPoolAnnounce");
        }
        for p in &self.pools {
            let e = m.push_entry("payloadPools").expect("group of ShmPoolAnnounce");
            e.fields = vec![
                Value::Int(p.pool_id.into()),
                Value::Int(p.nslots.into()),
                Value::Int(p.stride_bytes.into()),
            ];
            e.data = vec![p.region_uri.as_bytes().to_vec()];
        }
        m.set_data("headerRegionUri", self.header_region_uri.as_bytes())
            .expect("var data of ShmPoolAnnounce");
        m
    }

    /// Encodes it with its header.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        self.to_message().encode()
    }

    /// Reads one from a generic message.
    pub fn from_message(m: &Message) -> Result<ShmPoolAnnounce, CodecError> {
        if m.def.schema_id != WIRE_SCHEMA_ID || m.def.name != "ShmPoolAnnounce" {
            return Err(CodecError::Shape(format!(
                "{} is not a ShmPoolAnnounce",
                m.def.name
            )));
        }
        let int = |e: &Entry, i: usize| e.fields[i].as_int().unwrap_or(0);
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let b = &m.body;
        Ok(ShmPoolAnnounce {
            stream_id: int(b, 0) as u32,
            producer_id: int(b, 1) as u32,
            epoch: int(b, 2) as u64,
            announce_timestamp_ns: int(b, 3) as u64,
            announce_clock_domain: int(b, 4) as u8,
            layout_version: int(b, 5) as u32,
            header_nslots: int(b, 6) as u32,
            header_slot_bytes: int(b, 7) as u16,
            pools: b.groups[0]
                .iter()
                .map(|e| PoolAnnounce {
                    pool_id: int(e, 0) as u16,
                    nslots: int(e, 1) as u32,
                    stride_bytes: int(e, 2) as u32,
                    region_uri: text(&e.data[0]),
                })
                .collect(),
            header_region_uri: text(&b.data[0]),
        })
    }

    /// Decodes exactly one announce.
    pub fn decode(b: &[u8]) -> Result<ShmPoolAnnounce, CodecError> {
        ShmPoolAnnounce::from_message(&decode_exact(b)?)
    }
}

fn put_header(b: &mut [u8], block: u16, template: u16) {
    b[0..2].copy_from_slice(&block.to_le_bytes());
    b[2..4].copy_from_slice(&template.to_le_bytes());
    b[4..6].copy_from_slice(&WIRE_SCHEMA_ID.to_le_bytes());
    b[6..8].copy_from_slice(&1u16.to_le_bytes());
}

/// The body of a typed wire message after its header is checked exactly.
fn typed_body<'a>(
    b: &'a [u8],
    name: &str,
    template: u16,
    block: u16,
    v11_block: u16,
) -> Result<&'a [u8], CodecError> {
    let h = peek_header(b)?;
    if h.schema_id != WIRE_SCHEMA_ID {
        return Err(CodecError::UnknownSchema(h.schema_id));
    }
    if h.template_id != template {
        return Err(CodecError::Shape(format!(
            "template {} is not {name} ({template})",
            h.template_id
        )));
    }
    // The wire schema has only version 1 (see `layout_of` in wire.rs for why 0 is refused).
    if h.version != 1 {
        return Err(CodecError::Version {
            message: name.into(),
            got: h.version,
            max: 1,
        });
    }
    if h.block_length == v11_block {
        return Err(CodecError::Legacy {
            message: name.into(),
            block_length: h.block_length,
        });
    }
    if h.block_length != block {
        return Err(CodecError::BlockLength {
            what: name.into(),
            got: h.block_length,
            want: block,
        });
    }
    let end = MESSAGE_HEADER_LEN + block as usize;
    if b.len() < end {
        return Err(CodecError::Truncated {
            what: format!("{name}: fixed block"),
            at: MESSAGE_HEADER_LEN,
            need: block as usize,
            got: b.len() - MESSAGE_HEADER_LEN,
        });
    }
    Ok(&b[MESSAGE_HEADER_LEN..end])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
