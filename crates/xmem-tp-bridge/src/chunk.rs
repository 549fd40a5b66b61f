//! `BridgeFrameChunk` (bridge schema 902, template 1, block 53) at fixed offsets, borrowing the
//! payload bytes instead of copying them (a 1080p frame is ~5000 chunks), checked against the
//! schema codec by the tests. And cutting one frame into chunks (tensor-pool digest §6).

use xmem_tensorpool::codec::{peek_header, BRIDGE_SCHEMA_ID, MESSAGE_HEADER_LEN};
use xmem_tensorpool::layout::SLOT_SIZE;

/// The fixed block's length.
pub const CHUNK_BLOCK: u16 = 53;
/// Most chunks of one frame (chunkIndex and chunkCount are ≤ 65535).
pub const MAX_CHUNKS: u32 = 65_535;
/// Most payload bytes in one chunk.
pub const MAX_CHUNK_BYTES: u32 = 65_535;
/// Bytes of a chunk besides its payload: header, block, two length prefixes (and chunk 0's
/// slot header on top).
pub const CHUNK_OVERHEAD: usize = MESSAGE_HEADER_LEN + CHUNK_BLOCK as usize + 8;

/// One chunk, its payload borrowed from the bytes it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// The stream (the mapping's destination id, as the Julia sender writes it).
    pub stream_id: u32,
    /// The source's epoch.
    pub epoch: u64,
    /// The frame's sequence number.
    pub seq: u64,
    /// Its trace id (0: untraced).
    pub trace_id: u64,
    /// This chunk's index.
    pub index: u32,
    /// Chunks of the frame.
    pub count: u32,
    /// Where its bytes go in the payload.
    pub offset: u32,
    /// The frame's payload length.
    pub payload_length: u32,
    /// CRC32C (0: none; with integrity on, 0 is invalid).
    pub crc32c: u32,
    /// The raw 256-byte header slot (chunk 0 only).
    pub header: Option<&'a [u8]>,
    /// Its payload bytes (`chunkLength` of them).
    pub payload: &'a [u8],
}

/// Why bytes are not a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// Not the bridge schema's template 1, version 1, block 53.
    #[error("not a BridgeFrameChunk (schema/template/version/blockLength)")]
    NotAChunk,
    /// Fewer bytes than the message declares.
    #[error("truncated")]
    Truncated,
    /// Bytes after the message.
    #[error("trailing bytes")]
    Trailing,
    /// `chunkLength` differs from the payload's length prefix.
    #[error("chunkLength disagrees with payloadBytes")]
    Length,
    /// Header bytes other than 0 or 256, or `headerIncluded` disagreeing with them.
    #[error("headerBytes must be the 256-byte slot, on chunk 0 only")]
    Header,
    /// Index, count or offset out of their ranges.
    #[error("chunkIndex/chunkCount/chunkOffset out of range")]
    Range,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl<'a> Chunk<'a> {
    /// Reads one chunk. Every length is checked before it is used; nothing panics.
    pub fn decode(bytes: &'a [u8]) -> Result<Chunk<'a>, ChunkError> {
        let h = peek_header(bytes).map_err(|_| ChunkError::NotAChunk)?;
        if h.schema_id != BRIDGE_SCHEMA_ID
            || h.template_id != 1
            || h.version != 1
            || h.block_length != CHUNK_BLOCK
        {
            return Err(ChunkError::NotAChunk);
        }
        let b = &bytes[MESSAGE_HEADER_LEN..];
        if b.len() < CHUNK_BLOCK as usize + 4 {
            return Err(ChunkError::Truncated);
        }
        let header_included = b[52];
        let mut at = CHUNK_BLOCK as usize;
        let header_len = u32_at(b, at) as usize;
        at += 4;
        if header_len > SLOT_SIZE || b.len() < at + header_len + 4 {
            return Err(if header_len > SLOT_SIZE {
                ChunkError::Header
            } else {
                ChunkError::Truncated
            });
        }
        let header = &b[at..at + header_len];
        at += header_len;
        let payload_len = u32_at(b, at) as usize;
        at += 4;
        if b.len() < at + payload_len {
            return Err(ChunkError::Truncated);
        }
        if b.len() != at + payload_len {
            return Err(ChunkError::Trailing);
        }
        let payload = &b[at..at + payload_len];
        let c = Chunk {
            stream_id: u32_at(b, 0),
            epoch: u64_at(b, 4),
            seq: u64_at(b, 12),
            trace_id: u64_at(b, 20),
            index: u32_at(b, 28),
            count: u32_at(b, 32),
            offset: u32_at(b, 36),
            payload_length: u32_at(b, 44),
            crc32c: u32_at(b, 48),
            header: (header_len == SLOT_SIZE).then_some(header),
            payload,
        };
        if u32_at(b, 40) as usize != payload_len {
            return Err(ChunkError::Length);
        }
        let header_ok = matches!(
            (header_included, header_len, c.index),
            (1, SLOT_SIZE, 0) | (0, 0, _)
        );
        if !header_ok {
            return Err(ChunkError::Header);
        }
        if c.count == 0
            || c.count > MAX_CHUNKS
            || c.index >= c.count
            || payload_len > MAX_CHUNK_BYTES as usize
        {
            return Err(ChunkError::Range);
        }
        if (c.index == 0 && c.offset != 0)
            || u64::from(c.offset) + payload_len as u64 > u64::from(c.payload_length)
        {
            return Err(ChunkError::Range);
        }
        Ok(c)
    }

    /// Encodes it into `out` (cleared first).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        self.encode_head_into(out);
        out.extend_from_slice(self.payload);
    }

    /// Encodes all but the payload's bytes into `out` (cleared first): the message is `out`
    /// followed by `self.payload`, which a sender offers as two parts, so that a frame's bytes
    /// are copied once, into the log, rather than first into a message buffer.
    pub fn encode_head_into(&self, out: &mut Vec<u8>) {
        out.clear();
        for v in [CHUNK_BLOCK, 1, BRIDGE_SCHEMA_ID, 1] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.stream_id.to_le_bytes());
        out.extend_from_slice(&self.epoch.to_le_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.trace_id.to_le_bytes());
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&self.count.to_le_bytes());
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.payload_length.to_le_bytes());
        out.extend_from_slice(&self.crc32c.to_le_bytes());
        out.push(u8::from(self.header.is_some()));
        let header = self.header.unwrap_or_default();
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(header);
        out.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
    }

    /// The CRC32C this chunk should carry: over header ‖ payload for chunk 0, the payload
    /// alone otherwise. (A receiver checking integrity refuses 0, "none": a chunk whose true
    /// CRC is 0, one in 2³², is dropped.)
    pub fn checksum(header: Option<&[u8]>, payload: &[u8]) -> u32 {
        crc32c::crc32c_append(crc32c::crc32c(header.unwrap_or_default()), payload)
    }
}

/// The chunk size for `mtu`: `min(chunk_bytes, mtu − 128, max_chunk_bytes)` (at least 1).
pub fn chunk_size(chunk_bytes: u32, mtu: u32, max_chunk_bytes: u32) -> u32 {
    chunk_bytes
        .min(mtu.saturating_sub(128))
        .min(max_chunk_bytes)
        .clamp(1, MAX_CHUNK_BYTES)
}

/// How many chunks of `size` a payload of `len` bytes takes (an empty payload still sends
/// chunk 0, its header); `None` past 65535.
pub fn chunk_count(len: u32, size: u32) -> Option<u32> {
    let n = len.div_ceil(size).max(1);
    (n <= MAX_CHUNKS).then_some(n)
}
