//! A no-driver producer over Aeron: it owns its regions and says so.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use xmem_aeron::{Client, Offer, Publication, Subscription};
use xmem_tensorpool::codec::{FrameDescriptor, FrameProgress, ProgressState};
use xmem_tensorpool::commit::FrameSpec;
use xmem_tensorpool::stream::TpProducer;

use crate::channels::{Channels, Endpoint};
use crate::messages::{
    self, ConsumerConfig, ConsumerHello, DataSourceAnnounce, DataSourceMeta, Incoming, QosProducer,
};
use crate::supervisor::{Policy, Supervisor};
use crate::{encode_err, Result, ANNOUNCE_PERIOD};

/// How a [`Producer`] talks.
#[derive(Debug, Clone)]
pub struct ProducerOptions {
    /// Its streams.
    pub channels: Channels,
    /// How often it announces its regions and sends QoS (1 s, as both implementations).
    pub announce_period: Duration,
    /// Answer consumers' hellos itself, as tensor_pool_c's consumer manager does (`None`: a
    /// supervisor elsewhere answers, and the configs it sends are served all the same).
    pub supervise: Option<Policy>,
    /// A name and a line of description, sent as DataSourceAnnounce every announce period.
    pub data_source: Option<(String, String)>,
}

impl Default for ProducerOptions {
    fn default() -> Self {
        ProducerOptions {
            channels: Channels::default(),
            announce_period: ANNOUNCE_PERIOD,
            supervise: Some(Policy::default()),
            data_source: None,
        }
    }
}

/// What a producer did, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerStats {
    /// Frames committed.
    pub frames: u64,
    /// Frames larger than every pool (dropped before any write).
    pub too_large: u64,
    /// Descriptors in the shared descriptor stream's log.
    pub descriptors: u64,
    /// Descriptors that found no subscriber (nobody listens: counted, not an error).
    pub not_connected: u64,
    /// Descriptors refused for back-pressure or a log rotation (dropped, never waited on).
    pub back_pressured: u64,
    /// Descriptors refused because the publication is closed or at its end.
    pub failed: u64,
    /// Descriptors sent on per-consumer streams.
    pub per_consumer: u64,
    /// Descriptors a per-consumer stream's rate limit held back.
    pub rate_limited: u64,
    /// Announces sent.
    pub announces: u64,
    /// QosProducer messages sent.
    pub qos: u64,
    /// ConsumerConfig messages sent.
    pub configs: u64,
    /// FrameProgress messages sent.
    pub progress: u64,
    /// TraceLinkSet messages sent.
    pub trace_links: u64,
    /// TraceLinkSet messages that did not go (no subscriber, back-pressure): dropped, as
    /// TraceLink wants (it never blocks a stage).
    pub trace_links_dropped: u64,
    /// Consumers heard from within the last five announce periods.
    pub consumers: usize,
}

struct ConsumerEntry {
    hello: Option<ConsumerHello>,
    config: Option<ConsumerConfig>,
    descriptor: Option<Publication>,
    control: Option<Publication>,
    min_interval: Option<Duration>,
    next_due: Instant,
    seen: Instant,
}

/// A stream's producer: regions, commit protocol, and the messages that describe them.
pub struct Producer {
    tp: TpProducer,
    client: Client,
    opts: ProducerOptions,
    control: Publication,
    announce: Option<Publication>,
    descriptor: Publication,
    qos: Publication,
    metadata: Publication,
    control_in: Subscription,
    qos_in: Subscription,
    supervisor: Option<Supervisor>,
    consumers: HashMap<u32, ConsumerEntry>,
    meta: Option<DataSourceMeta>,
    next_announce: Instant,
    /// `next_announce` in CLOCK_MONOTONIC ns, which `publish` compares with the coarse clock:
    /// a few ns a frame instead of a full clock read, announces late by at most one tick.
    next_announce_ns: u64,
    stats: ProducerStats,
    counters: Option<crate::counters::Counters>,
    /// Attached through a driver: the driver announces, this producer only stamps activity.
    driven: bool,
}

/// The names of a producer's counters, in the order `publish_counters` sets them.
const PRODUCER_COUNTERS: [&str; 8] = [
    "frames",
    "descriptors sent",
    "descriptors without subscriber",
    "descriptors back-pressured",
    "descriptors failed",
    "announces",
    "per-consumer descriptors",
    "consumers",
];

impl Producer {
    /// A producer of `tp`'s stream over `client`. It announces at once.
    pub fn new(client: &Client, tp: TpProducer, opts: ProducerOptions) -> Result<Producer> {
        Producer::build(client, tp, opts, false)
    }

    /// A producer writing regions a driver leased to it ([`TpProducer::attach`]): the driver
    /// announces them, so this one sends no `ShmPoolAnnounce`; it stamps their activity every
    /// announce period, as a C producer in driver mode does.
    pub fn driven(client: &Client, tp: TpProducer, opts: ProducerOptions) -> Result<Producer> {
        Producer::build(client, tp, opts, true)
    }

    /// Makes `seq` the next frame's number (a bridge keeps its source's); `false` if used.
    pub fn skip_to(&mut self, seq: u64) -> bool {
        self.tp.skip_to(seq)
    }

    /// Takes the regions of a new epoch (after a reattach); frames go there from now on.
    pub fn replace_regions(&mut self, tp: TpProducer) {
        self.tp = tp;
        self.next_announce = Instant::now();
        self.next_announce_ns = 0;
    }

    fn build(client: &Client, tp: TpProducer, opts: ProducerOptions, driven: bool) -> Result<Producer> {
        let c = &opts.channels;
        let control = client.publication(&c.control.channel, c.control.stream_id)?;
        let announce = if c.announce == c.control {
            None
        } else {
            Some(client.publication(&c.announce.channel, c.announce.stream_id)?)
        };
        let descriptor = client.publication(&c.descriptor.channel, c.descriptor.stream_id)?;
        let qos = client.publication(&c.qos.channel, c.qos.stream_id)?;
        let metadata = client.publication(&c.metadata.channel, c.metadata.stream_id)?;
        let control_in = client.subscription(&c.control.untethered(), c.control.stream_id)?;
        let qos_in = client.subscription(&c.qos.untethered(), c.qos.stream_id)?;
        let mut p = Producer {
            tp,
            client: client.clone(),
            supervisor: opts.supervise.clone().map(Supervisor::new),
            opts,
            control,
            announce,
            descriptor,
            qos,
            metadata,
            control_in,
            qos_in,
            consumers: HashMap::new(),
            meta: None,
            next_announce: Instant::now(),
            next_announce_ns: 0,
            stats: ProducerStats::default(),
            counters: None,
            driven,
        };
        let owner = crate::counters::Owner {
            role: "producer",
            stream_id: p.stream_id(),
            id: p.tp.announce().producer_id,
            pid: std::process::id(),
        };
        p.counters = crate::counters::Counters::add(client, &owner, &PRODUCER_COUNTERS);
        p.poll()?;
        Ok(p)
    }

    /// The stream's regions and their announce.
    pub fn regions(&self) -> &TpProducer {
        &self.tp
    }

    /// The stream id.
    pub fn stream_id(&self) -> u32 {
        self.tp.announce().stream_id
    }

    /// Counters so far.
    pub fn stats(&self) -> ProducerStats {
        ProducerStats {
            consumers: self.consumers.len(),
            ..self.stats
        }
    }

    /// Whether some consumer subscribes to the shared descriptor stream.
    pub fn is_connected(&self) -> bool {
        self.descriptor.is_connected()
    }

    /// Commits a frame and sends its descriptor (see [`TpProducer::publish`]); `trace_id` 0 is
    /// "not traced". Never waits: a descriptor nobody takes is counted. `None`: no pool holds
    /// the frame.
    pub fn publish(
        &mut self,
        spec: &FrameSpec,
        trace_id: u64,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<Option<FrameDescriptor>> {
        let Some(mut d) = self.tp.publish(spec, fill)? else {
            self.stats.too_large += 1;
            return Ok(None);
        };
        d.trace_id = trace_id;
        self.stats.frames += 1;
        let bytes = d.encode();
        match self.descriptor.offer(&bytes) {
            Offer::Sent => self.stats.descriptors += 1,
            Offer::NotConnected => self.stats.not_connected += 1,
            Offer::BackPressured | Offer::AdminAction => self.stats.back_pressured += 1,
            Offer::Closed | Offer::MaxPositionExceeded | Offer::Failed => self.stats.failed += 1,
        }
        if !self.consumers.is_empty() {
            // The clock only for a rate-limited stream (a clock read costs as much as a commit).
            let mut now = None;
            for e in self.consumers.values_mut() {
                let Some(publication) = &e.descriptor else {
                    continue;
                };
                if let Some(interval) = e.min_interval {
                    let now = *now.get_or_insert_with(Instant::now);
                    if now < e.next_due {
                        self.stats.rate_limited += 1;
                        continue;
                    }
                    e.next_due = now + interval;
                }
                if publication.offer(&bytes).is_sent() {
                    self.stats.per_consumer += 1;
                }
            }
        }
        if xmem_core::os::time::monotonic_coarse_ns() >= self.next_announce_ns {
            self.poll()?;
        }
        Ok(Some(d))
    }

    /// Sends FrameProgress for frame `seq` (a hint for consumers that asked for progress: on the
    /// control stream and their per-consumer control streams). Nothing is sent when no consumer
    /// asked.
    pub fn progress(&mut self, seq: u64, filled: u64, state: ProgressState) {
        let wanted = self
            .consumers
            .values()
            .any(|e| e.hello.as_ref().is_some_and(|h| h.supports_progress));
        if !wanted {
            return;
        }
        let a = self.tp.announce();
        let bytes = FrameProgress {
            stream_id: a.stream_id,
            epoch: a.epoch,
            seq,
            payload_bytes_filled: filled,
            state,
        }
        .encode();
        if self.control.offer(&bytes).is_sent() {
            self.stats.progress += 1;
        }
        for e in self.consumers.values() {
            if let Some(p) = &e.control {
                let _ = p.offer(&bytes);
            }
        }
    }

    /// Sends a TraceLinkSet (an N→1 stage's output and the trace ids it was made from) on the
    /// control stream. Never waits (TL-5-1): a set that cannot go now is counted and dropped.
    /// A set that breaks TL-9-1 (no parent, a zero or repeated one) is refused.
    pub fn link(&mut self, set: &crate::trace::TraceLinkSet) -> Result<()> {
        let bytes = set.encode().map_err(encode_err("TraceLinkSet"))?;
        if self.control.offer(&bytes).is_sent() {
            self.stats.trace_links += 1;
        } else {
            self.stats.trace_links_dropped += 1;
        }
        Ok(())
    }

    /// Sets the stream's metadata (sent now and every announce period, version `meta_version`).
    pub fn set_meta(&mut self, meta_version: u32, attributes: Vec<(String, String, Vec<u8>)>) -> Result<()> {
        self.meta = Some(DataSourceMeta {
            stream_id: self.stream_id(),
            meta_version,
            timestamp_ns: crate::now_ns(),
            attributes,
        });
        self.send_metadata()
    }

    /// One duty cycle: the announce, QoS and metadata when due, consumers' hellos, configs and
    /// QoS. Call it at least every announce period (`publish` calls it when one is due).
    pub fn poll(&mut self) -> Result<usize> {
        self.client.check()?;
        let now = Instant::now();
        let mut work = 0;
        if now >= self.next_announce {
            self.next_announce = now + self.opts.announce_period;
            self.next_announce_ns =
                crate::now_ns().saturating_add(self.opts.announce_period.as_nanos() as u64);
            self.announce_now()?;
            self.send_qos()?;
            self.send_metadata()?;
            let stale = self.opts.announce_period * 5;
            self.consumers.retain(|_, e| e.seen.elapsed() <= stale);
            if let Some(s) = &mut self.supervisor {
                s.sweep(stale);
            }
            if let Some(c) = &self.counters {
                let s = self.stats();
                c.set(&[
                    s.frames,
                    s.descriptors,
                    s.not_connected,
                    s.back_pressured,
                    s.failed,
                    s.announces,
                    s.per_consumer,
                    s.consumers as u64,
                ]);
            }
            work += 1;
        }
        let mut incoming = Vec::new();
        work += self
            .control_in
            .poll(16, |m| incoming.push(messages::decode(m.bytes)))?;
        work += self
            .qos_in
            .poll(16, |m| incoming.push(messages::decode(m.bytes)))?;
        let stream_id = self.stream_id();
        for m in incoming.into_iter().flatten() {
            match m {
                Incoming::Hello(h) if h.stream_id == stream_id => self.on_hello(h)?,
                Incoming::Config(c) if c.stream_id == stream_id => self.apply(c)?,
                Incoming::QosConsumer(q) if q.stream_id == stream_id => {
                    if let Some(e) = self.consumers.get_mut(&q.consumer_id) {
                        e.seen = Instant::now();
                    }
                    if let Some(s) = &mut self.supervisor {
                        s.touch(q.stream_id, q.consumer_id);
                    }
                }
                _ => {}
            }
        }
        Ok(work)
    }

    /// Announces now (and stamps the regions' activity time).
    fn announce_now(&mut self) -> Result<()> {
        if self.driven {
            self.tp.refresh();
            return Ok(());
        }
        let bytes = self
            .tp
            .refresh()
            .encode()
            .map_err(encode_err("ShmPoolAnnounce"))?;
        // A no-driver producer announces on the control stream ([C] tp_producer.c); consumers
        // configured for the announce stream find it there.
        let mut sent = self.control.offer(&bytes).is_sent();
        if let Some(p) = &self.announce {
            sent |= p.offer(&bytes).is_sent();
        }
        if sent {
            self.stats.announces += 1;
        }
        Ok(())
    }

    fn send_qos(&mut self) -> Result<()> {
        let a = self.tp.announce();
        let bytes = QosProducer {
            stream_id: a.stream_id,
            producer_id: a.producer_id,
            epoch: a.epoch,
            current_seq: self.tp.next_seq(),
            watermark: None,
        }
        .encode()
        .map_err(encode_err("QosProducer"))?;
        if self.qos.offer(&bytes).is_sent() {
            self.stats.qos += 1;
        }
        Ok(())
    }

    fn send_metadata(&mut self) -> Result<()> {
        let a = self.tp.announce();
        if let Some((name, summary)) = &self.opts.data_source {
            let bytes = DataSourceAnnounce {
                stream_id: a.stream_id,
                producer_id: a.producer_id,
                epoch: a.epoch,
                meta_version: self.meta.as_ref().map_or(0, |m| m.meta_version),
                name: name.clone(),
                summary: summary.clone(),
            }
            .encode()
            .map_err(encode_err("DataSourceAnnounce"))?;
            let _ = self.metadata.offer(&bytes);
        }
        if let Some(m) = &self.meta {
            let bytes = m.encode().map_err(encode_err("DataSourceMeta"))?;
            let _ = self.metadata.offer(&bytes);
        }
        Ok(())
    }

    fn on_hello(&mut self, h: ConsumerHello) -> Result<()> {
        let entry = self
            .consumers
            .entry(h.consumer_id)
            .or_insert_with(|| ConsumerEntry {
                hello: None,
                config: None,
                descriptor: None,
                control: None,
                min_interval: None,
                next_due: Instant::now(),
                seen: Instant::now(),
            });
        entry.seen = Instant::now();
        entry.hello = Some(h.clone());
        let Some(s) = &mut self.supervisor else {
            return Ok(());
        };
        let config = s.on_hello(&h);
        let bytes = config.encode().map_err(encode_err("ConsumerConfig"))?;
        if self.control.offer(&bytes).is_sent() {
            self.stats.configs += 1;
        }
        self.apply(config)
    }

    /// Serves what a config grants a consumer: its own descriptor and control publications,
    /// the descriptor stream throttled to the rate its hello asked for (W-10.1.2-1).
    fn apply(&mut self, config: ConsumerConfig) -> Result<()> {
        let entry = self
            .consumers
            .entry(config.consumer_id)
            .or_insert_with(|| ConsumerEntry {
                hello: None,
                config: None,
                descriptor: None,
                control: None,
                min_interval: None,
                next_due: Instant::now(),
                seen: Instant::now(),
            });
        entry.seen = Instant::now();
        if entry.config.as_ref() == Some(&config) {
            return Ok(());
        }
        let same = |a: &Option<Publication>, r: &Option<crate::messages::StreamRequest>| match (a, r) {
            (Some(p), Some(r)) => p.channel() == r.channel && p.stream_id() == r.stream_id as i32,
            (None, None) => true,
            _ => false,
        };
        if !same(&entry.descriptor, &config.descriptor) {
            entry.descriptor = match &config.descriptor {
                Some(r) => Some(self.client.publication(&r.channel, r.stream_id as i32)?),
                None => None,
            };
        }
        if !same(&entry.control, &config.control) {
            entry.control = match &config.control {
                Some(r) => Some(self.client.publication(&r.channel, r.stream_id as i32)?),
                None => None,
            };
        }
        let rate = entry.hello.as_ref().map_or(0, |h| h.max_rate_hz);
        entry.min_interval = (config.mode == crate::messages::Mode::RateLimited && rate > 0)
            .then(|| Duration::from_secs_f64(1.0 / f64::from(rate)));
        entry.config = Some(config);
        Ok(())
    }

    /// The endpoints it uses.
    pub fn channels(&self) -> &Channels {
        &self.opts.channels
    }

    /// A per-consumer descriptor endpoint being served to `consumer_id`, if any.
    pub fn per_consumer_descriptor(&self, consumer_id: u32) -> Option<Endpoint> {
        let p = self.consumers.get(&consumer_id)?.descriptor.as_ref()?;
        Some(Endpoint {
            channel: p.channel().to_string(),
            stream_id: p.stream_id(),
        })
    }
}
