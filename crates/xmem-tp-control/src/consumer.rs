//! A consumer over Aeron: finds its stream by announces, maps, follows descriptors.

use std::time::{Duration, Instant};

use xmem_aeron::{Client, Publication, Subscription};
use xmem_tensorpool::codec::{FrameDescriptor, ProgressState, ShmPoolAnnounce};
use xmem_tensorpool::commit::{Accepted, Drop};
use xmem_tensorpool::paths::AllowedDirs;
use xmem_tensorpool::stream::{Remap, TpConsumer, CLOCK_MONOTONIC};

use crate::channels::{Channels, Endpoint};
use crate::messages::{self, ConsumerConfig, ConsumerHello, Incoming, Mode, QosConsumer, StreamRequest};
use crate::{encode_err, Result, ANNOUNCE_PERIOD};

/// `announceClockDomain` REALTIME_SYNCED.
const CLOCK_REALTIME_SYNCED: u8 = 2;

/// How a [`Consumer`] finds and follows its stream.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// The stream.
    pub stream_id: u32,
    /// Its id (0: a random nonzero one).
    pub consumer_id: u32,
    /// The streams of the control plane.
    pub channels: Channels,
    /// The producer's announce period: announces older than three of them are stale, and so
    /// is a region whose activity stamp is.
    pub announce_period: Duration,
    /// Directories whose regions may be mapped.
    pub allowed: AllowedDirs,
    /// STREAM or RATE_LIMITED.
    pub mode: Mode,
    /// Most frames a second (RATE_LIMITED; 0: unlimited).
    pub max_rate_hz: u32,
    /// A per-consumer descriptor stream to ask for.
    pub descriptor_stream: Option<StreamRequest>,
    /// A per-consumer control stream to ask for.
    pub control_stream: Option<StreamRequest>,
    /// Whether it can map shared memory (`false`: it asks for the fallback).
    pub supports_shm: bool,
    /// Whether it wants FrameProgress.
    pub supports_progress: bool,
}

impl ConsumerOptions {
    /// A consumer of `stream_id` with the defaults, mapping regions under `allowed`.
    pub fn new(stream_id: u32, allowed: AllowedDirs) -> ConsumerOptions {
        ConsumerOptions {
            stream_id,
            consumer_id: 0,
            channels: Channels::default(),
            announce_period: ANNOUNCE_PERIOD,
            allowed,
            mode: Mode::Stream,
            max_rate_hz: 0,
            descriptor_stream: None,
            control_stream: None,
            supports_shm: true,
            supports_progress: false,
        }
    }
}

/// Where the consumer stands (W-15.12-1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Nothing mapped: waiting for a fresh announce.
    Unmapped,
    /// The regions of `epoch` are mapped; frames are read from them.
    Mapped {
        /// The epoch.
        epoch: u64,
    },
    /// Told not to use shared memory (`useShm = 0`): payloads come from `uri`.
    Fallback {
        /// The fallback URI.
        uri: String,
    },
}

/// Why the last unmap happened, and counters by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Frames accepted (validated through the seqlock).
    pub accepted: u64,
    /// Frames skipped (sequence gaps).
    pub drops_gap: u64,
    /// Frames overwritten, torn or not yet committed when read.
    pub drops_late: u64,
    /// Frames whose slot failed validation.
    pub drops_invalid: u64,
    /// Descriptors of another epoch than the one mapped.
    pub drops_epoch: u64,
    /// Descriptors that came while nothing was mapped.
    pub drops_unmapped: u64,
    /// Frames whose progress went backwards (W-10.2.2-1).
    pub drops_progress: u64,
    /// Frames held back by the local rate limit.
    pub drops_rate: u64,
    /// Announces taken (fresh, ours).
    pub announces: u64,
    /// Announces dropped as stale (older than three periods).
    pub stale_announces: u64,
    /// Announces stamped before this consumer joined (MONOTONIC only; W-15.7-2).
    pub early_announces: u64,
    /// Announces refused by the checks before mapping (layout, geometry, paths) or of an
    /// unusable clock domain.
    pub bad_announces: u64,
    /// Announces of a lower epoch than the one mapped.
    pub old_announces: u64,
    /// Maps and remaps.
    pub maps: u64,
    /// Unmaps because no fresh announce came for three periods (W-15.14-1).
    pub unmaps_announce: u64,
    /// Unmaps because the regions' activity stamp went stale (W-7.1-3).
    pub unmaps_activity: u64,
    /// Messages of the wire schema that failed the codec's checks (ignored).
    pub malformed: u64,
    /// Configs taken.
    pub configs: u64,
    /// FrameProgress messages taken.
    pub progress: u64,
}

/// One accepted frame.
#[derive(Debug)]
pub struct Frame<'a> {
    /// Its descriptor.
    pub descriptor: &'a FrameDescriptor,
    /// The validated slot and tensor.
    pub accepted: &'a Accepted,
    /// The payload bytes, copied out of the pool and checked after the copy.
    pub bytes: &'a [u8],
}

/// A stream's consumer.
pub struct Consumer {
    opts: ConsumerOptions,
    client: Client,
    tp: TpConsumer,
    state: State,
    announces_in: Vec<Subscription>,
    descriptors_in: Subscription,
    shared_descriptors: Endpoint,
    control: Publication,
    qos: Publication,
    join_ns: u64,
    last_announce: Instant,
    mapped_at: Instant,
    next_qos: Instant,
    hello_due: Option<Instant>,
    config: Option<ConsumerConfig>,
    last_seq: Option<u64>,
    next_allowed: Instant,
    /// Progress per ring slot: (seq, bytes filled) (W-10.2.2-1: sized to the ring).
    progress: Vec<(u64, u64)>,
    buf: Vec<u8>,
    /// Descriptors taken from one poll, kept to reuse its allocation.
    pending: Vec<FrameDescriptor>,
    stats: ConsumerStats,
    polls: u64,
    counters: Option<crate::counters::Counters>,
}

/// The names of a consumer's counters, in the order `send_due` sets them.
const CONSUMER_COUNTERS: [&str; 9] = [
    "accepted",
    "drops gap",
    "drops late",
    "drops invalid",
    "drops epoch",
    "drops unmapped",
    "maps",
    "unmaps",
    "state (0 unmapped, 1 mapped, 2 fallback)",
];

/// While mapped, the control-plane side of a poll (announces, configs, liveness, QoS, the
/// client's health) runs once every this many polls: the descriptor path of a busy-polling
/// consumer stays a single subscription poll. Unmapped, it runs every time.
const HOUSEKEEPING_EVERY: u64 = 16;

fn random_id() -> u32 {
    (xmem_core::os::random::u64() as u32).max(1)
}

impl Consumer {
    /// A consumer over `client`. It maps nothing until an announce comes.
    pub fn new(client: &Client, mut opts: ConsumerOptions) -> Result<Consumer> {
        if opts.consumer_id == 0 {
            opts.consumer_id = random_id();
        }
        let c = &opts.channels;
        let mut announces_in = vec![client.subscription(&c.announce.untethered(), c.announce.stream_id)?];
        // Announces come on the control stream too (a no-driver producer of tensor_pool_c sends
        // them there; a Julia consumer looks there by default).
        if c.control != c.announce {
            announces_in.push(client.subscription(&c.control.untethered(), c.control.stream_id)?);
        }
        let descriptors_in = client.subscription(&c.descriptor.untethered(), c.descriptor.stream_id)?;
        let control = client.publication(&c.control.channel, c.control.stream_id)?;
        let qos = client.publication(&c.qos.channel, c.qos.stream_id)?;
        let shared_descriptors = c.descriptor.clone();
        Ok(Consumer {
            client: client.clone(),
            tp: TpConsumer::new(opts.allowed.clone()),
            state: State::Unmapped,
            announces_in,
            descriptors_in,
            shared_descriptors,
            control,
            qos,
            join_ns: crate::now_ns(),
            last_announce: Instant::now(),
            mapped_at: Instant::now(),
            next_qos: Instant::now() + opts.announce_period,
            hello_due: None,
            config: None,
            last_seq: None,
            next_allowed: Instant::now(),
            progress: Vec::new(),
            buf: Vec::new(),
            pending: Vec::new(),
            stats: ConsumerStats::default(),
            polls: 0,
            counters: crate::counters::Counters::add(
                client,
                &crate::counters::Owner {
                    role: "consumer",
                    stream_id: opts.stream_id,
                    id: opts.consumer_id,
                    pid: std::process::id(),
                },
                &CONSUMER_COUNTERS,
            ),
            opts,
        })
    }

    /// Its consumer id.
    pub fn consumer_id(&self) -> u32 {
        self.opts.consumer_id
    }

    /// Where it stands.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Counters so far.
    pub fn stats(&self) -> ConsumerStats {
        let c = self.tp.counters();
        ConsumerStats {
            accepted: c.accepted,
            drops_gap: c.drops_gap,
            drops_late: c.drops_late,
            drops_invalid: c.drops_invalid,
            ..self.stats
        }
    }

    /// The announce of the mapped epoch.
    pub fn announce(&self) -> Option<&ShmPoolAnnounce> {
        self.tp.announce()
    }

    /// The descriptor stream it follows now (the shared one, or its own once granted).
    pub fn descriptor_stream(&self) -> Endpoint {
        Endpoint {
            channel: self.descriptors_in.channel().to_string(),
            stream_id: self.descriptors_in.stream_id(),
        }
    }

    /// Maps the regions a driver granted (the announce of an attach response) at once, with
    /// the checks of any announce.
    /// An attach response is authoritative: no freshness or join-time rule applies to it.
    pub fn adopt(&mut self, a: &ShmPoolAnnounce) -> Result<()> {
        if let State::Fallback { .. } = self.state {
            return Ok(());
        }
        self.map(a);
        Ok(())
    }

    /// Unmaps and waits for the next announce: its lease was revoked, or its driver is gone.
    pub fn drop_mapping(&mut self) {
        self.tp.unmap();
        self.state = State::Unmapped;
    }

    /// The last config a producer or supervisor sent it.
    pub fn config(&self) -> Option<&ConsumerConfig> {
        self.config.as_ref()
    }

    /// One duty cycle: announces and configs, liveness, then up to `limit` descriptors, each
    /// accepted frame handed to `on_frame`. Returns the work done (0: nothing came).
    pub fn poll(&mut self, limit: usize, mut on_frame: impl FnMut(Frame<'_>)) -> Result<usize> {
        self.polls = self.polls.wrapping_add(1);
        let mut work = 0;
        if !matches!(self.state, State::Mapped { .. }) || self.polls.is_multiple_of(HOUSEKEEPING_EVERY) {
            work += self.housekeeping()?;
        }
        let mut descriptors = std::mem::take(&mut self.pending);
        let mut malformed = 0;
        let polled = self
            .descriptors_in
            .poll(limit, |m| match messages::decode(m.bytes) {
                Ok(Incoming::Descriptor(d)) => descriptors.push(d),
                Err(messages::Ignored::Malformed(_)) => malformed += 1,
                _ => {}
            });
        self.stats.malformed += malformed;
        for d in &descriptors {
            if d.stream_id == self.opts.stream_id {
                self.on_descriptor(d, &mut on_frame);
            }
        }
        descriptors.clear();
        self.pending = descriptors;
        Ok(work + polled?)
    }

    /// The control plane's side: announces, configs and progress in, liveness, hello and QoS
    /// out, and whether the driver still answers.
    fn housekeeping(&mut self) -> Result<usize> {
        self.client.check()?;
        let mut incoming = Vec::new();
        let mut work = 0;
        for s in &mut self.announces_in {
            work += s.poll(16, |m| incoming.push(messages::decode(m.bytes)))?;
        }
        for m in incoming {
            let m = match m {
                Ok(m) => m,
                Err(messages::Ignored::Malformed(e)) => {
                    self.stats.malformed += 1;
                    tracing::debug!(
                        stream = self.opts.stream_id,
                        "malformed control message ignored: {e}"
                    );
                    continue;
                }
                Err(_) => continue,
            };
            match m {
                Incoming::Announce(a) if a.stream_id == self.opts.stream_id => self.on_announce(&a)?,
                Incoming::Config(c)
                    if c.stream_id == self.opts.stream_id && c.consumer_id == self.opts.consumer_id =>
                {
                    self.on_config(c)?
                }
                Incoming::Progress(p) if p.stream_id == self.opts.stream_id => {
                    self.on_progress(p.seq, p.payload_bytes_filled, p.state)
                }
                _ => {}
            }
        }
        self.check_liveness();
        self.send_due()?;
        Ok(work)
    }

    fn on_descriptor(&mut self, d: &FrameDescriptor, on_frame: &mut impl FnMut(Frame<'_>)) {
        if !matches!(self.state, State::Mapped { .. }) {
            self.stats.drops_unmapped += 1;
            return;
        }
        // A local rate limit when RATE_LIMITED was asked and not served on a stream of its own.
        if self.opts.mode == Mode::RateLimited && self.opts.max_rate_hz > 0 && !self.own_descriptor_stream() {
            let now = Instant::now();
            if now < self.next_allowed {
                self.stats.drops_rate += 1;
                return;
            }
            self.next_allowed = now + Duration::from_secs_f64(1.0 / f64::from(self.opts.max_rate_hz));
        }
        if self.progress_regressed(d.seq) {
            self.stats.drops_progress += 1;
            return;
        }
        let mut buf = std::mem::take(&mut self.buf);
        match self.tp.read(d, &mut buf) {
            Ok(accepted) => {
                self.last_seq = Some(self.last_seq.map_or(accepted.seq, |s| s.max(accepted.seq)));
                on_frame(Frame {
                    descriptor: d,
                    accepted: &accepted,
                    bytes: &buf,
                });
            }
            Err(Drop::Epoch { .. }) => {
                // The producer moved on; the next announce remaps ([C] unmaps at once).
                self.stats.drops_epoch += 1;
            }
            Err(Drop::Unmapped) => self.stats.drops_unmapped += 1,
            Err(_) => {} // late, gap, invalid: counted by the reader
        }
        self.buf = buf;
    }

    fn own_descriptor_stream(&self) -> bool {
        self.descriptors_in.stream_id() != self.shared_descriptors.stream_id
            || self.descriptors_in.channel() != self.shared_descriptors.untethered()
    }

    /// W-15.7-1/2 and the announce rules of §3: the clock domain, freshness, the join time,
    /// the highest epoch.
    fn on_announce(&mut self, a: &ShmPoolAnnounce) -> Result<()> {
        let window = self.opts.announce_period * 3;
        let now = match a.announce_clock_domain {
            CLOCK_MONOTONIC => crate::now_ns(),
            CLOCK_REALTIME_SYNCED => crate::realtime_ns(),
            _ => {
                self.stats.bad_announces += 1;
                return Ok(());
            }
        };
        if now.saturating_sub(a.announce_timestamp_ns) > window.as_nanos() as u64
            || a.announce_timestamp_ns > now + window.as_nanos() as u64
        {
            self.stats.stale_announces += 1;
            return Ok(());
        }
        if a.announce_clock_domain == CLOCK_MONOTONIC && a.announce_timestamp_ns < self.join_ns {
            self.stats.early_announces += 1;
            return Ok(());
        }
        if let Some(mapped) = self.tp.epoch() {
            if a.epoch < mapped {
                self.stats.old_announces += 1;
                return Ok(());
            }
        }
        self.stats.announces += 1;
        if matches!(self.state, State::Fallback { .. }) {
            return Ok(());
        }
        self.map(a);
        Ok(())
    }

    /// Maps `a`'s regions (a no-op for the epoch mapped already).
    fn map(&mut self, a: &ShmPoolAnnounce) {
        self.last_announce = Instant::now();
        match self.tp.on_announce(a) {
            Ok(Remap::Same) => {}
            Ok(Remap::Mapped { epoch } | Remap::Remapped { to: epoch, .. }) => {
                self.stats.maps += 1;
                self.mapped_at = Instant::now();
                self.state = State::Mapped { epoch };
                self.progress = vec![(u64::MAX, 0); a.header_nslots as usize];
                self.hello_due = Some(Instant::now());
            }
            Err(e) => {
                self.stats.bad_announces += 1;
                self.state = State::Unmapped;
                tracing::warn!(stream = a.stream_id, "announce refused: {e}");
            }
        }
    }

    /// W-7.1-3 and W-15.14-1: no fresh announce for three periods, or an activity stamp older
    /// than three periods (after a grace of three periods from mapping), is a dead producer's
    /// stream: unmap, and wait for an announce.
    fn check_liveness(&mut self) {
        if !matches!(self.state, State::Mapped { .. }) {
            return;
        }
        let window = self.opts.announce_period * 3;
        if self.last_announce.elapsed() > window {
            self.stats.unmaps_announce += 1;
            self.unmap();
            return;
        }
        if self.mapped_at.elapsed() > window {
            let activity = self.tp.activity_ns().unwrap_or(0);
            if crate::now_ns().saturating_sub(activity) > window.as_nanos() as u64 {
                self.stats.unmaps_activity += 1;
                self.unmap();
            }
        }
    }

    fn unmap(&mut self) {
        self.tp.unmap();
        self.state = State::Unmapped;
    }

    fn on_config(&mut self, c: ConsumerConfig) -> Result<()> {
        self.stats.configs += 1;
        if self.config.as_ref() == Some(&c) {
            return Ok(());
        }
        if !c.use_shm {
            self.tp.unmap();
            self.state = State::Fallback {
                uri: c.fallback_uri.clone(),
            };
        } else if matches!(self.state, State::Fallback { .. }) {
            // Leaving FALLBACK: map again from the next announce.
            self.state = State::Unmapped;
        }
        let want = match &c.descriptor {
            Some(r) => Endpoint {
                channel: r.channel.clone(),
                stream_id: r.stream_id as i32,
            },
            None => self.shared_descriptors.clone(),
        };
        let current = self.descriptor_stream();
        if current.stream_id != want.stream_id || current.channel != want.untethered() {
            self.descriptors_in = self.client.subscription(&want.untethered(), want.stream_id)?;
        }
        self.config = Some(c);
        Ok(())
    }

    fn on_progress(&mut self, seq: u64, filled: u64, _state: ProgressState) {
        self.stats.progress += 1;
        if self.progress.is_empty() {
            return;
        }
        let i = (seq as usize) & (self.progress.len() - 1);
        let (s, f) = self.progress[i];
        if s == seq && filled < f {
            self.progress[i] = (seq, u64::MAX); // went backwards: the frame is dropped
        } else if s != seq || f != u64::MAX {
            self.progress[i] = (seq, filled.max(if s == seq { f } else { 0 }));
        }
    }

    fn progress_regressed(&self, seq: u64) -> bool {
        if self.progress.is_empty() {
            return false;
        }
        self.progress[(seq as usize) & (self.progress.len() - 1)] == (seq, u64::MAX)
    }

    fn send_due(&mut self) -> Result<()> {
        let now = Instant::now();
        if self.hello_due.is_some_and(|t| now >= t) {
            let h = ConsumerHello {
                stream_id: self.opts.stream_id,
                consumer_id: self.opts.consumer_id,
                supports_shm: self.opts.supports_shm,
                supports_progress: self.opts.supports_progress,
                mode: self.opts.mode,
                max_rate_hz: self.opts.max_rate_hz,
                expected_layout_version: xmem_tensorpool::layout::LAYOUT_VERSION,
                progress: [None; 3],
                descriptor: self.opts.descriptor_stream.clone(),
                control: self.opts.control_stream.clone(),
            };
            let bytes = h.encode().map_err(encode_err("ConsumerHello"))?;
            let sent = self.control.offer(&bytes).is_sent();
            // Asked for something: say it again each period until a config answers.
            let asks = h.descriptor.is_some() || h.control.is_some() || !h.supports_shm;
            self.hello_due =
                (!sent || (asks && self.config.is_none())).then(|| now + self.opts.announce_period);
        }
        if now >= self.next_qos {
            self.next_qos = now + self.opts.announce_period;
            let c = self.tp.counters();
            let q = QosConsumer {
                stream_id: self.opts.stream_id,
                consumer_id: self.opts.consumer_id,
                epoch: self.tp.epoch().unwrap_or(0),
                last_seq_seen: self.last_seq.unwrap_or(0),
                drops_gap: c.drops_gap,
                drops_late: c.drops_late,
                mode: self.opts.mode,
            };
            let _ = self.qos.offer(&q.encode().map_err(encode_err("QosConsumer"))?);
            if let Some(counters) = &self.counters {
                let s = self.stats();
                let state = match self.state {
                    State::Unmapped => 0,
                    State::Mapped { .. } => 1,
                    State::Fallback { .. } => 2,
                };
                counters.set(&[
                    s.accepted,
                    s.drops_gap,
                    s.drops_late,
                    s.drops_invalid,
                    s.drops_epoch,
                    s.drops_unmapped,
                    s.maps,
                    s.unmaps_announce + s.unmaps_activity,
                    state,
                ]);
            }
        }
        Ok(())
    }
}
