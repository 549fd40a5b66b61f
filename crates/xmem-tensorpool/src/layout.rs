//! Shared-memory images of the protocol (spec §2): the region superblock (SBE template 50, raw
//! at offset 0), the header slot (SlotHeader, template 51, raw) and the TensorHeader embedded in
//! it with its own SBE message header (template 52, schema 900).
//!
//! Decoding never fails on values, only on length: it gives the numbers the bytes hold, so that
//! any image round-trips and tools can show damaged ones. `validate` then applies the spec's
//! rules and returns a typed error naming the field.

use crate::error::{invalid, Error, Result};

/// Bytes of a superblock; every offset formula starts after it (W-6-1).
pub const SUPERBLOCK_SIZE: usize = 64;
/// Bytes of a header slot (W-8.1-1).
pub const SLOT_SIZE: usize = 256;
/// The superblock magic: "TPLSHM1" read as a little-endian u64.
pub const MAGIC: u64 = 0x544F_504C_5348_4D31;
/// The one layout version of v1.x.
pub const LAYOUT_VERSION: u32 = 1;
/// The SBE schema of the wire messages, and of the embedded TensorHeader.
pub const WIRE_SCHEMA_ID: u16 = 900;
/// The schema version every implementation writes.
pub const SCHEMA_VERSION: u16 = 1;
/// TensorHeader's template id.
pub const TENSOR_HEADER_TEMPLATE: u16 = 52;
/// TensorHeader's block length.
pub const TENSOR_HEADER_BLOCK: u16 = 184;
/// The embedded header's length: an 8-byte message header plus the 184-byte body.
pub const HEADER_BYTES_LEN: u32 = 192;
/// Most dimensions a tensor has.
pub const MAX_DIMS: usize = 8;

/// Where slot `i` of a header ring begins (W-8.1-1).
pub const fn slot_offset(i: u32) -> usize {
    SUPERBLOCK_SIZE + i as usize * SLOT_SIZE
}

/// Where payload slot `j` of a pool with `stride` bytes begins.
pub const fn payload_offset(j: u32, stride: u32) -> usize {
    SUPERBLOCK_SIZE + j as usize * stride as usize
}

fn need(what: &'static str, bytes: &[u8], n: usize) -> Result<()> {
    if bytes.len() < n {
        return Err(Error::Truncated {
            what,
            need: n,
            got: bytes.len(),
        });
    }
    Ok(())
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn i16_at(b: &[u8], o: usize) -> i16 {
    i16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn i32_at(b: &[u8], o: usize) -> i32 {
    i32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}
fn put(b: &mut [u8], o: usize, v: &[u8]) {
    b[o..o + v.len()].copy_from_slice(v);
}

/// What a region holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionType {
    /// The ring of header slots.
    HeaderRing = 1,
    /// A pool of payload slots.
    PayloadPool = 2,
}

/// The 64-byte superblock at the start of every region file (§2.2), as its bytes hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    /// `TPOLSHM1` as a little-endian u64.
    pub magic: u64,
    /// The region layout's version (1).
    pub layout_version: u32,
    /// The producer's epoch: a new one for every set of files it makes.
    pub epoch: u64,
    /// The stream this region belongs to.
    pub stream_id: u32,
    /// A [`RegionType`] as its wire value.
    pub region_type: i16,
    /// The pool's id (0 in the header ring).
    pub pool_id: u16,
    /// Slots in the region (a power of two in the ring; equal to the ring's in each pool).
    pub nslots: u32,
    /// Bytes of one header slot (256) in the ring; 0 in pools.
    pub slot_bytes: u32,
    /// Bytes between payload slots in a pool; 0 in the ring.
    pub stride_bytes: u32,
    /// The producer's process id.
    pub pid: u64,
    /// When the producer made the region.
    pub start_timestamp_ns: u64,
    /// Refreshed by a live producer; stale means it is gone.
    pub activity_timestamp_ns: u64,
}

/// Byte offset of `activityTimestampNs`, the one field that changes after creation.
pub const ACTIVITY_OFFSET: usize = 56;

impl Superblock {
    /// The superblock of a header ring of `nslots` slots.
    pub fn header_ring(stream_id: u32, epoch: u64, nslots: u32, pid: u64, now_ns: u64) -> Superblock {
        Superblock {
            magic: MAGIC,
            layout_version: LAYOUT_VERSION,
            epoch,
            stream_id,
            region_type: RegionType::HeaderRing as i16,
            pool_id: 0,
            nslots,
            slot_bytes: SLOT_SIZE as u32,
            stride_bytes: 0,
            pid,
            start_timestamp_ns: now_ns,
            activity_timestamp_ns: now_ns,
        }
    }

    /// The superblock of payload pool `pool_id` (`nslots` slots of `stride` bytes). Writes
    /// `slotBytes = stride`, which both the C (ignores it) and Julia (demands it) readers take.
    pub fn payload_pool(
        stream_id: u32,
        epoch: u64,
        pool_id: u16,
        nslots: u32,
        stride: u32,
        pid: u64,
        now_ns: u64,
    ) -> Superblock {
        Superblock {
            region_type: RegionType::PayloadPool as i16,
            pool_id,
            slot_bytes: stride,
            stride_bytes: stride,
            ..Superblock::header_ring(stream_id, epoch, nslots, pid, now_ns)
        }
    }

    /// Reads the first 64 bytes of `b`.
    pub fn decode(b: &[u8]) -> Result<Superblock> {
        need("a superblock", b, SUPERBLOCK_SIZE)?;
        Ok(Superblock {
            magic: u64_at(b, 0),
            layout_version: u32_at(b, 8),
            epoch: u64_at(b, 12),
            stream_id: u32_at(b, 20),
            region_type: i16_at(b, 24),
            pool_id: u16_at(b, 26),
            nslots: u32_at(b, 28),
            slot_bytes: u32_at(b, 32),
            stride_bytes: u32_at(b, 36),
            pid: u64_at(b, 40),
            start_timestamp_ns: u64_at(b, 48),
            activity_timestamp_ns: u64_at(b, ACTIVITY_OFFSET),
        })
    }

    /// The 64 bytes.
    pub fn encode(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut b = [0u8; SUPERBLOCK_SIZE];
        put(&mut b, 0, &self.magic.to_le_bytes());
        put(&mut b, 8, &self.layout_version.to_le_bytes());
        put(&mut b, 12, &self.epoch.to_le_bytes());
        put(&mut b, 20, &self.stream_id.to_le_bytes());
        put(&mut b, 24, &self.region_type.to_le_bytes());
        put(&mut b, 26, &self.pool_id.to_le_bytes());
        put(&mut b, 28, &self.nslots.to_le_bytes());
        put(&mut b, 32, &self.slot_bytes.to_le_bytes());
        put(&mut b, 36, &self.stride_bytes.to_le_bytes());
        put(&mut b, 40, &self.pid.to_le_bytes());
        put(&mut b, 48, &self.start_timestamp_ns.to_le_bytes());
        put(&mut b, ACTIVITY_OFFSET, &self.activity_timestamp_ns.to_le_bytes());
        b
    }

    /// The rules every superblock obeys on its own (W-7.1-1, W-7.1-2, W-9-1). Returns its type.
    pub fn validate(&self) -> Result<RegionType> {
        if self.magic != MAGIC {
            return Err(Error::BadMagic(self.magic));
        }
        if self.layout_version != LAYOUT_VERSION {
            return Err(invalid(
                "layoutVersion",
                self.layout_version,
                "this reader speaks layout version 1",
            ));
        }
        if self.nslots == 0 || !self.nslots.is_power_of_two() {
            return Err(invalid("nslots", self.nslots, "must be a power of two"));
        }
        match self.region_type {
            1 => {
                if self.pool_id != 0 {
                    return Err(invalid("poolId", self.pool_id, "a header ring is pool 0"));
                }
                if self.slot_bytes != SLOT_SIZE as u32 {
                    return Err(invalid(
                        "slotBytes",
                        self.slot_bytes,
                        "a header ring's slots are 256 bytes",
                    ));
                }
                Ok(RegionType::HeaderRing)
            }
            2 => {
                check_stride(self.stride_bytes)?;
                // C writes 0xFFFFFFFF here and Julia the stride: accept either.
                if self.slot_bytes != self.stride_bytes && self.slot_bytes != u32::MAX {
                    return Err(invalid(
                        "slotBytes",
                        self.slot_bytes,
                        "a pool's slotBytes is its stride (or 0xFFFFFFFF)",
                    ));
                }
                if self.pool_id == 0 {
                    return Err(invalid("poolId", 0u16, "pool 0 is the header ring"));
                }
                Ok(RegionType::PayloadPool)
            }
            other => Err(invalid(
                "regionType",
                other,
                "1 (header ring) or 2 (payload pool)",
            )),
        }
    }

    /// `validate`, then every field the announce fixes (W-7.1-1/2, W-15.1-1): fail closed.
    pub fn check_against(&self, want: &Superblock) -> Result<RegionType> {
        let kind = self.validate()?;
        let pairs: [(&'static str, u64, u64); 6] = [
            ("epoch", want.epoch, self.epoch),
            ("streamId", want.stream_id.into(), self.stream_id.into()),
            ("regionType", want.region_type as u64, self.region_type as u64),
            ("poolId", want.pool_id.into(), self.pool_id.into()),
            ("nslots", want.nslots.into(), self.nslots.into()),
            ("strideBytes", want.stride_bytes.into(), self.stride_bytes.into()),
        ];
        for (field, want, got) in pairs {
            if want != got {
                return Err(Error::Mismatch { field, want, got });
            }
        }
        Ok(kind)
    }
}

/// A pool stride: at least 64 and a multiple of 64 (W-9-1).
pub fn check_stride(stride: u32) -> Result<()> {
    if stride < 64 || stride % 64 != 0 {
        return Err(invalid(
            "strideBytes",
            stride,
            "a pool stride is a multiple of 64, at least 64",
        ));
    }
    Ok(())
}

/// Element types (§2.3; 12 is unused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)] // the names say it; the values are the wire's
pub enum Dtype {
    Uint8 = 1,
    Int8 = 2,
    Uint16 = 3,
    Int16 = 4,
    Uint32 = 5,
    Int32 = 6,
    Uint64 = 7,
    Int64 = 8,
    Float32 = 9,
    Float64 = 10,
    Boolean = 11,
    Bytes = 13,
    Bit = 14,
}

impl Dtype {
    /// The type of wire value `v`; UNKNOWN (0) and unused values are rejected (W-15.8-1).
    pub fn from_wire(v: i16) -> Result<Dtype> {
        use Dtype::*;
        Ok(match v {
            1 => Uint8,
            2 => Int8,
            3 => Uint16,
            4 => Int16,
            5 => Uint32,
            6 => Int32,
            7 => Uint64,
            8 => Int64,
            9 => Float32,
            10 => Float64,
            11 => Boolean,
            13 => Bytes,
            14 => Bit,
            other => return Err(invalid("dtype", other, "unknown dtype")),
        })
    }

    /// Bytes per element, as the C implementation counts them (bytes and bits: 1).
    pub fn size(self) -> u32 {
        use Dtype::*;
        match self {
            Uint8 | Int8 | Boolean | Bytes | Bit => 1,
            Uint16 | Int16 => 2,
            Uint32 | Int32 | Float32 => 4,
            Uint64 | Int64 | Float64 => 8,
        }
    }
}

/// Which index varies fastest in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MajorOrder {
    /// The last index (C order).
    Row = 1,
    /// The first index (Fortran order).
    Column = 2,
}

/// The unit of `FrameProgress` for a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressUnit {
    /// The tensor's progress is not reported.
    None = 0,
    /// Progress counts rows (row-major tensors filled top to bottom).
    Rows = 1,
    /// Progress counts columns.
    Columns = 2,
}

/// The TensorHeader embedded in a slot (§2.3), as its bytes hold it. `dims` and `strides` are
/// given for all 8 entries; those past `ndims` are zero when a producer wrote them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TensorHeader {
    /// A [`Dtype`] as its wire value.
    pub dtype: i16,
    /// A [`MajorOrder`] as its wire value.
    pub major_order: i16,
    /// Dimensions in use, 1 to 8.
    pub ndims: u8,
    /// Alignment padding hint; carried, not interpreted.
    pub pad_align: u8,
    /// A [`ProgressUnit`] as its wire value.
    pub progress_unit: u8,
    /// Bytes per progress unit: the row (or column) stride.
    pub progress_stride_bytes: u32,
    /// The dimensions (entries past `ndims` zero).
    pub dims: [i32; MAX_DIMS],
    /// In bytes; 0 means "contiguous, infer".
    pub strides: [i32; MAX_DIMS],
}

/// A tensor that passed validation, its strides filled in. Fixed arrays rather than vectors:
/// producers and consumers validate one per frame, and nothing per frame allocates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tensor {
    /// Element type.
    pub dtype: Dtype,
    /// Which index is fastest.
    pub major_order: MajorOrder,
    /// What its FrameProgress counts.
    pub progress_unit: ProgressUnit,
    ndims: u8,
    dims: [u32; MAX_DIMS],
    strides: [u32; MAX_DIMS],
    /// Bytes from the first element to one past the last.
    pub extent: u64,
}

impl Tensor {
    /// The dimensions (1 to 8 of them).
    pub fn dims(&self) -> &[u32] {
        &self.dims[..usize::from(self.ndims)]
    }

    /// The strides in bytes, one per dimension, every one filled.
    pub fn strides(&self) -> &[u32] {
        &self.strides[..usize::from(self.ndims)]
    }
}

impl TensorHeader {
    /// A row-major tensor of `dims`, strides left for readers to infer (as most producers do).
    pub fn row_major(dtype: Dtype, dims: &[i32]) -> TensorHeader {
        let mut h = TensorHeader {
            dtype: dtype as i16,
            major_order: MajorOrder::Row as i16,
            ndims: dims.len() as u8,
            ..Default::default()
        };
        h.dims[..dims.len()].copy_from_slice(dims);
        h
    }

    /// Reads the 192 embedded header bytes (message header and body), checking the message
    /// header exactly: schema 900, template 52, version 1, block length 184 (W-8.2-2).
    pub fn decode(b: &[u8]) -> Result<TensorHeader> {
        need("an embedded TensorHeader", b, HEADER_BYTES_LEN as usize)?;
        let checks = [
            ("blockLength", TENSOR_HEADER_BLOCK, u16_at(b, 0)),
            ("templateId", TENSOR_HEADER_TEMPLATE, u16_at(b, 2)),
            ("schemaId", WIRE_SCHEMA_ID, u16_at(b, 4)),
            ("version", SCHEMA_VERSION, u16_at(b, 6)),
        ];
        for (field, want, got) in checks {
            if want != got {
                return Err(Error::Mismatch {
                    field,
                    want: want.into(),
                    got: got.into(),
                });
            }
        }
        let body = &b[8..];
        let mut h = TensorHeader {
            dtype: i16_at(body, 0),
            major_order: i16_at(body, 2),
            ndims: body[4],
            pad_align: body[5],
            progress_unit: body[6],
            progress_stride_bytes: u32_at(body, 7),
            ..Default::default()
        };
        for i in 0..MAX_DIMS {
            h.dims[i] = i32_at(body, 11 + 4 * i);
            h.strides[i] = i32_at(body, 43 + 4 * i);
        }
        Ok(h)
    }

    /// The 192 bytes: message header, then the body with its pad zeroed.
    pub fn encode(&self) -> [u8; HEADER_BYTES_LEN as usize] {
        let mut b = [0u8; HEADER_BYTES_LEN as usize];
        put(&mut b, 0, &TENSOR_HEADER_BLOCK.to_le_bytes());
        put(&mut b, 2, &TENSOR_HEADER_TEMPLATE.to_le_bytes());
        put(&mut b, 4, &WIRE_SCHEMA_ID.to_le_bytes());
        put(&mut b, 6, &SCHEMA_VERSION.to_le_bytes());
        let body = &mut b[8..];
        put(body, 0, &self.dtype.to_le_bytes());
        put(body, 2, &self.major_order.to_le_bytes());
        body[4] = self.ndims;
        body[5] = self.pad_align;
        body[6] = self.progress_unit;
        put(body, 7, &self.progress_stride_bytes.to_le_bytes());
        for i in 0..MAX_DIMS {
            put(body, 11 + 4 * i, &self.dims[i].to_le_bytes());
            put(body, 43 + 4 * i, &self.strides[i].to_le_bytes());
        }
        b
    }

    /// The tensor rules (W-8.2-3, W-8.2-4, W-8.2-5, W-15.8-1): known enums, 1..=8 dims,
    /// non-negative dims and strides, strides that follow the major order without overlapping
    /// (zeros filled with the minimum, as the C reader does), and a progress stride equal to
    /// the real row or column stride.
    pub fn validate(&self) -> Result<Tensor> {
        let dtype = Dtype::from_wire(self.dtype)?;
        let major_order = match self.major_order {
            1 => MajorOrder::Row,
            2 => MajorOrder::Column,
            other => return Err(invalid("majorOrder", other, "1 (row) or 2 (column)")),
        };
        let progress_unit = match self.progress_unit {
            0 => ProgressUnit::None,
            1 => ProgressUnit::Rows,
            2 => ProgressUnit::Columns,
            other => {
                return Err(invalid(
                    "progressUnit",
                    other,
                    "0 (none), 1 (rows) or 2 (columns)",
                ))
            }
        };
        let n = self.ndims as usize;
        if !(1..=MAX_DIMS).contains(&n) {
            return Err(invalid("ndims", self.ndims, "a tensor has 1 to 8 dimensions"));
        }
        let mut dims = [0u32; MAX_DIMS];
        let mut strides = [0u32; MAX_DIMS];
        for i in 0..n {
            if self.dims[i] < 0 {
                return Err(invalid("dims", self.dims[i], "dimensions are ≥ 0"));
            }
            if self.strides[i] < 0 {
                return Err(invalid(
                    "strides",
                    self.strides[i],
                    "negative strides are not supported",
                ));
            }
            dims[i] = self.dims[i] as u32;
            strides[i] = self.strides[i] as u32;
        }
        // Fill and check from the fastest index outward.
        let mut min = u64::from(dtype.size());
        for k in 0..n {
            let i = match major_order {
                MajorOrder::Row => n - 1 - k,
                MajorOrder::Column => k,
            };
            let s = u64::from(strides[i]);
            let s = if s == 0 { min } else { s };
            if s < min {
                return Err(invalid(
                    "strides",
                    s as i64,
                    "strides overlap or do not follow the major order",
                ));
            }
            strides[i] =
                u32::try_from(s).map_err(|_| invalid("strides", s as i64, "a stride beyond 4 GiB"))?;
            min = s
                .checked_mul(u64::from(dims[i].max(1)))
                .ok_or_else(|| invalid("dims", dims[i], "the tensor is too large"))?;
        }
        let extent = if dims[..n].contains(&0) {
            0
        } else {
            dims[..n]
                .iter()
                .zip(&strides)
                .map(|(&d, &s)| u64::from(d - 1) * u64::from(s))
                .sum::<u64>()
                + u64::from(dtype.size())
        };
        match progress_unit {
            ProgressUnit::None => {}
            ProgressUnit::Rows => {
                if self.progress_stride_bytes == 0 || self.progress_stride_bytes != strides[0] {
                    return Err(invalid(
                        "progressStrideBytes",
                        self.progress_stride_bytes,
                        "must equal the row stride (strides[0])",
                    ));
                }
            }
            ProgressUnit::Columns => {
                if n < 2 || self.progress_stride_bytes == 0 || self.progress_stride_bytes != strides[1] {
                    return Err(invalid(
                        "progressStrideBytes",
                        self.progress_stride_bytes,
                        "must equal the column stride (strides[1])",
                    ));
                }
            }
        }
        Ok(Tensor {
            dtype,
            major_order,
            progress_unit,
            ndims: n as u8,
            dims,
            strides,
            extent,
        })
    }
}

/// A header slot (§2.3), as its bytes hold it. The 26 pad bytes are not kept: they are written
/// as zeros and ignored when read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotHeader {
    /// `seq << 1 | committed`.
    pub seq_commit: u64,
    /// Bytes of payload in the frame.
    pub values_len_bytes: u32,
    /// The payload's slot in its pool.
    pub payload_slot: u32,
    /// The pool holding the payload.
    pub pool_id: u16,
    /// Byte offset of the tensor's first element in its payload slot.
    pub payload_offset: u32,
    /// Capture (source) time.
    pub timestamp_ns: u64,
    /// The version of the stream's metadata the frame was made under.
    pub meta_version: u32,
    /// The `headerBytes` length prefix; 192 in every valid slot.
    pub header_bytes_len: u32,
    /// The tensor the payload holds.
    pub tensor: TensorHeader,
}

impl SlotHeader {
    /// Reads a 256-byte slot. The embedded header's message header is checked (W-8.2-2); its
    /// length prefix is kept as found, for `validate`.
    pub fn decode(b: &[u8]) -> Result<SlotHeader> {
        need("a header slot", b, SLOT_SIZE)?;
        let header_bytes_len = u32_at(b, 60);
        if header_bytes_len != HEADER_BYTES_LEN {
            return Err(invalid(
                "headerBytes length",
                header_bytes_len,
                "must be exactly 192",
            ));
        }
        Ok(SlotHeader {
            seq_commit: u64_at(b, 0),
            values_len_bytes: u32_at(b, 8),
            payload_slot: u32_at(b, 12),
            pool_id: u16_at(b, 16),
            payload_offset: u32_at(b, 18),
            timestamp_ns: u64_at(b, 22),
            meta_version: u32_at(b, 30),
            header_bytes_len,
            tensor: TensorHeader::decode(&b[64..64 + HEADER_BYTES_LEN as usize])?,
        })
    }

    /// The 256 bytes, pad zeroed, the whole header rewritten (as §3 step 3 asks).
    pub fn encode(&self) -> [u8; SLOT_SIZE] {
        let mut b = [0u8; SLOT_SIZE];
        put(&mut b, 0, &self.seq_commit.to_le_bytes());
        self.encode_after_commit_word(&mut b);
        b
    }

    /// Writes everything but the commit word (bytes 8..256): what a producer writes between
    /// marking the slot in progress and committing it.
    pub fn encode_after_commit_word(&self, b: &mut [u8]) {
        put(b, 8, &self.values_len_bytes.to_le_bytes());
        put(b, 12, &self.payload_slot.to_le_bytes());
        put(b, 16, &self.pool_id.to_le_bytes());
        put(b, 18, &self.payload_offset.to_le_bytes());
        put(b, 22, &self.timestamp_ns.to_le_bytes());
        put(b, 30, &self.meta_version.to_le_bytes());
        b[34..60].fill(0);
        put(b, 60, &HEADER_BYTES_LEN.to_le_bytes());
        put(b, 64, &self.tensor.encode());
    }

    /// The slot rules for slot `index` of a ring whose pools are `pools` (id, stride) (W-8.2-6,
    /// W-15.5-1, §3 step 3): committed, zero payload offset, payload slot = header index, a
    /// known pool, a length within its stride, and a valid tensor that fits in the length.
    pub fn validate(&self, index: u32, pools: &[(u16, u32)]) -> Result<Tensor> {
        self.validate_with(index, pools, &mut TensorMemo::default())
    }

    /// [`validate`](Self::validate), its tensor checked through `memo`.
    pub fn validate_with(&self, index: u32, pools: &[(u16, u32)], memo: &mut TensorMemo) -> Result<Tensor> {
        if self.seq_commit & 1 == 0 {
            return Err(invalid(
                "seqCommit",
                self.seq_commit as i128,
                "the slot is being written (not committed)",
            ));
        }
        if self.payload_offset != 0 {
            return Err(invalid("payloadOffset", self.payload_offset, "must be 0 in v1.x"));
        }
        if self.payload_slot != index {
            return Err(invalid(
                "payloadSlot",
                self.payload_slot,
                "must equal the header slot's index",
            ));
        }
        let Some(&(_, stride)) = pools.iter().find(|(id, _)| *id == self.pool_id) else {
            return Err(invalid("poolId", self.pool_id, "no such pool is mapped"));
        };
        if self.values_len_bytes > stride {
            return Err(invalid(
                "valuesLenBytes",
                self.values_len_bytes,
                "longer than the pool's stride",
            ));
        }
        let tensor = memo.validate(&self.tensor)?;
        if tensor.extent > u64::from(self.values_len_bytes) && self.values_len_bytes != 0 {
            return Err(invalid(
                "dims",
                tensor.extent as i128,
                "the tensor reaches past valuesLenBytes",
            ));
        }
        Ok(tensor)
    }

    /// The frame's logical sequence number.
    pub fn seq(&self) -> u64 {
        self.seq_commit >> 1
    }
}

/// The last tensor header that passed validation and what it gave. A stream's frames mostly
/// share one shape, so a producer or consumer keeping one validates each shape once, not each
/// frame (the check costs about as much as the rest of a commit).
#[derive(Debug, Clone, Copy, Default)]
pub struct TensorMemo(Option<(TensorHeader, Tensor)>);

impl TensorMemo {
    /// `header.validate()`, or its remembered result when `header` is the last one validated.
    pub fn validate(&mut self, header: &TensorHeader) -> Result<Tensor> {
        if let Some((last, tensor)) = &self.0 {
            if last == header {
                return Ok(*tensor);
            }
        }
        let tensor = header.validate()?;
        self.0 = Some((*header, tensor));
        Ok(tensor)
    }
}

/// The commit word of sequence `seq`: `seq << 1 | 1` once committed, `seq << 1` while written.
pub const fn commit_word(seq: u64, committed: bool) -> u64 {
    (seq << 1) | committed as u64
}
