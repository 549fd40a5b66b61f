//! The standalone provider (`xmem-tp-discoveryd`, a process of its own) over a real media driver:
//! its registry fed by announces on the wire (DS-6-1), and the codec's nulls and empties
//! (DS-5.0-1).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xmem_aeron::{Client, ClientOptions, DriverOptions, MediaDriver};
use xmem_tensorpool::codec::{PoolAnnounce, ShmPoolAnnounce};
use xmem_tp_control::Endpoint;
use xmem_tp_discovery::{Authority, Discoverer, Registry, Request, Status};

struct Daemon {
    child: Child,
    _media: MediaDriver,
    client: Client,
    dir: PathBuf,
    config: PathBuf,
}

impl Daemon {
    fn start(period_ms: u64) -> Daemon {
        let tag = format!("{}-{period_ms}", std::process::id());
        let dir = PathBuf::from(format!("/dev/shm/xmem-tpds-aeron-{tag}"));
        let media = MediaDriver::launch(&DriverOptions {
            dir: Some(dir.clone()),
            ..DriverOptions::default()
        })
        .unwrap();
        let client = Client::connect(&ClientOptions {
            dir: Some(dir.clone()),
            ..ClientOptions::default()
        })
        .unwrap();
        let config = std::env::temp_dir().join(format!("xmem-tpds-{tag}.toml"));
        std::fs::write(
            &config,
            format!(
                "[discovery]\nrequest_stream_id = 9000\nannounce_stream_id = 1001\n\
                 driver_instance_id = \"host-a\"\ndriver_control_stream_id = 1000\n\
                 announce_period_ms = {period_ms}\n[driver]\naeron_dir = \"{}\"\n",
                dir.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_xmem-tp-discoveryd"))
            .arg(&config)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready");
        Daemon {
            child,
            _media: media,
            client,
            dir,
            config,
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn announce(stream: u32, epoch: u64) -> ShmPoolAnnounce {
    ShmPoolAnnounce {
        stream_id: stream,
        producer_id: 7,
        epoch,
        announce_timestamp_ns: xmem_core::os::time::monotonic_ns(),
        announce_clock_domain: 1,
        layout_version: 1,
        header_nslots: 8,
        header_slot_bytes: 256,
        pools: vec![PoolAnnounce {
            pool_id: 1,
            nslots: 8,
            stride_bytes: 4096,
            region_uri: format!("shm:file?path=/dev/shm/x/{stream}/{epoch}/1.pool"),
        }],
        header_region_uri: format!("shm:file?path=/dev/shm/x/{stream}/{epoch}/header.ring"),
    }
}

#[test]
fn ds_6_1_registry_entries_expire_after_three_periods_and_the_newest_epoch_wins() {
    let d = Daemon::start(150);
    let announces = d.client.publication("aeron:ipc?term-length=4m", 1001).unwrap();
    let mut q = Discoverer::new(&d.client, Endpoint::tp(9000), Endpoint::tp(9001)).unwrap();
    let ask = |q: &mut Discoverer| {
        q.query(
            &Request::default(),
            Duration::from_secs(5),
            Duration::from_millis(50),
        )
        .unwrap()
    };
    let send = |a: &ShmPoolAnnounce| {
        let bytes = a.encode().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !announces.offer(&bytes).is_sent() {
            assert!(Instant::now() < deadline, "announce not taken");
            std::thread::sleep(Duration::from_millis(1));
        }
    };
    let epoch_seen = |q: &mut Discoverer, want: u64| {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let r = ask(q);
            if r.results.first().map(|f| f.epoch) == Some(want) {
                return r;
            }
            assert!(Instant::now() < deadline, "epoch {want} never seen: {r:?}");
        }
    };
    send(&announce(10000, 5));
    let r = epoch_seen(&mut q, 5);
    assert_eq!(r.results[0].driver_instance_id, "host-a");
    // Newer wins; an older one is dropped.
    send(&announce(10000, 9));
    epoch_seen(&mut q, 9);
    send(&announce(10000, 6));
    send(&announce(20000, 1)); // a fence: once stream 20000 is seen, epoch 6 was judged
    let deadline = Instant::now() + Duration::from_secs(5);
    let r = loop {
        let r = ask(&mut q);
        if r.results.len() == 2 {
            break r;
        }
        assert!(Instant::now() < deadline, "the fence never arrived: {r:?}");
    };
    let e10000 = r.results.iter().find(|f| f.stream_id == 10000).unwrap().epoch;
    assert_eq!(e10000, 9, "the older epoch 6 was dropped");
    // No announce for three periods (450 ms): gone.
    let last = Instant::now();
    let gone = loop {
        let r = ask(&mut q);
        if r.results.is_empty() {
            break last.elapsed();
        }
        assert!(last.elapsed() < Duration::from_secs(3), "never expired");
    };
    assert!(
        gone >= Duration::from_millis(440),
        "expired after {gone:?}, before three periods"
    );
    assert_eq!(ask(&mut q).status, Status::Ok);
}

#[test]
fn ds_6_1_keyed_by_driver_instance_and_stream() {
    let mut r = Registry::new(Duration::from_secs(10), 1000);
    let a = Authority {
        instance_id: "host-a".into(),
        control_channel: "aeron:ipc".into(),
        control_stream_id: 1000,
    };
    let b = Authority {
        instance_id: "host-b".into(),
        ..a.clone()
    };
    assert!(r.on_announce(&a, &announce(10000, 3)));
    assert!(
        r.on_announce(&b, &announce(10000, 1)),
        "another driver's stream 10000 is another entry"
    );
    assert!(!r.on_announce(&a, &announce(10000, 2)), "a regression is dropped");
    let mut unusable = announce(10001, 1);
    unusable.header_slot_bytes = 128;
    assert!(!r.on_announce(&a, &unusable));
    let found = r.query(&Request::default());
    assert_eq!(found.results.len(), 2);
    let limited = Registry::new(Duration::from_secs(10), 1).query(&Request::default());
    assert_eq!(limited.status, Status::Ok);
    let mut tight = Registry::new(Duration::from_secs(10), 1);
    tight.on_announce(&a, &announce(1, 1));
    tight.on_announce(&a, &announce(2, 1));
    let over = tight.query(&Request::default());
    assert_eq!(
        (over.status, over.results.len()),
        (Status::Error, 0),
        "past the cap: ERROR, no results"
    );
}

#[test]
fn ds_5_0_1_optional_fields_are_null_and_strings_empty() {
    let r = Request {
        request_id: 1,
        client_id: 2,
        response_channel: "aeron:ipc".into(),
        response_stream_id: 9001,
        ..Request::default()
    };
    let bytes = r.encode().unwrap();
    // streamId, producerId (u32 at 16, 20) and dataSourceId (u64 at 24) of the block hold nulls.
    assert_eq!(&bytes[8 + 16..8 + 20], &[0xff; 4]);
    assert_eq!(&bytes[8 + 20..8 + 24], &[0xff; 4]);
    assert_eq!(&bytes[8 + 24..8 + 32], &[0xff; 8]);
    // Empty tags group (blockLength 0, 0 entries), then the two strings, the name empty.
    assert_eq!(&bytes[40..44], &[0, 0, 0, 0]);
    assert_eq!(Request::decode(&bytes), Some(r));
}

proptest::proptest! {
    #[test]
    fn decoders_never_panic_on_any_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        let _ = Request::decode(&bytes);
        let _ = xmem_tp_discovery::Response::decode(&bytes);
    }
}
