//! Producers, consumers and the supervisor over a real Aeron media driver (embedded, in this
//! process), named after the conformance items (tensor-pool spec §7) they show.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use xmem_aeron::{Client, ClientOptions, DriverOptions, MediaDriver, Publication};
use xmem_tensorpool::codec::{ProgressState, ShmPoolAnnounce};
use xmem_tensorpool::commit::FrameSpec;
use xmem_tensorpool::layout::{Dtype, TensorHeader};
use xmem_tensorpool::paths::AllowedDirs;
use xmem_tensorpool::stream::TpProducer;
use xmem_tp_control::messages::ConsumerConfig;
use xmem_tp_control::{
    Consumer, ConsumerOptions, Mode, Policy, Producer, ProducerOptions, State, StreamRequest, ANNOUNCE_PERIOD,
};

const PERIOD: Duration = Duration::from_millis(100);

/// A media driver and a tensor-pool base directory of the test's own, both checked empty and
/// removed at the end.
struct Rig {
    client: Client,
    driver: Option<MediaDriver>,
    aeron_dir: PathBuf,
    base: PathBuf,
}

impl Rig {
    fn new() -> Rig {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let aeron_dir = PathBuf::from(format!("/dev/shm/xmem-tpc-aeron-{}-{n}", std::process::id()));
        let base = PathBuf::from(format!("/dev/shm/xmem-tpc-base-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let driver = MediaDriver::launch(&DriverOptions {
            dir: Some(aeron_dir.clone()),
            ..DriverOptions::default()
        })
        .unwrap();
        let client = Client::connect(&ClientOptions {
            dir: Some(aeron_dir.clone()),
            ..ClientOptions::default()
        })
        .unwrap();
        Rig {
            client,
            driver: Some(driver),
            aeron_dir,
            base,
        }
    }

    fn tp(&self, stream: u32, nslots: u32, stride: u32) -> TpProducer {
        TpProducer::builder(stream)
            .base_dir(&self.base)
            .namespace("test")
            .nslots(nslots)
            .pool(1, stride)
            .create()
            .unwrap()
    }

    fn producer(&self, stream: u32, opts: ProducerOptions) -> Producer {
        Producer::new(
            &self.client,
            self.tp(stream, 8, 4096),
            ProducerOptions {
                announce_period: PERIOD,
                ..opts
            },
        )
        .unwrap()
    }

    fn consumer_options(&self, stream: u32) -> ConsumerOptions {
        ConsumerOptions {
            announce_period: PERIOD,
            ..ConsumerOptions::new(stream, AllowedDirs::new([&self.base]).unwrap())
        }
    }

    fn consumer(&self, opts: ConsumerOptions) -> Consumer {
        Consumer::new(&self.client, opts).unwrap()
    }

    fn raw(&self, stream_id: i32) -> Publication {
        self.client
            .publication(xmem_aeron::TP_CHANNEL, stream_id)
            .unwrap()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        drop(self.driver.take());
        let left_aeron = self.aeron_dir.exists();
        let left: Vec<_> = walk(&self.base);
        let _ = std::fs::remove_dir_all(&self.base);
        let _ = std::fs::remove_dir_all(&self.aeron_dir);
        if !std::thread::panicking() {
            assert!(!left_aeron, "the driver left {}", self.aeron_dir.display());
            assert!(left.is_empty(), "left behind: {left:?}");
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(e.path());
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

fn spec(len: u32, stamp: u64) -> FrameSpec {
    FrameSpec {
        tensor: TensorHeader::row_major(Dtype::Uint8, &[len as i32]),
        values_len: len,
        timestamp_ns: stamp,
        meta_version: 0,
    }
}

/// Runs producer and consumers until `done` says so (or the limit is hit, which fails).
fn run(limit: Duration, what: &str, mut step: impl FnMut() -> bool) {
    let started = Instant::now();
    while !step() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn fill(seq: u64, b: &mut [u8]) {
    for (i, x) in b.iter_mut().enumerate() {
        *x = (seq as usize + i) as u8;
    }
}

fn check(seq: u64, b: &[u8]) -> bool {
    b.iter().enumerate().all(|(i, &x)| x == (seq as usize + i) as u8)
}

/// W-10.2.1-1 over Aeron, W-10.2.1-2 (the slot carries the capture time, the descriptor's
/// publish time stays null), TL-5-1 (a traced frame with nobody listening is counted, never
/// waited on), and the join-time rule of W-15.7-2 (an announce stamped before the consumer
/// joined is not taken).
#[test]
fn w_10_2_1_1_and_2_frames_cross_aeron_checked_and_w_15_7_2_the_join_time_rule() {
    let rig = Rig::new();
    let mut producer = rig.producer(10000, ProducerOptions::default());
    let started = Instant::now();
    let d = producer
        .publish(&spec(64, 7), 42, |b| fill(0, b))
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "no subscriber: not waited on"
    );
    assert_eq!((d.trace_id, d.timestamp_ns), (42, None));
    assert_eq!(producer.stats().not_connected, 1);

    // An announce from before the consumer joined, replayed: not taken. (Stamped just before
    // the consumer is made and offered at once after: fresh, but from before its join time.)
    let raw = rig.raw(1000);
    run(Duration::from_secs(10), "the raw publication to connect", || {
        raw.is_connected()
    });
    let mut early = producer.regions().announce().clone();
    early.announce_timestamp_ns = xmem_core::os::time::monotonic_ns();
    let mut consumer = rig.consumer(rig.consumer_options(10000));
    assert!(raw.offer(&early.encode().unwrap()).is_sent());

    let mut got = Vec::new();
    let mut seq = 1;
    run(Duration::from_secs(20), "200 frames", || {
        if let Some(d) = producer
            .publish(&spec(256, 1000 + seq), seq, |b| fill(seq, b))
            .unwrap()
        {
            seq = d.seq + 1;
        }
        consumer
            .poll(64, |f| {
                assert!(check(f.accepted.seq, f.bytes), "frame {} intact", f.accepted.seq);
                assert_eq!(
                    f.accepted.slot.timestamp_ns,
                    1000 + f.accepted.seq,
                    "capture time in the slot"
                );
                assert_eq!(f.descriptor.timestamp_ns, None, "publish time null by default");
                assert_eq!(f.descriptor.trace_id, f.accepted.seq);
                got.push(f.accepted.seq);
            })
            .unwrap();
        got.len() >= 200
    });
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order");
    let s = consumer.stats();
    assert!(s.early_announces >= 1, "{s:?}");
    assert!(
        matches!(consumer.state(), State::Mapped { epoch } if *epoch == producer.regions().announce().epoch)
    );
    assert!(producer.stats().descriptors >= 200 && producer.stats().announces >= 2);
}

/// W-15.7-1: the clock-domain rules: a stale announce, one from the future, one of an unknown
/// domain are dropped; REALTIME_SYNCED is judged by the real-time clock.
#[test]
fn w_15_7_1_clock_domains_and_freshness() {
    let rig = Rig::new();
    let producer = rig.producer(10001, ProducerOptions::default());
    let good = producer.regions().announce().clone();
    let mut consumer = rig.consumer(rig.consumer_options(10001));
    let raw = rig.raw(1000);
    run(Duration::from_secs(10), "the raw publication to connect", || {
        raw.is_connected()
    });
    let now = xmem_core::os::time::monotonic_ns();
    let stale = ShmPoolAnnounce {
        announce_timestamp_ns: now - 10 * PERIOD.as_nanos() as u64,
        ..good.clone()
    };
    let future = ShmPoolAnnounce {
        announce_timestamp_ns: now + 10 * PERIOD.as_nanos() as u64,
        ..good.clone()
    };
    for a in [&stale, &future] {
        assert!(raw.offer(&a.encode().unwrap()).is_sent());
    }
    // A clock domain that is neither MONOTONIC (1) nor REALTIME_SYNCED (2): written by hand, as
    // the encoder refuses it; the decoder refuses it too (unsynchronised real time is forbidden).
    let mut unknown = ShmPoolAnnounce {
        announce_timestamp_ns: now,
        ..good.clone()
    }
    .encode()
    .unwrap();
    unknown[8 + 24] = 9;
    assert!(raw.offer(&unknown).is_sent());
    run(Duration::from_secs(10), "the three announces", || {
        consumer.poll(16, |_| {}).unwrap();
        let s = consumer.stats();
        s.stale_announces == 2 && s.malformed == 1
    });
    assert_eq!(consumer.state(), &State::Unmapped);
    let realtime = ShmPoolAnnounce {
        announce_clock_domain: 2,
        announce_timestamp_ns: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
        ..good.clone()
    };
    assert!(raw.offer(&realtime.encode().unwrap()).is_sent());
    run(Duration::from_secs(10), "the real-time announce to map", || {
        consumer.poll(16, |_| {}).unwrap();
        matches!(consumer.state(), State::Mapped { .. })
    });
    drop(producer);
}

/// W-15.14-1 and W-7.1-3: announces that stop, or an activity stamp that stops moving while
/// announces still come, unmap within three periods; fresh ones map again.
#[test]
fn w_15_14_1_and_w_7_1_3_stale_announces_or_activity_unmap() {
    let rig = Rig::new();
    let mut producer = rig.producer(10002, ProducerOptions::default());
    let mut consumer = rig.consumer(rig.consumer_options(10002));
    run(Duration::from_secs(10), "mapped", || {
        producer.poll().unwrap();
        consumer.poll(16, |_| {}).unwrap();
        matches!(consumer.state(), State::Mapped { .. })
    });
    // The producer stops: no more announces.
    let stopped = Instant::now();
    run(Duration::from_secs(10), "unmapped for stale announces", || {
        consumer.poll(16, |_| {}).unwrap();
        consumer.state() == &State::Unmapped
    });
    let took = stopped.elapsed();
    assert!(
        took <= PERIOD * 3 + PERIOD,
        "within three periods (and one of polling): {took:?}"
    );
    assert_eq!(consumer.stats().unmaps_announce, 1);

    // Announces come again, with fresh stamps, but nobody refreshes the regions' activity.
    let raw = rig.raw(1000);
    run(Duration::from_secs(10), "the raw publication to connect", || {
        raw.is_connected()
    });
    let announce = producer.regions().announce().clone();
    run(Duration::from_secs(10), "unmapped for stale activity", || {
        let fresh = ShmPoolAnnounce {
            announce_timestamp_ns: xmem_core::os::time::monotonic_ns(),
            ..announce.clone()
        };
        let _ = raw.offer(&fresh.encode().unwrap());
        consumer.poll(16, |_| {}).unwrap();
        consumer.stats().unmaps_activity >= 1
    });
    // The producer returns: mapped again.
    run(Duration::from_secs(10), "mapped again", || {
        producer.poll().unwrap();
        consumer.poll(16, |_| {}).unwrap();
        matches!(consumer.state(), State::Mapped { .. })
    });
}

/// W-11-1, W-10.1.3-1, W-10.1.2-1: the producer's consumer manager grants a per-consumer
/// descriptor stream; the consumer moves to it and gets frames there, throttled to its
/// `max_rate_hz`, while a plain consumer on the shared stream gets every frame.
#[test]
fn w_11_1_per_consumer_streams_w_10_1_2_1_rate_limits_and_w_10_1_3_1_configs() {
    let rig = Rig::new();
    let mut producer = rig.producer(10003, ProducerOptions::default());
    let mut plain = rig.consumer(rig.consumer_options(10003));
    let mut limited = rig.consumer(ConsumerOptions {
        mode: Mode::RateLimited,
        max_rate_hz: 20,
        descriptor_stream: Some(StreamRequest {
            channel: xmem_aeron::TP_CHANNEL.into(),
            stream_id: 31003,
        }),
        ..rig.consumer_options(10003)
    });
    run(
        Duration::from_secs(10),
        "both mapped, the limited one on its own stream",
        || {
            producer.poll().unwrap();
            plain.poll(16, |_| {}).unwrap();
            limited.poll(16, |_| {}).unwrap();
            matches!(plain.state(), State::Mapped { .. })
                && matches!(limited.state(), State::Mapped { .. })
                && limited.descriptor_stream().stream_id == 31003
                && producer.per_consumer_descriptor(limited.consumer_id()).is_some()
        },
    );
    let config = limited.config().unwrap().clone();
    assert_eq!((config.mode, config.use_shm), (Mode::RateLimited, true));
    let (mut all, mut few) = (0u64, 0u64);
    let started = Instant::now();
    let mut seq = 0;
    while started.elapsed() < Duration::from_secs(1) {
        producer.publish(&spec(128, 0), 0, |b| fill(seq, b)).unwrap();
        seq += 1;
        plain
            .poll(64, |f| {
                assert!(check(f.accepted.seq, f.bytes));
                all += 1;
            })
            .unwrap();
        limited
            .poll(64, |f| {
                assert!(check(f.accepted.seq, f.bytes));
                few += 1;
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert!(all >= seq - 16, "the shared stream: every frame ({all} of {seq})");
    assert!(
        few >= 5 && (few as f64) <= 20.0 * elapsed + 2.0,
        "about 20 Hz: {few} in {elapsed:.2} s"
    );
    assert!(producer.stats().rate_limited > 0);
}

/// W-15.12-1 and W-10.1.3-1: a consumer without shared memory is sent to the fallback URI
/// (FALLBACK: no frames read from shared memory); a later config with `useShm = 1` brings it
/// back to UNMAPPED, and the next announce maps it.
#[test]
fn w_15_12_1_and_w_10_1_3_1_fallback_and_back() {
    let rig = Rig::new();
    let mut producer = rig.producer(
        10004,
        ProducerOptions {
            supervise: Some(Policy {
                fallback_uri: Some("aeron:udp?endpoint=127.0.0.1:40999".into()),
                ..Policy::default()
            }),
            ..ProducerOptions::default()
        },
    );
    let mut c = rig.consumer(ConsumerOptions {
        supports_shm: false,
        ..rig.consumer_options(10004)
    });
    run(Duration::from_secs(10), "fallback", || {
        producer.poll().unwrap();
        c.poll(16, |_| {}).unwrap();
        matches!(c.state(), State::Fallback { .. })
    });
    assert_eq!(
        c.state(),
        &State::Fallback {
            uri: "aeron:udp?endpoint=127.0.0.1:40999".into()
        }
    );
    let mut frames = 0;
    for i in 0..50 {
        producer.publish(&spec(64, 0), 0, |b| fill(i, b)).unwrap();
        c.poll(64, |_| frames += 1).unwrap();
    }
    assert_eq!(frames, 0, "nothing read from shared memory in FALLBACK");
    let back = ConsumerConfig {
        stream_id: 10004,
        consumer_id: c.consumer_id(),
        use_shm: true,
        mode: Mode::Stream,
        descriptor: None,
        control: None,
        fallback_uri: String::new(),
    };
    let raw = rig.raw(1000);
    run(Duration::from_secs(10), "the raw publication to connect", || {
        raw.is_connected()
    });
    assert!(raw.offer(&back.encode().unwrap()).is_sent());
    run(Duration::from_secs(10), "mapped again", || {
        producer.poll().unwrap();
        c.poll(16, |_| {}).unwrap();
        matches!(c.state(), State::Mapped { .. })
    });
}

/// W-10.2.2-1: progress reaches a consumer that asked for it, and a frame whose filled bytes go
/// backwards is dropped.
#[test]
fn w_10_2_2_1_progress_and_its_regression() {
    let rig = Rig::new();
    let mut producer = rig.producer(10005, ProducerOptions::default());
    let mut c = rig.consumer(ConsumerOptions {
        supports_progress: true,
        ..rig.consumer_options(10005)
    });
    run(
        Duration::from_secs(10),
        "mapped, and the producer knows it wants progress",
        || {
            producer.poll().unwrap();
            c.poll(16, |_| {}).unwrap();
            matches!(c.state(), State::Mapped { .. }) && producer.stats().consumers == 1
        },
    );
    let seq = producer.regions().next_seq();
    producer.progress(seq, 100, ProgressState::Started);
    producer.progress(seq, 50, ProgressState::Progress); // backwards
    run(Duration::from_secs(10), "the progress", || {
        c.poll(0, |_| {}).unwrap();
        c.stats().progress == 2
    });
    let mut accepted = Vec::new();
    producer.publish(&spec(64, 0), 0, |b| fill(seq, b)).unwrap();
    producer.publish(&spec(64, 0), 0, |b| fill(seq + 1, b)).unwrap();
    run(Duration::from_secs(10), "the next frame", || {
        c.poll(16, |f| accepted.push(f.accepted.seq)).unwrap();
        accepted.contains(&(seq + 1))
    });
    assert!(!accepted.contains(&seq), "the regressed frame was dropped");
    assert_eq!(c.stats().drops_progress, 1);
    assert!(producer.stats().progress >= 2);
}

#[test]
fn the_default_announce_period_is_one_second() {
    assert_eq!(ANNOUNCE_PERIOD, Duration::from_secs(1));
    assert_eq!(ProducerOptions::default().announce_period, Duration::from_secs(1));
}

/// TL-5-1 and TL-9-1 over Aeron: an N→1 stage's TraceLinkSet goes on the control stream without
/// waiting, reaches a listener decoded (schema 904, beside the wire schema's messages), and a set
/// that breaks the rules is refused before it is sent.
#[test]
fn tl_5_1_trace_link_sets_are_sent_without_waiting() {
    use xmem_tp_control::trace::{propagate, TraceIds, TraceLinkSet};
    let rig = Rig::new();
    let mut producer = rig.producer(10006, ProducerOptions::default());
    let mut listener = rig.client.subscription(xmem_aeron::TP_CHANNEL, 1000).unwrap();
    run(Duration::from_secs(10), "the listener to connect", || {
        listener.is_connected()
    });
    let mut ids = TraceIds::new(5);
    let (a, b) = (ids.next_id(), ids.next_id());
    let out = propagate(&[a, b], &mut ids);
    let d = producer
        .publish(&spec(64, 0), out, |b| fill(0, b))
        .unwrap()
        .unwrap();
    let set = TraceLinkSet {
        stream_id: 10006,
        epoch: d.epoch,
        seq: d.seq,
        trace_id: out,
        parents: vec![a, b],
    };
    let started = Instant::now();
    producer.link(&set).unwrap();
    assert!(started.elapsed() < Duration::from_millis(50));
    assert_eq!(producer.stats().trace_links, 1);
    let bad = TraceLinkSet {
        parents: vec![a, a],
        ..set.clone()
    };
    assert!(producer.link(&bad).is_err());
    let mut got = None;
    run(Duration::from_secs(10), "the set", || {
        listener
            .poll(16, |m| {
                if let Ok(Some(s)) = TraceLinkSet::decode(m.bytes) {
                    got = Some(s);
                }
            })
            .unwrap();
        got.is_some()
    });
    assert_eq!(got, Some(set));
}

/// A hostile peer on the control and descriptor streams: garbage, announces naming files outside
/// the allowed directory or of an impossible geometry, descriptors of another epoch or far ahead.
/// The consumer maps nothing it must not, counts what it refused, and still takes the real
/// producer's frames, every one checked. (An announce of another epoch unmaps what is mapped even
/// when it then fails its checks, as the spec's fail-closed rule says: such a peer makes the
/// consumer remap at each real announce, which this test shows and counts.)
#[test]
fn a_hostile_peer_on_the_control_plane_is_refused_and_counted() {
    let rig = Rig::new();
    let mut producer = rig.producer(10007, ProducerOptions::default());
    let mut c = rig.consumer(rig.consumer_options(10007));
    let control = rig.raw(1000);
    let descriptors = rig.raw(1100);
    run(Duration::from_secs(10), "the raw publications to connect", || {
        control.is_connected() && descriptors.is_connected()
    });
    let real = producer.regions().announce().clone();
    let now = || xmem_core::os::time::monotonic_ns();
    let mut elsewhere = real.clone();
    elsewhere.epoch += 1_000;
    elsewhere.header_region_uri = "shm:file?path=/etc/passwd".into();
    let mut bad_geometry = real.clone();
    bad_geometry.epoch += 2_000;
    bad_geometry.header_nslots = 3;
    let mut accepted = 0u64;
    let mut seq = 0u64;
    run(Duration::from_secs(20), "frames despite the noise", || {
        for garbage in [&b"\x00\x01"[..], &[0xff; 64][..], &[7u8; 8][..]] {
            let _ = control.offer(garbage);
            let _ = descriptors.offer(garbage);
        }
        for a in [&mut elsewhere, &mut bad_geometry] {
            a.announce_timestamp_ns = now();
            let _ = control.offer(&a.encode().unwrap());
        }
        let mut wrong = xmem_tensorpool::codec::FrameDescriptor {
            stream_id: 10007,
            epoch: real.epoch + 7,
            seq,
            ..Default::default()
        };
        let _ = descriptors.offer(&wrong.encode());
        wrong.epoch = real.epoch;
        wrong.seq = seq + 1_000_000; // a frame that was never written
        let _ = descriptors.offer(&wrong.encode());
        if let Some(d) = producer.publish(&spec(128, 0), 0, |b| fill(seq, b)).unwrap() {
            seq = d.seq + 1;
        }
        c.poll(64, |f| {
            assert!(check(f.accepted.seq, f.bytes), "frame {} intact", f.accepted.seq);
            accepted += 1;
        })
        .unwrap();
        accepted >= 100
    });
    // The noise stops: the next real announce maps the real epoch, and only ever that one.
    run(Duration::from_secs(10), "mapped to the real epoch", || {
        producer.poll().unwrap();
        c.poll(16, |_| {}).unwrap();
        matches!(c.state(), State::Mapped { .. })
    });
    assert_eq!(c.state(), &State::Mapped { epoch: real.epoch });
    let s = c.stats();
    assert!(
        s.malformed > 0 && s.bad_announces > 0 && s.drops_epoch > 0,
        "{s:?}"
    );
    assert!(s.maps >= 1 && s.drops_invalid == 0, "{s:?}");
}
