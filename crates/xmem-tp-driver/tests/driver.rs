//! The driver model over a real media driver, with the tensor-pool driver in a process of its
//! own: tests named after the conformance items (tensor-pool digest §7, D-* and Cases A–H).

mod rig;

use std::time::{Duration, Instant};

use rig::{eventually, field, Rig};
use xmem_aeron::{Publication, Subscription};
use xmem_tensorpool::commit::FrameSpec;
use xmem_tensorpool::layout::{Dtype, TensorHeader};
use xmem_tensorpool::paths::AllowedDirs;
use xmem_tensorpool::stream::TpProducer;
use xmem_tp_control::{Consumer, ConsumerOptions, Producer, ProducerOptions, State};
use xmem_tp_driver::protocol::{
    decode_notice, decode_request, AttachRequest, AttachResponse, DetachRequest, Notice, Request,
    RevokeRequest, ShutdownReason, ShutdownRequest,
};
use xmem_tp_driver::{AttachError, Code, Event, RevokeReason, Role};

/// A bare control-stream peer: sends bytes, reads every driver notice.
struct Wire {
    out: Publication,
    inn: Subscription,
}

impl Wire {
    fn new(rig: &Rig) -> Wire {
        let ch = "aeron:ipc?term-length=4m";
        let out = rig.client.publication(ch, 1000).unwrap();
        let inn = rig.client.subscription(ch, 1000).unwrap();
        eventually(Duration::from_secs(5), "control connected", || {
            out.is_connected().then_some(())
        });
        Wire { out, inn }
    }

    fn send(&self, bytes: &[u8]) {
        eventually(Duration::from_secs(2), "offer", || {
            self.out.offer(bytes).is_sent().then_some(())
        });
    }

    /// Sends `bytes` (every 200 ms, as a C client) until the attach response for `corr` comes.
    fn attach_raw(&mut self, bytes: &[u8], corr: i64) -> AttachResponse {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut next = Instant::now();
        loop {
            assert!(Instant::now() < deadline, "no attach response for {corr}");
            if Instant::now() >= next {
                self.send(bytes);
                next = Instant::now() + Duration::from_millis(200);
            }
            let mut got = None;
            self.inn
                .poll(64, |m| {
                    if let Some(Notice::Attach(r)) = decode_notice(m.bytes) {
                        if r.correlation_id == corr {
                            got = Some(r);
                        }
                    }
                })
                .unwrap();
            if let Some(r) = got {
                return r;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn attach(&mut self, r: &AttachRequest) -> AttachResponse {
        self.attach_raw(&r.encode(), r.correlation_id)
    }

    /// Every notice that comes within `window` (for "nothing else came" checks, and revokes).
    fn notices_until(&mut self, within: Duration, mut done: impl FnMut(&Notice) -> bool) -> Vec<Notice> {
        let deadline = Instant::now() + within;
        let mut all = Vec::new();
        while Instant::now() < deadline {
            let mut stop = false;
            self.inn
                .poll(64, |m| {
                    if let Some(n) = decode_notice(m.bytes) {
                        stop |= done(&n);
                        all.push(n);
                    }
                })
                .unwrap();
            if stop {
                return all;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        panic!("the awaited notice did not come within {within:?}; got {all:?}");
    }
}

fn spec(len: u32) -> FrameSpec {
    FrameSpec {
        tensor: TensorHeader::row_major(Dtype::Uint8, &[len as i32]),
        values_len: len,
        timestamp_ns: 0,
        meta_version: 0,
    }
}

fn code(r: &AttachResponse) -> Code {
    r.code().expect("a known code")
}

fn refused(e: AttachError) -> (Code, String) {
    match e {
        AttachError::Refused { code, message } => (code, message),
        other => panic!("expected a refusal, got {other}"),
    }
}

#[test]
fn d_2_1_one_producer_per_stream_a_second_is_rejected() {
    let rig = Rig::new("");
    let mut a = rig.driver_client();
    let mut b = rig.driver_client();
    a.attach(10000, Role::Producer, 0).unwrap();
    let (c, why) = refused(b.attach(10000, Role::Producer, 0).unwrap_err());
    assert_eq!(c, Code::Rejected);
    assert!(why.contains("already has a producer"), "{why}");
    // Consumers are not exclusive.
    b.attach(10000, Role::Consumer, 0).unwrap();
}

#[test]
fn d_2_2_clients_never_create_truncate_or_unlink_shm() {
    let rig = Rig::new("");
    let mut dc = rig.driver_client();
    let grant = dc.attach(10000, Role::Producer, 0).unwrap().grant.clone();
    let epochs = rig.epochs_on_disk(10000);
    assert_eq!(
        epochs,
        vec![grant.announce.epoch],
        "the driver made the epoch's files"
    );
    let allowed = AllowedDirs::new([&rig.base]).unwrap();
    let ring_path = rig
        .stream_dir(10000)
        .join(grant.announce.epoch.to_string())
        .join("header.ring");
    let size_before = std::fs::metadata(&ring_path).unwrap().len();
    {
        let mut tp = TpProducer::attach(&grant.announce, &allowed).unwrap();
        tp.publish(&spec(64), |b| b.fill(7)).unwrap().unwrap();
    } // dropped: a producer in driver mode leaves the files alone
    assert_eq!(rig.epochs_on_disk(10000), epochs);
    assert_eq!(std::fs::metadata(&ring_path).unwrap().len(), size_before);
    // Regions that do not exist are not created by a client: attaching to them fails.
    let mut gone = grant.announce.clone();
    gone.epoch += 1;
    gone.header_region_uri = gone
        .header_region_uri
        .replace(&grant.announce.epoch.to_string(), &gone.epoch.to_string());
    assert!(TpProducer::attach(&gone, &allowed).is_err());
    assert_eq!(
        rig.epochs_on_disk(10000),
        epochs,
        "nothing was created by the client"
    );
}

#[test]
fn d_4_2_1_and_2_attach_response_echoes_the_correlation_id_and_is_complete() {
    let rig = Rig::new("");
    let mut wire = Wire::new(&rig);
    let r = wire.attach(&AttachRequest::new(0x1234_5678_9abc, 10000, 41, Role::Consumer));
    assert_eq!(r.correlation_id, 0x1234_5678_9abc);
    assert_eq!(code(&r), Code::Ok);
    let g = r.grant().expect("an OK response passes the client's checks");
    assert_eq!(g.announce.header_slot_bytes, 256);
    assert_eq!(g.announce.header_nslots, 16);
    assert!(!g.announce.header_region_uri.is_empty());
    assert!(g
        .announce
        .pools
        .iter()
        .all(|p| p.nslots == 16 && !p.region_uri.is_empty()));
    assert!(r.lease_expiry_ns.is_some() && r.node_id.is_some());
    // A null in an OK response is a protocol error, on the client side.
    for strip in 0..4 {
        let mut bad = r.clone();
        match strip {
            0 => bad.lease_id = None,
            1 => bad.epoch = None,
            2 => bad.header_slot_bytes = Some(128),
            _ => bad.pools[0].nslots = 8,
        }
        assert!(bad.grant().is_err(), "case {strip} must fail closed");
    }
}

#[test]
fn d_4_2_3_and_4_and_tl_6_2_1_node_ids_honoured_assigned_unique_and_cooled_down() {
    let rig = Rig::new("");
    let mut wire = Wire::new(&rig);
    let mut req = AttachRequest::new(11, 10000, 51, Role::Consumer);
    req.desired_node_id = Some(4242);
    let r = wire.attach(&req);
    assert_eq!(
        (code(&r), r.node_id),
        (Code::Ok, Some(4242)),
        "desired node honoured"
    );
    let assigned = wire.attach(&AttachRequest::new(12, 10000, 52, Role::Consumer));
    let n = assigned.node_id.expect("assigned when absent");
    assert!(n != 0 && n != 4242);
    let mut dup = AttachRequest::new(13, 10000, 53, Role::Consumer);
    dup.desired_node_id = Some(4242);
    let r = wire.attach(&dup);
    assert_eq!(code(&r), Code::Rejected);
    assert_eq!(r.node_id, None, "no node id on a refusal");
    // Released by a detach, it cools down before it can be had again.
    let first = wire.attach(&req);
    wire.send(
        &DetachRequest {
            correlation_id: 14,
            lease_id: first.lease_id.unwrap(),
            stream_id: 10000,
            client_id: 51,
            role: 2,
        }
        .encode(),
    );
    wire.notices_until(
        Duration::from_secs(2),
        |n| matches!(n, Notice::Detach(d) if d.correlation_id == 14 && d.code == 0),
    );
    let mut again = AttachRequest::new(15, 10000, 54, Role::Consumer);
    again.desired_node_id = Some(4242);
    let r = wire.attach(&again);
    assert_eq!(code(&r), Code::Rejected, "cooling down: {}", r.error_message);
    let mut n = 16;
    let r = eventually(Duration::from_secs(3), "node id free after the cooldown", || {
        n += 1;
        let mut later = AttachRequest::new(n, 10000, 55, Role::Consumer);
        later.desired_node_id = Some(4242);
        let r = wire.attach(&later);
        (code(&r) == Code::Ok).then_some(r)
    });
    assert_eq!(r.node_id, Some(4242));
}

#[test]
fn d_4_3_1_and_case_h_policy_checks_refuse_with_the_right_code() {
    let rig = Rig::new("");
    let mut wire = Wire::new(&rig);
    let mut layout = AttachRequest::new(21, 10000, 61, Role::Consumer);
    layout.expected_layout_version = 2;
    let r = wire.attach(&layout);
    assert_eq!(code(&r), Code::Rejected, "{}", r.error_message);
    assert!(r.error_message.contains("layout"));
    // REQUIRE_EXISTING on a stream nobody provisioned.
    let r = wire.attach(&AttachRequest::new(22, 25000, 62, Role::Consumer));
    assert_eq!(code(&r), Code::Rejected);
    assert!(r.error_message.contains("not provisioned"), "{}", r.error_message);
    // A stream outside every range, even with EXISTING_OR_CREATE.
    let r = wire.attach(&AttachRequest::new(23, 40000, 63, Role::Producer));
    assert_eq!(code(&r), Code::Rejected);
    assert!(
        r.error_message.contains("outside stream_id_range"),
        "{}",
        r.error_message
    );
    // A profile without pools.
    let r = wire.attach(&AttachRequest::new(24, 10002, 64, Role::Producer));
    assert_eq!(code(&r), Code::InvalidParams, "{}", r.error_message);
    // Case H: hugepages required where there are none (the base is on tmpfs).
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let no_hugepages = meminfo
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["HugePages_Total:", "0"]);
    let mut huge = AttachRequest::new(25, 10000, 65, Role::Producer);
    huge.require_hugepages = 2;
    let r = wire.attach(&huge);
    assert_eq!(code(&r), Code::Rejected, "{}", r.error_message);
    assert!(r.error_message.contains("hugetlbfs"), "{}", r.error_message);
    if !no_hugepages {
        eprintln!("note: this machine has hugepages; the base directory is tmpfs all the same");
    }
    // Refusals carry nulls and empty pools.
    assert!(
        r.lease_id.is_none() && r.epoch.is_none() && r.pools.is_empty() && r.header_region_uri.is_empty()
    );
    // STANDARD on tmpfs is fine.
    let mut standard = AttachRequest::new(26, 10000, 66, Role::Producer);
    standard.require_hugepages = 1;
    assert_eq!(code(&wire.attach(&standard)), Code::Ok);
}

#[test]
fn d_4_4_1_keepalives_hold_a_lease_and_their_absence_expires_it() {
    let rig = Rig::new("");
    let mut held = rig.driver_client();
    let lease = held.attach(10000, Role::Consumer, 0).unwrap().grant.lease_id;
    let mut wire = Wire::new(&rig);
    // A lease attached with no keepalive at all expires after 3 × 200 ms.
    let silent = wire.attach(&AttachRequest::new(31, 10000, 71, Role::Consumer));
    let silent_id = silent.lease_id.unwrap();
    let t0 = Instant::now();
    // Meanwhile the held one keeps polling (keepalives every 200 ms).
    let mut expired_at = None;
    while t0.elapsed() < Duration::from_millis(2000) {
        let events = held.poll().unwrap();
        assert!(events.is_empty(), "the kept lease must stay: {events:?}");
        wire.inn
            .poll(64, |m| {
                if let Some(Notice::Revoked(r)) = decode_notice(m.bytes) {
                    if r.lease_id == silent_id && r.reason == RevokeReason::Expired {
                        expired_at.get_or_insert(t0.elapsed());
                    }
                    assert_ne!(r.lease_id, lease, "the kept lease was revoked");
                }
            })
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
    }
    let at = expired_at.expect("the silent lease expired");
    assert!(
        at <= Duration::from_millis(600 + 200 + 200),
        "expired after {at:?}"
    );
    assert!(at >= Duration::from_millis(500), "expired too early: {at:?}");
    assert!(held.lease().is_some());
}

#[test]
fn case_f_without_keepalives_the_lease_expires_and_the_client_exits_cleanly() {
    let rig = Rig::new("");
    // A peer that keepalives only every 10 s: the driver expires it after 600 ms.
    let mut peer = rig.peer(10000, "consumer", &["--keepalive-ms", "10000", "--exit-on-loss"]);
    peer.expect("attached", Duration::from_secs(5));
    let event = peer.expect("event", Duration::from_secs(5));
    assert!(event.contains("Revoked(Expired)"), "{event}");
    let status = peer.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn d_4_4a_1_gate_and_bad_input_get_their_codes_and_the_driver_serves_on() {
    let rig = Rig::new("");
    let mut wire = Wire::new(&rig);
    // A higher schema version: UNSUPPORTED.
    let mut v2 = AttachRequest::new(41, 10000, 81, Role::Consumer).encode();
    v2[6] = 2;
    assert_eq!(code(&wire.attach_raw(&v2, 41)), Code::Unsupported);
    // A wrong blockLength: INVALID_PARAMS.
    let mut short = AttachRequest::new(42, 10000, 82, Role::Consumer).encode();
    short[0] = 26;
    short.pop();
    assert_eq!(code(&wire.attach_raw(&short, 42)), Code::InvalidParams);
    // clientId 0 and an unknown role: INVALID_PARAMS.
    assert_eq!(
        code(&wire.attach(&AttachRequest::new(43, 10000, 0, Role::Consumer))),
        Code::InvalidParams
    );
    let mut role = AttachRequest::new(44, 10000, 84, Role::Consumer);
    role.role = 9;
    let r = wire.attach(&role);
    assert_eq!(code(&r), Code::InvalidParams);
    assert!(r.error_message.contains("role 9"), "{}", r.error_message);
    // An unknown publish mode and hugepages policy.
    let mut mode = AttachRequest::new(45, 10000, 85, Role::Consumer);
    mode.publish_mode = 7;
    assert_eq!(code(&wire.attach(&mode)), Code::InvalidParams);
    // Garbage, other schemas, an oversized shutdown request with a wrong token: ignored.
    for junk in [
        vec![0u8; 3],
        vec![0xff; 64],
        {
            let mut b = AttachRequest::new(46, 10000, 86, Role::Consumer).encode();
            b[4] = 0x84; // schema 900: a wire message, not the driver's
            b[5] = 0x03;
            b
        },
        ShutdownRequest {
            correlation_id: 47,
            reason: ShutdownReason::Admin,
            token: "x".repeat(60_000),
            message: "y".repeat(2_000),
        }
        .encode()
        .unwrap(),
    ] {
        wire.send(&junk);
    }
    // Still serving everyone else.
    let mut dc = rig.driver_client();
    dc.attach(10000, Role::Producer, 0).unwrap();
    let r = wire.attach(&AttachRequest::new(48, 10000, 88, Role::Consumer));
    assert_eq!(code(&r), Code::Ok);
    assert!(r.error_message.len() <= 1024);
}

#[test]
fn d_4_6_1_an_unknown_response_code_fails_the_attach_at_once_and_holds_no_lease() {
    // The driver's own codes per class are checked above (UNSUPPORTED, INVALID_PARAMS,
    // REJECTED); here a "driver" answers every attach with code 5, which schema 901 lacks.
    let rig = Rig::bare();
    let dir = rig.aeron_dir.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let fake = {
        let (stop, answered) = (stop.clone(), answered.clone());
        std::thread::spawn(move || {
            let c = xmem_aeron::Client::connect(&xmem_aeron::ClientOptions {
                dir: Some(dir),
                ..xmem_aeron::ClientOptions::default()
            })
            .unwrap();
            let ch = "aeron:ipc?term-length=4m";
            let out = c.publication(ch, 1000).unwrap();
            let mut inn = c.subscription(ch, 1000).unwrap();
            let mut asked = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                inn.poll(16, |m| {
                    if let Ok(Request::Attach(r)) = decode_request(m.bytes) {
                        asked.push(r.correlation_id);
                    }
                })
                .unwrap();
                for corr in asked.drain(..) {
                    let mut b = AttachResponse::refusal(corr, Code::Rejected, "a code from the future")
                        .encode()
                        .unwrap();
                    b[16..20].copy_from_slice(&5i32.to_le_bytes()); // the block's `code`
                    if out.offer(&b).is_sent() {
                        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let mut dc = rig.driver_client(); // attach timeout 5 s, requests every 200 ms
    let started = Instant::now();
    let e = dc.attach(10000, Role::Consumer, 0).unwrap_err();
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    fake.join().unwrap();
    assert!(
        matches!(&e, AttachError::Protocol(m) if m.contains("unknown response code 5")),
        "{e}"
    );
    assert!(
        e.is_retryable(),
        "a protocol error means: drop the attach and reattach"
    );
    assert!(dc.lease().is_none(), "no lease is held after it");
    assert!(answered.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    // Failed on the answer, not on the 5-second timeout (which would say Timeout, above).
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[test]
fn d_4_7_1_revokes_clear_the_lease_and_a_producer_revoke_means_a_higher_epoch() {
    let rig = Rig::new("");
    let mut consumer = rig.driver_client();
    let first = consumer
        .attach(10000, Role::Consumer, 0)
        .unwrap()
        .grant
        .announce
        .epoch;
    let mut producer = rig.driver_client();
    let epoch = producer
        .attach(10000, Role::Producer, 0)
        .unwrap()
        .grant
        .announce
        .epoch;
    assert!(epoch > first, "a producer attach makes a new epoch");
    // The producer detaches (its lease revoked as DETACHED): the consumer hears of it, then
    // of a higher epoch.
    producer.detach().unwrap();
    let mut saw_revoke = false;
    let newer = eventually(
        Duration::from_secs(3),
        "a higher epoch after the producer left",
        || {
            for e in consumer.poll().unwrap() {
                match e {
                    Event::ProducerRevoked => saw_revoke = true,
                    Event::NewEpoch(a) if a.epoch == epoch => {} // the producer's own epoch
                    Event::NewEpoch(a) => return Some(a.epoch),
                    other => panic!("unexpected {other:?}"),
                }
            }
            None
        },
    );
    assert!(saw_revoke, "the revoke comes before the announce");
    assert!(newer > epoch);
    // A revoke of our own lease: here by expiry, the client stops polling for 1 s.
    std::thread::sleep(Duration::from_millis(1000)); // the absence of keepalives is the test
    let events = consumer.poll().unwrap();
    assert!(
        events.contains(&Event::Revoked(RevokeReason::Expired)) || events.contains(&Event::KeepaliveFailed),
        "{events:?}"
    );
    assert!(consumer.lease().is_none(), "the lease is dropped");
}

#[test]
fn d_4_8_1_duplicate_client_id_rejected_lease_ids_unique() {
    let rig = Rig::new("");
    let mut wire = Wire::new(&rig);
    let a = wire.attach(&AttachRequest::new(51, 10000, 91, Role::Consumer));
    let b = wire.attach(&AttachRequest::new(52, 10000, 91, Role::Consumer));
    assert_eq!(code(&b), Code::Rejected);
    assert_eq!(b.error_message, "client_id already attached");
    let mut ids = vec![a.lease_id.unwrap()];
    for i in 0..20 {
        let r = wire.attach(&AttachRequest::new(60 + i, 10000, 100 + i as u32, Role::Consumer));
        ids.push(r.lease_id.unwrap());
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "lease ids are unique: {ids:?}");
}

#[test]
fn d_4_9_1_detach_round_trip_and_a_producer_detach_bumps_the_epoch() {
    let rig = Rig::new("");
    let mut wire = Wire::new(&rig);
    let r = wire.attach(&AttachRequest::new(71, 10000, 111, Role::Producer));
    let epoch = r.epoch.unwrap();
    let detach = DetachRequest {
        correlation_id: 72,
        lease_id: r.lease_id.unwrap(),
        stream_id: 10000,
        client_id: 111,
        role: 1,
    };
    wire.send(&detach.encode());
    let notices = wire.notices_until(
        Duration::from_secs(2),
        |n| matches!(n, Notice::Detach(d) if d.correlation_id == 72),
    );
    let revoked = notices
        .iter()
        .position(
            |n| matches!(n, Notice::Revoked(r) if r.reason == RevokeReason::Detached && r.client_id == 111),
        )
        .expect("a revoke (DETACHED)");
    let answered = notices.len() - 1;
    assert!(revoked < answered, "the revoke precedes the response");
    assert!(matches!(&notices[answered], Notice::Detach(d) if d.code == 0));
    assert!(
        rig.epochs_on_disk(10000).iter().any(|e| *e > epoch),
        "a new epoch after the producer's detach"
    );
    // Detaching again: the lease is gone.
    wire.send(
        &DetachRequest {
            correlation_id: 73,
            ..detach
        }
        .encode(),
    );
    let notices = wire.notices_until(
        Duration::from_secs(2),
        |n| matches!(n, Notice::Detach(d) if d.correlation_id == 73),
    );
    match notices.last() {
        Some(Notice::Detach(d)) => {
            assert_eq!(d.code, Code::Rejected.wire());
            assert_eq!(d.error_message, "lease not found");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn d_b_1_correlation_ids_per_process_and_repeated_requests_get_the_identical_ok() {
    let rig = Rig::new("");
    let mut wire = Wire::new(&rig);
    let req = AttachRequest::new(81, 10000, 121, Role::Consumer);
    let first = wire.attach(&req);
    // The C client's 200 ms retry: the same request again gets the same OK, not a refusal.
    let again = wire.attach(&req);
    assert_eq!(first, again);
    // Two clients of one process seed their correlation ids apart; a late duplicate OK does
    // not disturb a client that has its lease.
    let mut a = rig.driver_client();
    a.attach(10000, Role::Consumer, 0).unwrap();
    wire.send(&first.encode().unwrap());
    for _ in 0..20 {
        assert!(a.poll().unwrap().is_empty());
    }
    assert!(a.lease().is_some());
}

#[test]
fn d_b_2_auto_assigned_client_ids_retry_on_already_attached() {
    let rig = Rig::new("");
    let mut first = rig.driver_client();
    first.attach(10000, Role::Consumer, 777).unwrap();
    let mut second = rig.driver_client();
    // Asked with an explicit id that is taken: refused.
    let (c, _) = refused(second.attach(10000, Role::Consumer, 777).unwrap_err());
    assert_eq!(c, Code::Rejected);
    // The same id as an auto-assigned first guess: a new one is picked and the attach succeeds.
    let got = second
        .attach_with(AttachRequest::new(0, 10000, 777, Role::Consumer), true)
        .unwrap();
    assert!(got.client_id != 777 && got.client_id != 0);
}

/// A driven producer and an adopted consumer of `stream` exchange ten frames on `channels`;
/// `tune` adjusts the consumer. Returns the consumer (for its stats and streams) and producer.
fn exchange(
    rig: &Rig,
    stream: u32,
    channels: xmem_tp_control::Channels,
    tune: impl FnOnce(&mut ConsumerOptions),
) -> (Consumer, Producer, Vec<xmem_tp_driver::DriverClient>) {
    let opts = xmem_tp_driver::DriverClientOptions {
        control: channels.control.clone(),
        announce: channels.announce.clone(),
        ..rig.client_options()
    };
    let mut pdc = xmem_tp_driver::DriverClient::new(&rig.client, opts.clone()).unwrap();
    let pa = pdc.attach(stream, Role::Producer, 0).unwrap().clone();
    let allowed = AllowedDirs::new([&rig.base]).unwrap();
    let tp = TpProducer::attach(&pa.grant.announce, &allowed).unwrap();
    let mut producer = Producer::driven(
        &rig.client,
        tp,
        ProducerOptions {
            channels: channels.clone(),
            announce_period: Duration::from_millis(200),
            ..ProducerOptions::default()
        },
    )
    .unwrap();
    let mut cdc = xmem_tp_driver::DriverClient::new(&rig.client, opts).unwrap();
    let ca = cdc.attach(stream, Role::Consumer, 0).unwrap().clone();
    assert_eq!(ca.grant.announce.epoch, pa.grant.announce.epoch);
    let mut copts = ConsumerOptions::new(stream, allowed.clone());
    copts.channels = channels;
    copts.announce_period = Duration::from_millis(200);
    tune(&mut copts);
    let own = copts.descriptor_stream.clone();
    let mut consumer = Consumer::new(&rig.client, copts).unwrap();
    consumer.adopt(&ca.grant.announce).unwrap();
    assert_eq!(
        consumer.state(),
        &State::Mapped {
            epoch: ca.grant.announce.epoch
        }
    );
    eventually(
        Duration::from_secs(5),
        "descriptors connected (and granted)",
        || {
            producer.poll().unwrap();
            consumer.poll(16, |_| {}).unwrap();
            pdc.poll().unwrap();
            cdc.poll().unwrap();
            let granted = own
                .as_ref()
                .is_none_or(|o| consumer.descriptor_stream().stream_id == o.stream_id as i32);
            (producer.is_connected() && granted).then_some(())
        },
    );
    let mut got = Vec::new();
    for n in 0..10u8 {
        // fewer than the ring's 16 slots: none overwritten
        producer.publish(&spec(1024), 0, |b| b.fill(n)).unwrap().unwrap();
        producer.progress(
            u64::from(n),
            1024,
            xmem_tensorpool::codec::ProgressState::Complete,
        );
    }
    let what = format!("10 frames of stream {stream}");
    eventually(Duration::from_secs(5), &what, || {
        consumer
            .poll(64, |f| {
                got.push((
                    f.descriptor.seq,
                    f.bytes.iter().all(|b| *b == f.bytes[0]),
                    f.bytes[0],
                ))
            })
            .unwrap();
        (got.len() >= 10).then_some(())
    });
    for (i, (seq, uniform, first)) in got.iter().enumerate() {
        assert_eq!((*seq, *uniform, *first), (i as u64, true, i as u8));
    }
    (consumer, producer, vec![pdc, cdc])
}

#[test]
fn case_a_and_d_control_and_announce_on_1000_and_a_dynamic_stream_created_on_attach() {
    let rig = Rig::new("");
    let on_1000 = xmem_tp_control::Channels {
        announce: xmem_tp_control::Endpoint::tp(1000),
        ..xmem_tp_control::Channels::default()
    };
    exchange(&rig, 10000, on_1000.clone(), |_| {});
    // Case D: 20001 (in 20000-29999) does not exist until the producer's attach makes it.
    assert!(rig.epochs_on_disk(20001).is_empty());
    exchange(&rig, 20001, on_1000, |_| {});
    assert!(!rig.epochs_on_disk(20001).is_empty());
}

#[test]
fn case_b_announces_on_a_separate_stream_1002_for_stream_10001() {
    let rig = Rig::with_env(
        "",
        "[streams.b]\nstream_id = 10001\nprofile = \"camera\"\n",
        &[("DRIVER_ANNOUNCE_STREAM_ID", "1002")],
    );
    let mut announces = rig
        .client
        .subscription("aeron:ipc?term-length=4m|tether=false", 1002)
        .unwrap();
    let channels = xmem_tp_control::Channels {
        announce: xmem_tp_control::Endpoint::tp(1002),
        ..xmem_tp_control::Channels::default()
    };
    let _kept = exchange(&rig, 10001, channels, |_| {});
    eventually(
        Duration::from_secs(3),
        "an announce of 10001 on stream 1002",
        || {
            let mut seen = false;
            announces
                .poll(16, |m| {
                    seen |= xmem_tensorpool::codec::ShmPoolAnnounce::decode(m.bytes)
                        .is_ok_and(|a| a.stream_id == 10001)
                })
                .unwrap();
            seen.then_some(())
        },
    );
}

#[test]
fn case_c_and_e_per_consumer_streams_31001_32001_and_progress_on_control() {
    let rig = Rig::new("");
    let channels = xmem_tp_control::Channels {
        announce: xmem_tp_control::Endpoint::tp(1000),
        ..xmem_tp_control::Channels::default()
    };
    let (mut consumer, _p, _kept) = exchange(&rig, 10000, channels, |o| {
        o.descriptor_stream = Some(xmem_tp_control::StreamRequest {
            channel: "aeron:ipc?term-length=4m".into(),
            stream_id: 31001,
        });
        o.control_stream = Some(xmem_tp_control::StreamRequest {
            channel: "aeron:ipc?term-length=4m".into(),
            stream_id: 32001,
        });
        o.supports_progress = true;
    });
    assert_eq!(
        consumer.descriptor_stream().stream_id,
        31001,
        "the per-consumer descriptor stream"
    );
    let config = consumer.config().expect("a ConsumerConfig");
    assert_eq!(config.control.as_ref().map(|c| c.stream_id), Some(32001));
    // Progress is read with the control plane's housekeeping (every 16 polls while mapped).
    eventually(
        Duration::from_secs(3),
        "FrameProgress reached the consumer",
        || {
            consumer.poll(16, |_| {}).unwrap();
            (consumer.stats().progress > 0).then_some(())
        },
    );
}

#[test]
fn kill_a_producer_its_lease_expires_and_the_stream_gets_a_new_epoch_announced() {
    let rig = Rig::new("");
    let mut consumer = rig.driver_client();
    consumer.attach(10000, Role::Consumer, 0).unwrap();
    let mut peer = rig.peer(10000, "producer", &[]);
    let line = peer.expect("attached", Duration::from_secs(5));
    let epoch = field(&line, "epoch");
    eventually(
        Duration::from_secs(2),
        "the consumer sees the producer's epoch",
        || {
            consumer
                .poll()
                .unwrap()
                .into_iter()
                .find_map(|e| matches!(e, Event::NewEpoch(a) if a.epoch == epoch).then_some(()))
        },
    );
    peer.child.kill().unwrap();
    let killed = Instant::now();
    let mut revoked_after = None;
    let newer = eventually(Duration::from_secs(5), "a new epoch after the kill", || {
        for e in consumer.poll().unwrap() {
            match e {
                Event::ProducerRevoked => revoked_after = Some(killed.elapsed()),
                Event::NewEpoch(a) => return Some(a.epoch),
                other => panic!("{other:?}"),
            }
        }
        None
    });
    let after = revoked_after.expect("the producer's lease was revoked");
    // 3 × 200 ms of grace plus one keepalive interval.
    assert!(after <= Duration::from_millis(800 + 100), "{after:?}");
    assert!(newer > epoch);
}

#[test]
fn case_g_kill_the_driver_clients_notice_and_reattach_to_a_restart_with_higher_epochs() {
    let mut rig = Rig::new("");
    let mut peer = rig.peer(10000, "producer", &[]);
    let before = field(&peer.expect("attached", Duration::from_secs(5)), "epoch");
    rig.kill_driver();
    let event = peer.expect("event", Duration::from_secs(5));
    assert!(event.contains("DriverSilent"), "{event}");
    rig.start_driver();
    let after = field(&peer.expect("attached", Duration::from_secs(10)), "epoch");
    assert!(after > before, "epoch after the restart {after} > {before}");
    drop(peer);
    // The killed driver's epoch is still on disk (GC at start-up is off here); a clean stop
    // removes what the new driver made, and the test removes the rest.
    let status = rig.stop_driver();
    assert!(status.success());
    let left: Vec<u64> = rig.epochs_on_disk(10000);
    assert_eq!(left, vec![before], "only the killed driver's epoch is left");
    std::fs::remove_dir_all(rig.stream_dir(10000).parent().unwrap().parent().unwrap()).unwrap();
}

#[test]
fn epoch_gc_on_start_up_removes_what_a_killed_driver_left() {
    let mut rig = Rig::new("epoch_gc_on_startup = true\nepoch_gc_min_age_ns = 0");
    let mut dc = rig.driver_client();
    dc.attach(10000, Role::Producer, 0).unwrap();
    drop(dc);
    rig.kill_driver();
    assert!(
        !rig.epochs_on_disk(10000).is_empty(),
        "the killed driver left its epochs"
    );
    rig.start_driver();
    assert!(rig.epochs_on_disk(10000).is_empty(), "collected at start-up");
}

#[test]
fn epoch_gc_keeps_the_newest_epochs_of_a_stream() {
    let rig = Rig::new("epoch_gc_keep = 2\nepoch_gc_min_age_ns = 0");
    for _ in 0..4 {
        let mut dc = rig.driver_client();
        dc.attach(10000, Role::Producer, 0).unwrap();
        dc.detach().unwrap();
    }
    let mut probe = rig.driver_client();
    probe.attach(10000, Role::Consumer, 0).unwrap();
    assert_eq!(
        rig.epochs_on_disk(10000).len(),
        2,
        "{:?}",
        rig.epochs_on_disk(10000)
    );
}

#[test]
fn a_clean_shutdown_sends_the_notice_and_leaves_nothing_in_dev_shm() {
    let mut rig = Rig::new("");
    let mut dc = rig.driver_client();
    dc.attach(10000, Role::Producer, 0).unwrap();
    assert!(!rig.leftovers().is_empty());
    assert!(rig.stop_driver().success());
    let events = eventually(Duration::from_secs(2), "the shutdown notice", || {
        let e = dc.poll().unwrap();
        (!e.is_empty()).then_some(e)
    });
    assert!(events.contains(&Event::DriverShutdown), "{events:?}");
    assert!(rig.leftovers().is_empty(), "{:?}", rig.leftovers());
}

#[test]
fn a_shutdown_request_needs_the_token_then_drains_and_announces_the_end() {
    let mut rig = Rig::new("shutdown_token = \"s3cret\"\nshutdown_timeout_ms = 300");
    let mut wire = Wire::new(&rig);
    let mut dc = rig.driver_client();
    dc.attach(10000, Role::Consumer, 0).unwrap();
    let request = |token: &str| ShutdownRequest {
        correlation_id: 1,
        reason: ShutdownReason::Admin,
        token: token.into(),
        message: "test".into(),
    };
    wire.send(&request("wrong").encode().unwrap());
    // Still serving after the wrong token.
    assert_eq!(
        code(&wire.attach(&AttachRequest::new(91, 10000, 191, Role::Consumer))),
        Code::Ok
    );
    wire.send(&request("s3cret").encode().unwrap());
    let notices = wire.notices_until(Duration::from_secs(3), |n| matches!(n, Notice::Shutdown(_)));
    assert!(matches!(notices.last(), Some(Notice::Shutdown(s)) if s.reason == ShutdownReason::Admin));
    let status = rig.driver.as_mut().unwrap().child.wait().unwrap();
    assert!(status.success());
    rig.driver = None;
    assert!(rig.leftovers().is_empty());
}

#[test]
fn an_admin_revoke_needs_the_token_ends_the_lease_as_revoked_and_a_producers_brings_a_new_epoch() {
    let rig = Rig::new("shutdown_token = \"s3cret\"");
    let mut wire = Wire::new(&rig);
    let mut consumer = rig.driver_client();
    let c_lease = consumer.attach(10000, Role::Consumer, 0).unwrap().grant.lease_id;
    let mut producer = rig.driver_client();
    let p = producer.attach(10000, Role::Producer, 0).unwrap();
    let (p_lease, epoch) = (p.grant.lease_id, p.grant.announce.epoch);
    let revoke = |lease_id: u64, token: &str, message: &str| RevokeRequest {
        correlation_id: 7,
        lease_id,
        token: token.into(),
        message: message.into(),
    };
    // A wrong token, a malformed block and an unknown lease change nothing; the driver takes
    // the control stream's messages in order, so the first revoke notice of the consumer's
    // lease must be the one the good request asked for.
    wire.send(&revoke(c_lease, "wrong", "not this one").encode());
    let mut bad = revoke(c_lease, "s3cret", "nor this one").encode();
    bad[0] = 17; // blockLength
    wire.send(&bad);
    wire.send(&revoke(999_999, "s3cret", "no such lease").encode());
    wire.send(&revoke(c_lease, "s3cret", "maintenance").encode());
    let notices = wire.notices_until(
        Duration::from_secs(3),
        |n| matches!(n, Notice::Revoked(r) if r.lease_id == c_lease),
    );
    let revoked: Vec<_> = notices
        .iter()
        .filter_map(|n| match n {
            Notice::Revoked(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(revoked.len(), 1, "only the good request revoked: {revoked:?}");
    assert_eq!(revoked[0].reason, RevokeReason::Revoked);
    assert_eq!(revoked[0].message, "maintenance");
    eventually(Duration::from_secs(3), "the consumer hears its revoke", || {
        consumer
            .poll()
            .unwrap()
            .contains(&Event::Revoked(RevokeReason::Revoked))
            .then_some(())
    });
    // A producer's revoke: the producer hears it, a consumer of the stream sees the producer
    // go and then a higher epoch.
    let mut watcher = rig.driver_client();
    watcher.attach(10000, Role::Consumer, 0).unwrap();
    wire.send(&revoke(p_lease, "s3cret", "").encode());
    eventually(Duration::from_secs(3), "the producer hears its revoke", || {
        producer
            .poll()
            .unwrap()
            .contains(&Event::Revoked(RevokeReason::Revoked))
            .then_some(())
    });
    let mut saw_revoke = false;
    let newer = eventually(Duration::from_secs(3), "a higher epoch after the revoke", || {
        for e in watcher.poll().unwrap() {
            match e {
                Event::ProducerRevoked => saw_revoke = true,
                Event::NewEpoch(a) if a.epoch > epoch => return Some(a.epoch),
                _ => {}
            }
        }
        None
    });
    assert!(saw_revoke && newer > epoch);
}
