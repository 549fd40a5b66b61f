//! xmem's own streams over the bridge, as tensor-pool frames: a sender may read an xmem stream
//! (`Subscriber`) instead of a tensor-pool stream, and a receiver may republish into an xmem
//! stream (`Publisher`) instead of tensor-pool regions, for users who start with xmem streams on
//! one host and grow to two. On the wire nothing changes: each frame is a slot header (its
//! tensor described as the tensor pool does) and its payload, in chunks, after a forwarded
//! announce that describes the stream as one pool.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use xmem_core::stream::{Policy, Publisher, Subscriber};
use xmem_core::{DType, Error as XmemError, TensorDesc};
use xmem_tensorpool::codec::{PoolAnnounce, ShmPoolAnnounce};
use xmem_tensorpool::layout::{Dtype, SlotHeader, Tensor, TensorHeader, HEADER_BYTES_LEN, SLOT_SIZE};

/// An xmem stream at one end of a mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmemStream {
    /// The stream's name.
    pub name: String,
    /// Its directory (`None`: `$XMEM_SHM_DIR` or `/dev/shm`).
    pub directory: Option<PathBuf>,
}

/// How often a sender looks for the stream's publisher while there is none.
const RETRY: Duration = Duration::from_millis(100);

/// The pool id an xmem stream is announced as (it has one pool).
const POOL_ID: u16 = 1;

/// xmem's dtype as the tensor pool's, where it has one (it has no 16-bit floats or complex).
fn to_wire(dtype: DType) -> Option<Dtype> {
    Some(match dtype {
        DType::U8 => Dtype::Uint8,
        DType::I8 => Dtype::Int8,
        DType::U16 => Dtype::Uint16,
        DType::I16 => Dtype::Int16,
        DType::U32 => Dtype::Uint32,
        DType::I32 => Dtype::Int32,
        DType::U64 => Dtype::Uint64,
        DType::I64 => Dtype::Int64,
        DType::F32 => Dtype::Float32,
        DType::F64 => Dtype::Float64,
        DType::Bool => Dtype::Boolean,
        _ => return None,
    })
}

fn from_wire(dtype: Dtype) -> DType {
    match dtype {
        Dtype::Int8 => DType::I8,
        Dtype::Uint16 => DType::U16,
        Dtype::Int16 => DType::I16,
        Dtype::Uint32 => DType::U32,
        Dtype::Int32 => DType::I32,
        Dtype::Uint64 => DType::U64,
        Dtype::Int64 => DType::I64,
        Dtype::Float32 => DType::F32,
        Dtype::Float64 => DType::F64,
        Dtype::Boolean => DType::Bool,
        Dtype::Uint8 | Dtype::Bytes | Dtype::Bit => DType::U8,
    }
}

/// A frame's tensor as the tensor pool describes it, and the byte range of its payload in the
/// buffer: a contiguous tensor of a dtype both know keeps its type and shape; anything else
/// goes as its bytes (a 1-D `uint8` tensor of the whole buffer).
pub fn describe(desc: &TensorDesc, buffer_len: usize) -> (TensorHeader, std::ops::Range<usize>) {
    let dims: Option<Vec<i32>> = desc.shape().iter().map(|&d| i32::try_from(d).ok()).collect();
    if let (Some(dtype), Some(dims), true) = (to_wire(desc.dtype()), dims, desc.is_contiguous()) {
        let start = desc.byte_offset() as usize;
        let len = desc.num_elements() as usize * desc.dtype().size();
        if (1..=8).contains(&dims.len()) && start + len <= buffer_len {
            return (TensorHeader::row_major(dtype, &dims), start..start + len);
        }
    }
    let len = i32::try_from(buffer_len).unwrap_or(i32::MAX);
    (TensorHeader::row_major(Dtype::Uint8, &[len]), 0..len as usize)
}

/// A validated tensor-pool tensor as xmem's description (strides in elements).
pub fn to_desc(t: &Tensor) -> Option<TensorDesc> {
    let dtype = from_wire(t.dtype);
    let size = dtype.size() as u32;
    let shape: Vec<u64> = t.dims().iter().map(|&d| u64::from(d)).collect();
    let strides: Option<Vec<i64>> = t
        .strides()
        .iter()
        .map(|&s| (s % size == 0).then_some(i64::from(s / size)))
        .collect();
    TensorDesc::strided(dtype, &shape, &strides?, 0).ok()
}

/// What a sender makes of one frame of the stream.
pub struct StreamFrame {
    /// Its sequence number.
    pub seq: u64,
    /// Its slot header, encoded.
    pub header: [u8; SLOT_SIZE],
}

/// The sending end's source: a subscriber of the xmem stream, opened when its publisher is
/// there (and again after it left), and the announce that describes it.
pub struct StreamSource {
    stream: XmemStream,
    dest_stream_id: u32,
    subscriber: Option<Subscriber>,
    announce: Option<ShmPoolAnnounce>,
    next_try: Instant,
}

impl StreamSource {
    /// A source of `stream`, announced on the other host as stream `dest_stream_id`.
    pub fn new(stream: XmemStream, dest_stream_id: u32) -> StreamSource {
        StreamSource {
            stream,
            dest_stream_id,
            subscriber: None,
            announce: None,
            next_try: Instant::now(),
        }
    }

    /// The announce that describes the stream now (`None` while it has no publisher). Its epoch
    /// is the time the subscription was made, so a new publisher gives a higher one.
    pub fn announce(&self) -> Option<&ShmPoolAnnounce> {
        self.announce.as_ref()
    }

    fn open(&mut self) {
        if Instant::now() < self.next_try {
            return;
        }
        self.next_try = Instant::now() + RETRY;
        let mut b = Subscriber::builder(&self.stream.name);
        if let Some(d) = &self.stream.directory {
            b = b.directory(d);
        }
        let Ok(subscriber) = b.open() else { return };
        let pool = subscriber.pool();
        let nslots = pool.buffer_count().next_power_of_two();
        let stride = pool.buffer_size().div_ceil(64) * 64;
        let uri = format!("shm:file?path={}", pool.path().display());
        let now = xmem_core::os::time::unix_now_ns();
        self.announce = Some(ShmPoolAnnounce {
            stream_id: self.dest_stream_id,
            producer_id: 0,
            epoch: now,
            announce_timestamp_ns: now,
            announce_clock_domain: 1,
            layout_version: 1,
            header_nslots: nslots,
            header_slot_bytes: SLOT_SIZE as u16,
            pools: vec![PoolAnnounce {
                pool_id: POOL_ID,
                nslots,
                stride_bytes: u32::try_from(stride).unwrap_or(u32::MAX),
                region_uri: uri.clone(),
            }],
            header_region_uri: uri,
        });
        tracing::info!(stream = %self.stream.name, "bridging xmem stream");
        self.subscriber = Some(subscriber);
    }

    /// The next frame, its payload copied into `payload` (the slot header says which bytes);
    /// `None` if there is none now. A publisher that left is waited for again.
    pub fn next(&mut self, payload: &mut Vec<u8>) -> Option<(u64, StreamFrame)> {
        if self.subscriber.is_none() {
            self.open();
        }
        let subscriber = self.subscriber.as_mut()?;
        let frame = match subscriber.try_receive() {
            Ok(Some(frame)) => frame,
            Ok(None) => return None,
            Err(e) => {
                if !matches!(e, XmemError::PublisherGone { .. }) {
                    tracing::warn!(stream = %self.stream.name, "xmem stream: {e}");
                }
                self.subscriber = None;
                self.announce = None;
                return None;
            }
        };
        let epoch = self.announce.as_ref().map_or(0, |a| a.epoch);
        let desc = frame.tensor().ok()?;
        let (tensor, range) = describe(&desc, frame.len());
        payload.clear();
        payload.extend_from_slice(&frame.bytes()[range]);
        let seq = frame.sequence();
        let slot = SlotHeader {
            seq_commit: seq << 1 | 1,
            values_len_bytes: payload.len() as u32,
            payload_slot: 0,
            pool_id: POOL_ID,
            payload_offset: 0,
            timestamp_ns: frame.timestamp_ns(),
            meta_version: 0,
            header_bytes_len: HEADER_BYTES_LEN,
            tensor,
        };
        Some((
            epoch,
            StreamFrame {
                seq,
                header: slot.encode(),
            },
        ))
    }
}

/// The receiving end's sink: the xmem stream's publisher, made when the first frame comes
/// (sized for the forwarded announce's largest stride), real time (`DropOldest`: a slow local
/// subscriber never holds the bridge up).
pub struct StreamSink {
    stream: XmemStream,
    buffers: u32,
    publisher: Option<Publisher>,
}

impl StreamSink {
    /// A sink republishing into `stream`, with `buffers` buffers.
    pub fn new(stream: XmemStream, buffers: u32) -> StreamSink {
        StreamSink {
            stream,
            buffers: buffers.max(2),
            publisher: None,
        }
    }

    /// Creates the stream, if it is not there yet, with buffers of `largest` bytes (the
    /// forwarded announce's largest stride): local subscribers can join before frames come.
    pub fn ensure(&mut self, largest: u32) -> Result<(), XmemError> {
        if self.publisher.is_none() {
            let mut b = Publisher::builder(&self.stream.name)
                .buffers(self.buffers)
                .buffer_size(u64::from(largest.max(1)))
                .policy(Policy::DropOldest);
            if let Some(d) = &self.stream.directory {
                b = b.directory(d);
            }
            self.publisher = Some(b.create()?);
        }
        Ok(())
    }

    /// Publishes one frame under its source's sequence number. `Ok(false)`: it does not fit the
    /// stream's buffers, or its tensor has no xmem description.
    pub fn publish(
        &mut self,
        largest: u32,
        seq: u64,
        slot: &SlotHeader,
        tensor: &Tensor,
        payload: &[u8],
    ) -> Result<bool, XmemError> {
        self.ensure(largest)?;
        let publisher = self.publisher.as_mut().expect("made above");
        let Some(desc) = to_desc(tensor) else {
            return Ok(false);
        };
        // A loan or publish that fails drops this frame only (counted by the caller); the
        // bridge goes on with the next.
        let Ok(mut frame) = publisher.loan() else {
            return Ok(false);
        };
        if payload.len() > frame.len() {
            return Ok(false);
        }
        frame.bytes_mut()[..payload.len()].copy_from_slice(payload);
        if frame.set_tensor(&desc).is_err() {
            return Ok(false);
        }
        frame.set_sequence(seq);
        frame.set_timestamp_ns(slot.timestamp_ns);
        if publisher.publish(frame).is_err() {
            return Ok(false);
        }
        Ok(true)
    }
}
