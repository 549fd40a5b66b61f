//! The sending end: a consumer of the local source stream; each frame, copied out of shared
//! memory and re-checked against its commit word after the copy (the Julia sender sends from the
//! ring and can forward a torn payload, aeron.md §2.2 item 2), is cut into chunks and offered on
//! the payload channel. The stream's announce goes on the bridge control channel, its stream id
//! rewritten to the mapping's destination.

use std::time::{Duration, Instant};

use xmem_aeron::{Client, Offer, Publication};
use xmem_tensorpool::codec::ShmPoolAnnounce;
use xmem_tensorpool::paths::AllowedDirs;
use xmem_tp_control::{Channels, Consumer, ConsumerOptions, Endpoint};

use crate::chunk::{chunk_count, Chunk};

/// How a [`Sender`] reads and sends.
#[derive(Debug, Clone)]
pub struct SenderOptions {
    /// The local source stream.
    pub source_stream_id: u32,
    /// Its id on the other host (written in chunks and forwarded announces).
    pub dest_stream_id: u32,
    /// The local control plane of the source stream.
    pub local: Channels,
    /// Where its regions may be mapped from.
    pub allowed: AllowedDirs,
    /// The source's announce period.
    pub announce_period: Duration,
    /// Chunks go here (`aeron:udp?endpoint=…`).
    pub payload: Endpoint,
    /// Forwarded announces go here.
    pub control: Endpoint,
    /// Payload bytes per chunk ([`crate::chunk::chunk_size`]).
    pub chunk_size: u32,
    /// Send CRC32C of each chunk.
    pub integrity: bool,
    /// How long one frame's chunks may wait on back-pressure before the frame is abandoned
    /// (the local producer never waits on the bridge: it is only a consumer).
    pub send_timeout: Duration,
    /// Metadata, QoS and progress forwarded besides frames.
    pub forward: crate::forward::Forwarding,
    /// Read this xmem stream instead of tensor-pool stream `source_stream_id` (whose control
    /// plane, regions and forwarding options are then unused).
    pub xmem_stream: Option<crate::xmem_stream::XmemStream>,
}

/// What a sender did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Frames sent whole.
    pub frames: u64,
    /// Chunks offered and taken.
    pub chunks: u64,
    /// Frames abandoned mid-send (back-pressure past the timeout, a closed publication).
    pub abandoned: u64,
    /// Frames larger than 65535 chunks.
    pub too_large: u64,
    /// Announces forwarded.
    pub announces: u64,
    /// Metadata, QoS and progress messages forwarded.
    pub forwarded: u64,
}

impl SenderStats {
    /// The counters' names, in the order of [`SenderStats::values`].
    pub const NAMES: [&'static str; 6] = [
        "frames",
        "chunks",
        "abandoned",
        "too_large",
        "announces",
        "forwarded",
    ];

    /// The values, in the order of [`SenderStats::NAMES`].
    pub fn values(&self) -> [u64; 6] {
        [
            self.frames,
            self.chunks,
            self.abandoned,
            self.too_large,
            self.announces,
            self.forwarded,
        ]
    }
}

/// The sending end of one mapping.
pub struct Sender {
    opts: SenderOptions,
    source: Source,
    payload: Publication,
    control: Publication,
    /// The encoded head of the chunk being offered (its payload goes beside it, uncopied).
    buf: Vec<u8>,
    in_flight: Option<InFlight>,
    /// The last frame's payload buffer, reused for the next copy (a 1080p frame is 6 MB).
    spare: Vec<u8>,
    next_forward: Instant,
    /// The epoch of the last announce forwarded: a new one goes out at once.
    forwarded_epoch: Option<u64>,
    stats: SenderStats,
    /// [`SenderStats`] in the media driver's counters file (`xmem tp stat`), refreshed with
    /// each announce forwarded.
    counters: Option<xmem_tp_control::counters::Counters>,
    legs: Vec<crate::forward::Leg>,
}

/// Where a sender's frames come from.
#[allow(clippy::large_enum_variant)] // one per sender, made once and never moved
enum Source {
    /// A tensor-pool stream on this host.
    TensorPool(Consumer),
    /// An xmem stream on this host.
    Stream(crate::xmem_stream::StreamSource),
}

/// A frame being sent: its copy (validated after the copy), and how far it got.
struct InFlight {
    epoch: u64,
    seq: u64,
    trace_id: u64,
    header: [u8; xmem_tensorpool::layout::SLOT_SIZE],
    payload: Vec<u8>,
    next_index: u32,
    count: u32,
    started: Instant,
}

impl Sender {
    /// A sender over `client` (the local media driver's; UDP channels included).
    pub fn new(client: &Client, opts: SenderOptions) -> Result<Sender, crate::Error> {
        let (source, legs) = match &opts.xmem_stream {
            Some(stream) => (
                Source::Stream(crate::xmem_stream::StreamSource::new(
                    stream.clone(),
                    opts.dest_stream_id,
                )),
                Vec::new(),
            ),
            None => {
                let mut c = ConsumerOptions::new(opts.source_stream_id, opts.allowed.clone());
                c.channels = opts.local.clone();
                c.announce_period = opts.announce_period;
                let consumer = Consumer::new(client, c)?;
                let legs = crate::forward::legs(
                    client,
                    &opts.forward,
                    &opts.local,
                    &opts.control,
                    opts.source_stream_id,
                    opts.dest_stream_id,
                    true,
                )?;
                (Source::TensorPool(consumer), legs)
            }
        };
        Ok(Sender {
            legs,
            payload: client.publication(&opts.payload.channel, opts.payload.stream_id)?,
            control: client.publication(&opts.control.channel, opts.control.stream_id)?,
            source,
            buf: Vec::with_capacity(512),
            in_flight: None,
            spare: Vec::new(),
            next_forward: Instant::now(),
            forwarded_epoch: None,
            stats: SenderStats::default(),
            counters: xmem_tp_control::counters::Counters::add(
                client,
                &xmem_tp_control::counters::Owner {
                    role: "bridge-sender",
                    stream_id: opts.dest_stream_id,
                    id: opts.source_stream_id,
                    pid: std::process::id(),
                },
                &SenderStats::NAMES,
            ),
            opts,
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> SenderStats {
        SenderStats {
            forwarded: self.legs.iter().map(|l| l.forwarded).sum(),
            ..self.stats
        }
    }

    /// The local consumer (its state and drops), when the source is a tensor-pool stream.
    pub fn consumer(&self) -> Option<&Consumer> {
        match &self.source {
            Source::TensorPool(c) => Some(c),
            Source::Stream(_) => None,
        }
    }

    /// Whether the other end's receiver is connected to the payload channel.
    pub fn is_connected(&self) -> bool {
        self.payload.is_connected()
    }

    /// One duty cycle: the frame in flight continued (its chunks are offered until Aeron
    /// pushes back, then the next cycle goes on: nothing here waits), the next local frame
    /// taken, the announce forwarded when due.
    pub fn poll(&mut self) -> Result<usize, crate::Error> {
        let mut work = self.continue_frame();
        for l in &mut self.legs {
            work += l.poll()?;
        }
        if self.in_flight.is_none() {
            let mut payload = std::mem::take(&mut self.spare);
            let next = match &mut self.source {
                Source::TensorPool(consumer) => {
                    let mut next = None;
                    work += consumer.poll(1, |f| {
                        payload.clear();
                        payload.extend_from_slice(f.bytes);
                        next = Some((
                            f.descriptor.epoch,
                            f.descriptor.seq,
                            f.descriptor.trace_id,
                            f.accepted.slot.encode(),
                        ));
                    })?;
                    next
                }
                Source::Stream(source) => source
                    .next(&mut payload)
                    .map(|(epoch, f)| (epoch, f.seq, 0, f.header)),
            };
            match next {
                Some((epoch, seq, trace_id, header)) => {
                    work += 1;
                    let f = InFlight {
                        epoch,
                        seq,
                        trace_id,
                        header,
                        payload,
                        next_index: 0,
                        count: 0,
                        started: Instant::now(),
                    };
                    self.start(f);
                    work += self.continue_frame();
                }
                None => self.spare = payload,
            }
        }
        let announce = match &self.source {
            Source::TensorPool(c) => c.announce(),
            Source::Stream(s) => s.announce(),
        };
        let fresh = announce.is_some_and(|a| self.forwarded_epoch != Some(a.epoch));
        if fresh || Instant::now() >= self.next_forward {
            self.next_forward = Instant::now() + self.opts.announce_period;
            if let Some(c) = &self.counters {
                c.set(&self.stats().values());
            }
            if let Some(a) = announce {
                let a = ShmPoolAnnounce {
                    stream_id: self.opts.dest_stream_id,
                    ..a.clone()
                };
                if let Ok(bytes) = a.encode() {
                    if self.control.offer(&bytes).is_sent() {
                        self.stats.announces += 1;
                        self.forwarded_epoch = Some(a.epoch);
                    }
                }
            }
        }
        Ok(work)
    }

    /// Takes a frame to send, if it fits in 65535 chunks.
    fn start(&mut self, mut f: InFlight) {
        match chunk_count(f.payload.len() as u32, self.opts.chunk_size) {
            Some(count) => {
                f.count = count;
                self.in_flight = Some(f);
            }
            None => {
                self.stats.too_large += 1;
                self.spare = f.payload;
            }
        }
    }

    /// Offers the frame in flight's next chunks; returns how many went.
    fn continue_frame(&mut self) -> usize {
        let Some(f) = &mut self.in_flight else { return 0 };
        let size = self.opts.chunk_size;
        let mut sent = 0;
        while f.next_index < f.count {
            let index = f.next_index;
            let start = (index * size) as usize;
            let end = (start + size as usize).min(f.payload.len());
            let part = &f.payload[start.min(end)..end];
            let header = (index == 0).then_some(&f.header[..]);
            let chunk = Chunk {
                stream_id: self.opts.dest_stream_id,
                epoch: f.epoch,
                seq: f.seq,
                trace_id: f.trace_id,
                index,
                count: f.count,
                offset: start as u32,
                payload_length: f.payload.len() as u32,
                crc32c: if self.opts.integrity {
                    Chunk::checksum(header, part)
                } else {
                    0
                },
                header,
                payload: part,
            };
            chunk.encode_head_into(&mut self.buf);
            match self.payload.offer_parts(&[&self.buf, part]) {
                Offer::Sent => {
                    self.stats.chunks += 1;
                    f.next_index += 1;
                    sent += 1;
                }
                Offer::BackPressured | Offer::AdminAction if f.started.elapsed() < self.opts.send_timeout => {
                    return sent;
                }
                _ => {
                    // No receiver, a closed publication, or stuck past the timeout: the frame
                    // is abandoned (the receiver drops what it has of it when it times out).
                    self.stats.abandoned += 1;
                    self.finish();
                    return sent;
                }
            }
        }
        self.stats.frames += 1;
        self.finish();
        sent
    }

    /// Ends the frame in flight, keeping its buffer for the next.
    fn finish(&mut self) {
        if let Some(f) = self.in_flight.take() {
            self.spare = f.payload;
        }
    }
}
