//! The receiving end: chunks reassembled, each frame validated against the forwarded announce
//! and the caps, then written into a local stream of which the receiver is the exclusive
//! producer (its own regions, its own epoch, rising on restart), committed through the seqlock
//! and described by a local FrameDescriptor with the same sequence number and trace id.

use std::time::{Duration, Instant};

use xmem_aeron::{Client, Subscription};
use xmem_tensorpool::codec::{peek_header, ShmPoolAnnounce, BRIDGE_SCHEMA_ID, WIRE_SCHEMA_ID};
use xmem_tensorpool::commit::FrameSpec;
use xmem_tensorpool::layout::SlotHeader;
use xmem_tensorpool::stream::TpProducer;
use xmem_tp_control::{Channels, Endpoint, Producer, ProducerOptions};

use crate::assembly::{Assembled, Assembly, Dropped};
use crate::chunk::Chunk;

/// How a [`Receiver`] listens and republishes.
#[derive(Debug, Clone)]
pub struct ReceiverOptions {
    /// The stream id chunks and forwarded announces carry (the mapping's destination), which is
    /// also the local stream's.
    pub dest_stream_id: u32,
    /// Chunks come here.
    pub payload: Endpoint,
    /// Forwarded announces come here.
    pub control: Endpoint,
    /// The local control plane of the destination stream.
    pub local: Channels,
    /// The local stream's announce period.
    pub announce_period: Duration,
    /// Where its regions go.
    pub base_dir: std::path::PathBuf,
    /// Their namespace.
    pub namespace: String,
    /// Slots of the local ring.
    pub nslots: u32,
    /// `(pool_id, stride)` of the local pools (a frame goes to the smallest that fits).
    pub pools: Vec<(u16, u32)>,
    /// Largest payload taken (default 1 GiB).
    pub max_payload_bytes: u32,
    /// Time to complete a frame (default 250 ms).
    pub assembly_timeout: Duration,
    /// Check CRC32C (chunks without one are dropped).
    pub integrity: bool,
    /// Metadata, QoS and progress taken from the bridge onto the local streams.
    pub forward: crate::forward::Forwarding,
    /// Republish into this xmem stream (with `nslots` buffers) instead of tensor-pool regions
    /// (`base_dir`, `namespace`, `pools` and forwarding are then unused).
    pub xmem_stream: Option<crate::xmem_stream::XmemStream>,
}

/// The receiver is its local stream's exclusive producer: epochs of the stream whose creator
/// has died (a killed receiver's) are its to remove. Returns how many were.
fn remove_dead_epochs(opts: &ReceiverOptions) -> Result<usize, crate::Error> {
    let layout = xmem_tensorpool::paths::Layout::new(&opts.base_dir, &opts.namespace)?;
    let stream_dir = layout.epoch_dir(opts.dest_stream_id, 0);
    let Some(stream_dir) = stream_dir.parent() else {
        return Ok(0);
    };
    let mut removed = 0;
    for e in std::fs::read_dir(stream_dir).into_iter().flatten().flatten() {
        let ring = e.path().join("header.ring");
        let Ok(r) = xmem_tensorpool::region::Region::open_any(&ring) else {
            continue;
        };
        let pid = r.superblock().pid as u32;
        drop(r);
        if pid != std::process::id() && !xmem_core::os::process::exists(pid) {
            xmem_tensorpool::stream::remove_epoch_dir(&e.path());
            removed += 1;
        }
    }
    Ok(removed)
}

/// What a receiver did, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Frames republished locally.
    pub frames: u64,
    /// Chunks taken into assembly.
    pub chunks: u64,
    /// Chunks before any forwarded announce.
    pub before_announce: u64,
    /// Chunks of another stream or epoch than the forwarded announce's.
    pub wrong_stream_or_epoch: u64,
    /// Bytes that are no chunk (lengths, ranges, header rules).
    pub malformed: u64,
    /// Chunks or frames with a bad CRC32C.
    pub crc: u64,
    /// Frames dropped for conflicting or overlapping chunks.
    pub conflicts: u64,
    /// Frames not complete in time, or overtaken by a newer one.
    pub incomplete: u64,
    /// Frames over a cap (max payload, the source's stride, every local pool).
    pub too_large: u64,
    /// Frames whose slot header failed validation against the announce.
    pub invalid: u64,
    /// Chunks of frames already completed or dropped.
    pub stale: u64,
    /// Forwarded announces taken.
    pub announces: u64,
    /// Metadata, QoS and progress messages republished locally.
    pub forwarded: u64,
    /// Local epochs begun because the source's numbers began again (a restarted source).
    pub local_epochs: u64,
}

impl ReceiverStats {
    /// The counters' names, in the order of [`ReceiverStats::values`].
    pub const NAMES: [&'static str; 14] = [
        "frames",
        "chunks",
        "before_announce",
        "wrong_stream_or_epoch",
        "malformed",
        "crc",
        "conflicts",
        "incomplete",
        "too_large",
        "invalid",
        "stale",
        "announces",
        "forwarded",
        "local_epochs",
    ];

    /// The values, in the order of [`ReceiverStats::NAMES`].
    pub fn values(&self) -> [u64; 14] {
        [
            self.frames,
            self.chunks,
            self.before_announce,
            self.wrong_stream_or_epoch,
            self.malformed,
            self.crc,
            self.conflicts,
            self.incomplete,
            self.too_large,
            self.invalid,
            self.stale,
            self.announces,
            self.forwarded,
            self.local_epochs,
        ]
    }
}

/// Where a receiver republishes.
#[allow(clippy::large_enum_variant)] // one per receiver, made once and never moved
enum Sink {
    /// Tensor-pool regions of its own, with their control plane.
    TensorPool(Producer),
    /// An xmem stream.
    Stream(crate::xmem_stream::StreamSink),
}

/// The receiving end of one mapping.
pub struct Receiver {
    opts: ReceiverOptions,
    /// The chunks' subscription; taken out of the receiver while a poll hands each chunk to
    /// [`Receiver::on_chunk`] in place, straight from Aeron's log (`None` only meanwhile).
    payload: Option<Subscription>,
    control: Subscription,
    assembly: Assembly,
    source: Option<ShmPoolAnnounce>,
    sink: Sink,
    stats: ReceiverStats,
    legs: Vec<crate::forward::Leg>,
    /// [`ReceiverStats`] in the media driver's counters file (`xmem tp stat`), refreshed every
    /// announce period.
    counters: Option<xmem_tp_control::counters::Counters>,
    next_counters: Instant,
}

impl Receiver {
    /// A receiver over `client` (its host's media driver): subscribes to the bridge channels and
    /// creates the local stream's regions.
    pub fn new(client: &Client, opts: ReceiverOptions) -> Result<Receiver, crate::Error> {
        let (sink, legs) = match &opts.xmem_stream {
            Some(stream) => (
                Sink::Stream(crate::xmem_stream::StreamSink::new(stream.clone(), opts.nslots)),
                Vec::new(),
            ),
            None => (Sink::TensorPool(Self::local_stream(client, &opts)?), {
                crate::forward::legs(
                    client,
                    &opts.forward,
                    &opts.local,
                    &opts.control,
                    opts.dest_stream_id,
                    opts.dest_stream_id,
                    false,
                )?
            }),
        };
        Ok(Receiver {
            legs,
            payload: Some(client.subscription(&opts.payload.channel, opts.payload.stream_id)?),
            control: client.subscription(&opts.control.channel, opts.control.stream_id)?,
            assembly: Assembly::new(opts.max_payload_bytes, opts.assembly_timeout, opts.integrity),
            source: None,
            sink,
            stats: ReceiverStats::default(),
            counters: xmem_tp_control::counters::Counters::add(
                client,
                &xmem_tp_control::counters::Owner {
                    role: "bridge-receiver",
                    stream_id: opts.dest_stream_id,
                    id: opts.payload.stream_id as u32,
                    pid: std::process::id(),
                },
                &ReceiverStats::NAMES,
            ),
            next_counters: Instant::now(),
            opts,
        })
    }

    /// Regions of a new local epoch (numbered above every epoch of the stream there).
    fn regions(opts: &ReceiverOptions) -> Result<TpProducer, crate::Error> {
        let mut b = TpProducer::builder(opts.dest_stream_id)
            .base_dir(&opts.base_dir)
            .namespace(&opts.namespace)
            .nslots(opts.nslots);
        for &(id, stride) in &opts.pools {
            b = b.pool(id, stride);
        }
        Ok(b.create()?)
    }

    /// The local tensor-pool stream: its regions (after removing a dead receiver's) and producer.
    fn local_stream(client: &Client, opts: &ReceiverOptions) -> Result<Producer, crate::Error> {
        let removed = remove_dead_epochs(opts)?;
        if removed > 0 {
            tracing::info!(
                stream = opts.dest_stream_id,
                removed,
                "removed epochs a dead receiver left"
            );
        }
        Ok(Producer::new(
            client,
            Self::regions(opts)?,
            ProducerOptions {
                channels: opts.local.clone(),
                announce_period: opts.announce_period,
                ..ProducerOptions::default()
            },
        )?)
    }

    /// Counters so far.
    pub fn stats(&self) -> ReceiverStats {
        ReceiverStats {
            incomplete: self.stats.incomplete + self.assembly.replaced,
            forwarded: self.legs.iter().map(|l| l.forwarded).sum(),
            ..self.stats
        }
    }

    /// The local producer (its announce, epoch and counters), when republishing into
    /// tensor-pool regions.
    pub fn producer(&self) -> Option<&Producer> {
        match &self.sink {
            Sink::TensorPool(p) => Some(p),
            Sink::Stream(_) => None,
        }
    }

    /// The forwarded announce of the source, once one came.
    pub fn source(&self) -> Option<&ShmPoolAnnounce> {
        self.source.as_ref()
    }

    /// One duty cycle: forwarded announces, then chunks; completed frames republished.
    pub fn poll(&mut self) -> Result<usize, crate::Error> {
        let mut work = match &mut self.sink {
            Sink::TensorPool(p) => p.poll()?,
            Sink::Stream(_) => 0,
        };
        if Instant::now() >= self.next_counters {
            self.next_counters = Instant::now() + self.opts.announce_period;
            if let Some(c) = &self.counters {
                c.set(&self.stats().values());
            }
        }
        for l in &mut self.legs {
            work += l.poll()?;
        }
        let mut control = Vec::new();
        work += self.control.poll(16, |m| control.push(m.bytes.to_vec()))?;
        for bytes in control {
            let Ok(h) = peek_header(&bytes) else { continue };
            if h.schema_id != WIRE_SCHEMA_ID || h.template_id != 1 {
                continue;
            }
            let Ok(a) = ShmPoolAnnounce::decode(&bytes) else {
                continue;
            };
            if a.stream_id != self.opts.dest_stream_id {
                continue;
            }
            // An older epoch than the one followed is dropped; a newer one is followed.
            if self.source.as_ref().is_none_or(|s| a.epoch >= s.epoch) {
                self.stats.announces += 1;
                if let Sink::Stream(sink) = &mut self.sink {
                    let largest = a.pools.iter().map(|p| p.stride_bytes).max().unwrap_or(0);
                    sink.ensure(largest).map_err(crate::Error::Stream)?;
                }
                self.source = Some(a);
            }
        }
        if let Some(d) = self.assembly.expire(Instant::now()) {
            self.count(d);
        }
        let mut payload = self
            .payload
            .take()
            .expect("the payload subscription is put back after each poll");
        let mut result = Ok(());
        let polled = payload.poll(256, |m| {
            // After an error (the local stream failed) the rest of this poll's chunks go
            // unread: the error ends the receiver.
            if result.is_ok() {
                result = self.on_chunk(m.bytes);
            }
        });
        self.payload = Some(payload);
        work += polled?;
        result.map(|()| work)
    }

    fn count(&mut self, d: Dropped) {
        match d {
            Dropped::TooLarge => self.stats.too_large += 1,
            Dropped::Conflict | Dropped::Overlap => self.stats.conflicts += 1,
            Dropped::Crc => self.stats.crc += 1,
            Dropped::Incomplete => self.stats.incomplete += 1,
            Dropped::Stale => self.stats.stale += 1,
        }
    }

    /// Takes one message from the payload channel (public for the fuzz target and tests).
    pub fn on_chunk(&mut self, bytes: &[u8]) -> Result<(), crate::Error> {
        if peek_header(bytes).is_ok_and(|h| h.schema_id != BRIDGE_SCHEMA_ID) {
            self.stats.malformed += 1;
            return Ok(());
        }
        let c = match Chunk::decode(bytes) {
            Ok(c) => c,
            Err(_) => {
                self.stats.malformed += 1;
                return Ok(());
            }
        };
        let Some(source) = &self.source else {
            self.stats.before_announce += 1;
            return Ok(());
        };
        if c.stream_id != self.opts.dest_stream_id || c.epoch != source.epoch {
            self.stats.wrong_stream_or_epoch += 1;
            return Ok(());
        }
        let largest_source = source.pools.iter().map(|p| p.stride_bytes).max().unwrap_or(0);
        if c.payload_length > largest_source {
            self.stats.too_large += 1;
            return Ok(());
        }
        self.stats.chunks += 1;
        let frame = match self.assembly.push(&c, Instant::now()) {
            Ok(Some(f)) => f,
            Ok(None) => return Ok(()),
            Err(d) => {
                self.count(d);
                return Ok(());
            }
        };
        let result = self.republish(&frame);
        // The frame's buffer goes back to the assembly for the next: no allocation per frame.
        self.assembly.recycle(frame.payload);
        result
    }

    /// Validates a completed frame and commits it into the local stream.
    fn republish(&mut self, frame: &Assembled) -> Result<(), crate::Error> {
        let Some(source) = &self.source else {
            return Ok(());
        };
        let largest_source = source.pools.iter().map(|p| p.stride_bytes).max().unwrap_or(0);
        // The slot header, validated: values_len, payload_offset 0, the tensor's limits, a pool
        // the source announced whose stride holds the payload.
        let Ok(slot) = SlotHeader::decode(&frame.header) else {
            self.stats.invalid += 1;
            return Ok(());
        };
        let pool_ok = source
            .pools
            .iter()
            .any(|p| p.pool_id == slot.pool_id && p.stride_bytes as usize >= frame.payload.len());
        if slot.values_len_bytes as usize != frame.payload.len()
            || slot.payload_offset != 0
            || slot.seq_commit >> 1 != frame.seq
            || !pool_ok
            || slot.tensor.validate().is_err()
        {
            self.stats.invalid += 1;
            return Ok(());
        }
        let published = match &mut self.sink {
            Sink::TensorPool(producer) => {
                let spec = FrameSpec {
                    tensor: slot.tensor,
                    values_len: slot.values_len_bytes,
                    timestamp_ns: slot.timestamp_ns,
                    meta_version: slot.meta_version,
                };
                // The source's sequence number is kept. One below the local stream's next (the
                // source restarted: a new epoch there, numbered from 0 again) cannot be kept in
                // this epoch: a new local epoch begins, and consumers remap to it.
                if !producer.skip_to(frame.seq) {
                    producer.replace_regions(Self::regions(&self.opts)?);
                    // The new epoch announced before its first descriptor goes.
                    producer.poll()?;
                    producer.skip_to(frame.seq);
                    self.stats.local_epochs += 1;
                    tracing::info!(
                        stream = self.opts.dest_stream_id,
                        seq = frame.seq,
                        "the source's numbers began again: a new local epoch"
                    );
                }
                producer
                    .publish(&spec, frame.trace_id, |b| b.copy_from_slice(&frame.payload))?
                    .is_some()
            }
            Sink::Stream(sink) => {
                let tensor = slot.tensor.validate().expect("validated above");
                sink.publish(largest_source, frame.seq, &slot, &tensor, &frame.payload)
                    .map_err(crate::Error::Stream)?
            }
        };
        if published {
            self.stats.frames += 1;
        } else {
            self.stats.too_large += 1;
        }
        Ok(())
    }
}
