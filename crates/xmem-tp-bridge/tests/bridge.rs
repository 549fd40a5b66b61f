//! The bridge between two "hosts" on this machine: two media drivers in directories of their
//! own, two SHM base directories, Aeron UDP over 127.0.0.1 between them (the namespaced run is
//! in xmem-tests). A producer on A, the bridge A → B, a consumer on B checking every frame.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use xmem_aeron::{Client, ClientOptions, DriverOptions, MediaDriver};
use xmem_tensorpool::commit::FrameSpec;
use xmem_tensorpool::layout::{Dtype, TensorHeader};
use xmem_tensorpool::paths::AllowedDirs;
use xmem_tensorpool::stream::TpProducer;
use xmem_tp_bridge::chunk::chunk_size;
use xmem_tp_bridge::{Receiver, ReceiverOptions, Sender, SenderOptions};
use xmem_tp_control::{Channels, Consumer, ConsumerOptions, Endpoint, Producer, ProducerOptions};

const PERIOD: Duration = Duration::from_millis(100);

struct Host {
    client: Client,
    media: Option<MediaDriver>,
    aeron: PathBuf,
    base: PathBuf,
}

impl Host {
    fn new(tag: &str) -> Host {
        static N: AtomicU32 = AtomicU32::new(0);
        let tag = format!("{tag}{}", N.fetch_add(1, Ordering::Relaxed));
        let aeron = PathBuf::from(format!("/dev/shm/xmem-tpb-{tag}-aeron-{}", std::process::id()));
        let base = PathBuf::from(format!("/dev/shm/xmem-tpb-{tag}-base-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let media = MediaDriver::launch(&DriverOptions {
            dir: Some(aeron.clone()),
            ..DriverOptions::default()
        })
        .unwrap();
        let client = Client::connect(&ClientOptions {
            dir: Some(aeron.clone()),
            ..ClientOptions::default()
        })
        .unwrap();
        Host {
            client,
            media: Some(media),
            aeron,
            base,
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let left: Vec<_> = walk(&self.base);
        drop(self.media.take());
        let _ = std::fs::remove_dir_all(&self.base);
        let _ = std::fs::remove_dir_all(&self.aeron);
        if !std::thread::panicking() {
            assert!(left.is_empty(), "left in {}: {left:?}", self.base.display());
        }
    }
}

fn walk(d: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

fn udp(port: u16, stream: i32) -> Endpoint {
    Endpoint {
        channel: format!("aeron:udp?endpoint=127.0.0.1:{port}"),
        stream_id: stream,
    }
}

fn port() -> u16 {
    static N: AtomicU32 = AtomicU32::new(0);
    40_000 + ((std::process::id() % 500) * 20) as u16 + N.fetch_add(3, Ordering::Relaxed) as u16
    // p, p + 1, p + 2
}

fn spec(dims: &[i32]) -> FrameSpec {
    let len: i32 = dims.iter().product();
    FrameSpec {
        tensor: TensorHeader::row_major(Dtype::Uint8, dims),
        values_len: len as u32,
        timestamp_ns: 0,
        meta_version: 0,
    }
}

/// Runs `frames` frames of `dims` from a producer on A through the bridge to a consumer on B;
/// returns (frames B accepted, all intact, their seqs).
fn run(dims: &[i32], stride: u32, frames: u64) -> (u64, Vec<u64>) {
    let a = Host::new("a");
    let b = Host::new("b");
    let p = port();
    let local = Channels::default();
    let tp = TpProducer::builder(10_000)
        .base_dir(&a.base)
        .namespace("a")
        .nslots(16)
        .pool(1, stride)
        .create()
        .unwrap();
    let mut producer = Producer::new(
        &a.client,
        tp,
        ProducerOptions {
            announce_period: PERIOD,
            ..ProducerOptions::default()
        },
    )
    .unwrap();
    let mut sender = Sender::new(
        &a.client,
        SenderOptions {
            source_stream_id: 10_000,
            dest_stream_id: 20_000,
            local: local.clone(),
            allowed: AllowedDirs::new([&a.base]).unwrap(),
            announce_period: PERIOD,
            payload: udp(p, 3000),
            control: udp(p + 1, 3001),
            chunk_size: chunk_size(1200, 1408, 65_535),
            integrity: true,
            send_timeout: Duration::from_secs(1),
            forward: Default::default(),
            xmem_stream: None,
        },
    )
    .unwrap();
    let mut receiver = Receiver::new(
        &b.client,
        ReceiverOptions {
            dest_stream_id: 20_000,
            payload: udp(p, 3000),
            control: udp(p + 1, 3001),
            local: local.clone(),
            announce_period: PERIOD,
            base_dir: b.base.clone(),
            namespace: "b".into(),
            nslots: 16,
            pools: vec![(1, stride)],
            max_payload_bytes: 1 << 30,
            // The spec's default is 250 ms; a debug build on a loaded 2-core CI machine can take
            // longer to move 6 MB, and a dropped frame only slows the test down.
            assembly_timeout: Duration::from_secs(2),
            integrity: true,
            forward: Default::default(),
            xmem_stream: None,
        },
    )
    .unwrap();
    let mut copts = ConsumerOptions::new(20_000, AllowedDirs::new([&b.base]).unwrap());
    copts.announce_period = PERIOD;
    let mut consumer = Consumer::new(&b.client, copts).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let step = |producer: &mut Producer, sender: &mut Sender, receiver: &mut Receiver| {
        producer.poll().unwrap();
        sender.poll().unwrap();
        receiver.poll().unwrap();
    };
    // Ready: the sender maps the source, the receiver has its announce, B's consumer maps.
    while !(sender.is_connected()
        && receiver.source().is_some()
        && consumer.announce().is_some()
        && producer.is_connected())
    {
        assert!(Instant::now() < deadline, "the bridge never came up");
        step(&mut producer, &mut sender, &mut receiver);
        consumer.poll(16, |_| {}).unwrap();
    }
    let mut got = Vec::new();
    let mut intact = true;
    let spec = spec(dims);
    let mut got_at_publish: Option<usize> = None;
    let mut last_dropped = 0;
    while (got.len() as u64) < frames {
        assert!(
            Instant::now() < deadline,
            "only {} of {frames} frames: {:?} {:?}",
            got.len(),
            sender.stats(),
            receiver.stats()
        );
        // One frame in flight at a time: the ring of 16 slots is never lapped.
        // (or again when the receiver dropped the one in flight: counted, and the test goes on).
        let dropped = receiver.stats().incomplete;
        if got_at_publish.is_none_or(|n| got.len() > n) || dropped > last_dropped {
            last_dropped = dropped;
            got_at_publish = Some(got.len());
            let seq = producer.regions().next_seq();
            producer
                .publish(&spec, seq + 1, |b| b.fill(seq as u8))
                .unwrap()
                .unwrap();
        }
        step(&mut producer, &mut sender, &mut receiver);
        consumer
            .poll(16, |f| {
                intact &= f.bytes.len() == spec.values_len as usize
                    && f.bytes.iter().all(|&x| x == f.descriptor.seq as u8);
                intact &= f.descriptor.trace_id == f.descriptor.seq + 1;
                got.push(f.descriptor.seq);
            })
            .unwrap();
    }
    assert!(
        intact,
        "every frame B accepted is A's, byte for byte, with its trace id"
    );
    let s = receiver.stats();
    assert_eq!(
        (s.crc, s.conflicts, s.invalid, s.malformed),
        (0, 0, 0, 0),
        "{s:?}"
    );
    // Both ends' counters reach their media driver's counters file (`xmem tp stat`).
    let counter = |host: &Host, role: &str, name: &str| {
        xmem_aeron::read_counters(&host.aeron)
            .unwrap()
            .iter()
            .filter_map(xmem_tp_control::counters::parse)
            .find(|(o, n, _)| o.role == role && o.stream_id == 20_000 && n == name)
            .map(|(_, _, v)| v)
    };
    let (sent, taken) = (sender.stats().frames as i64, receiver.stats().frames as i64);
    while counter(&a, "bridge-sender", "frames") < Some(sent)
        || counter(&b, "bridge-receiver", "frames") < Some(taken)
    {
        assert!(
            Instant::now() < deadline,
            "the bridge's counters never showed its frames"
        );
        step(&mut producer, &mut sender, &mut receiver);
    }
    assert_eq!(counter(&b, "bridge-receiver", "crc"), Some(0));
    drop(consumer);
    drop(receiver);
    drop(sender);
    drop(producer);
    (got.len() as u64, got)
}

#[test]
fn small_frames_cross_the_bridge_intact_with_their_sequence_numbers() {
    let (n, seqs) = run(&[16, 16], 4096, 200);
    assert_eq!(n, 200);
    assert_eq!(
        seqs,
        (0..200).collect::<Vec<u64>>(),
        "the source's sequence numbers are kept"
    );
}

#[test]
fn frames_of_1080p_cross_the_bridge_intact() {
    let (n, _) = run(&[1080, 1920, 3], 8 << 20, 12);
    assert_eq!(n, 12);
}

#[test]
fn metadata_qos_and_trace_links_are_forwarded_with_the_destination_stream_id() {
    use xmem_tp_bridge::forward::Forwarding;
    use xmem_tp_control::messages::{decode, Incoming};
    use xmem_tp_control::trace::TraceLinkSet;
    let a = Host::new("a");
    let b = Host::new("b");
    let p = port();
    let tp = TpProducer::builder(10_000)
        .base_dir(&a.base)
        .namespace("a")
        .nslots(8)
        .pool(1, 4096)
        .create()
        .unwrap();
    let mut producer = Producer::new(
        &a.client,
        tp,
        ProducerOptions {
            announce_period: PERIOD,
            data_source: Some(("cam-a".into(), "the left camera".into())),
            ..ProducerOptions::default()
        },
    )
    .unwrap();
    let forward = Forwarding {
        metadata: Some((udp(p + 2, 3002), 20_000)),
        data_source: true,
        qos: true,
        progress: true,
        tracelink: true,
    };
    let mut sender = Sender::new(
        &a.client,
        SenderOptions {
            source_stream_id: 10_000,
            dest_stream_id: 20_000,
            local: Channels::default(),
            allowed: AllowedDirs::new([&a.base]).unwrap(),
            announce_period: PERIOD,
            payload: udp(p, 3000),
            control: udp(p + 1, 3001),
            chunk_size: 1200,
            integrity: false,
            send_timeout: Duration::from_secs(1),
            forward: forward.clone(),
            xmem_stream: None,
        },
    )
    .unwrap();
    let mut receiver = Receiver::new(
        &b.client,
        ReceiverOptions {
            dest_stream_id: 20_000,
            payload: udp(p, 3000),
            control: udp(p + 1, 3001),
            local: Channels::default(),
            announce_period: PERIOD,
            base_dir: b.base.clone(),
            namespace: "b".into(),
            nslots: 8,
            pools: vec![(1, 4096)],
            max_payload_bytes: 1 << 20,
            assembly_timeout: Duration::from_secs(2),
            integrity: false,
            forward,
            xmem_stream: None,
        },
    )
    .unwrap();
    // Host B's local metadata and QoS streams, as any of its consumers would read them.
    let ch = "aeron:ipc?term-length=4m|tether=false";
    let mut meta = b.client.subscription(ch, 1300).unwrap();
    let mut qos = b.client.subscription(ch, 1200).unwrap();
    let mut control = b.client.subscription(ch, 1000).unwrap();
    let (mut named, mut qos_seen, mut linked) = (None, false, None);
    let deadline = Instant::now() + Duration::from_secs(10);
    let link = |epoch| TraceLinkSet {
        stream_id: 10_000,
        epoch,
        seq: 5,
        trace_id: 77,
        parents: vec![3, 4],
    };
    while named.is_none() || !qos_seen || linked.is_none() {
        assert!(
            Instant::now() < deadline,
            "named {named:?}, qos {qos_seen}: {:?} {:?}",
            sender.stats(),
            receiver.stats()
        );
        producer.poll().unwrap();
        // An N→1 stage on A says frame 5 was made from traces 3 and 4.
        let epoch = producer.regions().announce().epoch;
        producer.link(&link(epoch)).unwrap();
        sender.poll().unwrap();
        receiver.poll().unwrap();
        control
            .poll(16, |m| {
                if let Ok(Some(set)) = TraceLinkSet::decode(m.bytes) {
                    if set.stream_id == 20_000 {
                        linked = Some(set);
                    }
                }
            })
            .unwrap();
        meta.poll(16, |m| {
            if let Ok(Incoming::DataSource(d)) = decode(m.bytes) {
                if d.stream_id == 20_000 {
                    named = Some(d.name);
                }
            }
        })
        .unwrap();
        qos.poll(16, |m| {
            // The source's QosProducer, now about stream 20000: it carries A's epoch (B's
            // receiver sends its own, with B's).
            if let Ok(Incoming::QosProducer(q)) = decode(m.bytes) {
                qos_seen |= q.stream_id == 20_000 && q.epoch == producer.regions().announce().epoch;
            }
        })
        .unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(named.as_deref(), Some("cam-a"));
    let epoch = producer.regions().announce().epoch;
    assert_eq!(
        linked,
        Some(TraceLinkSet {
            stream_id: 20_000,
            ..link(epoch)
        }),
        "the set crosses with only its stream id rewritten"
    );
    assert!(sender.stats().forwarded >= 3 && receiver.stats().forwarded >= 3);
}

/// A directory of its own for xmem streams, checked empty and removed at the end.
struct XmemDir(PathBuf);

impl XmemDir {
    fn new(tag: &str) -> XmemDir {
        let p = PathBuf::from(format!("/dev/shm/xmem-tpb-x{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        XmemDir(p)
    }
}

impl Drop for XmemDir {
    fn drop(&mut self) {
        let left = walk(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
        if !std::thread::panicking() {
            assert!(left.is_empty(), "left in {}: {left:?}", self.0.display());
        }
    }
}

#[test]
fn an_xmem_stream_crosses_the_bridge_into_an_xmem_stream_with_every_frame_intact() {
    use xmem_core::stream::{Policy, Publisher, Subscriber};
    use xmem_core::{DType, TensorDesc};
    use xmem_tp_bridge::xmem_stream::XmemStream;

    let a = Host::new("xa");
    let b = Host::new("xb");
    let (xa, xb) = (XmemDir::new("a"), XmemDir::new("b"));
    let p = port();
    let shape = [48u64, 64, 3];
    let mut publisher = Publisher::builder("camera")
        .directory(&xa.0)
        .buffers(4)
        .buffer_size(48 * 64 * 3 * 4)
        .policy(Policy::Block {
            timeout: Duration::from_secs(5),
        })
        .create()
        .unwrap();
    let mut sender = Sender::new(
        &a.client,
        SenderOptions {
            source_stream_id: 0,
            dest_stream_id: 20_000,
            local: Channels::default(),
            allowed: AllowedDirs::new([&a.base]).unwrap(),
            announce_period: PERIOD,
            payload: udp(p, 3000),
            control: udp(p + 1, 3001),
            chunk_size: chunk_size(1200, 1408, 65_535),
            integrity: true,
            send_timeout: Duration::from_secs(1),
            forward: Default::default(),
            xmem_stream: Some(XmemStream {
                name: "camera".into(),
                directory: Some(xa.0.clone()),
            }),
        },
    )
    .unwrap();
    let mut receiver = Receiver::new(
        &b.client,
        ReceiverOptions {
            dest_stream_id: 20_000,
            payload: udp(p, 3000),
            control: udp(p + 1, 3001),
            local: Channels::default(),
            announce_period: PERIOD,
            base_dir: b.base.clone(),
            namespace: "b".into(),
            nslots: 8,
            pools: Vec::new(),
            max_payload_bytes: 1 << 30,
            assembly_timeout: Duration::from_secs(2),
            integrity: true,
            forward: Default::default(),
            xmem_stream: Some(XmemStream {
                name: "camera-from-a".into(),
                directory: Some(xb.0.clone()),
            }),
        },
    )
    .unwrap();
    assert!(receiver.producer().is_none() && sender.consumer().is_none());
    let deadline = Instant::now() + Duration::from_secs(20);
    // Ready: the sender subscribed on A, its announce reached B, B's stream exists.
    let mut subscriber = loop {
        assert!(
            Instant::now() < deadline,
            "the bridge never came up: {:?}",
            receiver.stats()
        );
        sender.poll().unwrap();
        receiver.poll().unwrap();
        if sender.is_connected() && receiver.source().is_some() {
            if let Ok(s) = Subscriber::builder("camera-from-a").directory(&xb.0).open() {
                break s;
            }
        }
    };
    let (u8_desc, f32_desc) = (
        TensorDesc::contiguous(DType::U8, &shape).unwrap(),
        TensorDesc::contiguous(DType::F32, &shape).unwrap(),
    );
    for k in 0..60u64 {
        let mut frame = publisher.loan().unwrap();
        // Every third frame is float32, the others bytes: each keeps its type and shape.
        let desc = if k % 3 == 2 { &f32_desc } else { &u8_desc };
        frame.set_tensor(desc).unwrap();
        frame.bytes_mut().fill(k as u8);
        frame.set_timestamp_ns(1_000 + k);
        let seq = publisher.publish(frame).unwrap();
        let got = loop {
            assert!(
                Instant::now() < deadline,
                "frame {k}: {:?} {:?}",
                sender.stats(),
                receiver.stats()
            );
            sender.poll().unwrap();
            receiver.poll().unwrap();
            if let Some(f) = subscriber.try_receive().unwrap() {
                break f;
            }
        };
        assert_eq!(got.sequence(), seq, "the source's sequence number is kept");
        assert_eq!(got.timestamp_ns(), 1_000 + k);
        let t = got.tensor().unwrap();
        assert_eq!((t.dtype(), t.shape()), (desc.dtype(), desc.shape()), "frame {k}");
        let n = desc.num_elements() as usize * desc.dtype().size();
        assert!(
            got.bytes()[..n].iter().all(|&x| x == k as u8),
            "frame {k} arrived damaged"
        );
    }
    let s = receiver.stats();
    assert_eq!(
        (s.frames, s.crc, s.conflicts, s.invalid, s.malformed, s.too_large),
        (60, 0, 0, 0, 0, 0),
        "{s:?}"
    );
    drop(subscriber);
    drop(receiver);
    drop(sender);
    drop(publisher);
}
