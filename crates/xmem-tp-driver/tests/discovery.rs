//! Discovery inside the driver (a real driver process, a real media driver): requests answered
//! from the driver's own announces, filtered, checked (DS-4.2-1 … DS-5.2-1).

mod rig;

use std::time::Duration;

use rig::Rig;
use xmem_aeron::Subscription;
use xmem_tp_control::messages::DataSourceAnnounce;
use xmem_tp_control::Endpoint;
use xmem_tp_discovery::{Discoverer, Request, Response, Status};
use xmem_tp_driver::Role;

const SECTIONS: &str = r#"
[streams.front]
stream_id = 10003
profile = "camera"
tags = ["rgb", "front", "rgb"]

[streams.rear]
stream_id = 10004
profile = "camera"
tags = ["rgb", "Rear"]

[discovery]
enabled = true
request_stream_id = 9000
metadata_stream_id = 1300
"#;

fn rig_with_streams() -> (Rig, Vec<xmem_tp_driver::DriverClient>) {
    let rig = Rig::with("", SECTIONS);
    // Streams are announced (and so discoverable) once their first attach made an epoch.
    let mut held = Vec::new();
    for s in [10000, 10003, 10004] {
        let mut dc = rig.driver_client();
        dc.attach(s, Role::Consumer, 0).unwrap();
        held.push(dc);
    }
    (rig, held)
}

fn ask(d: &mut Discoverer, r: Request) -> Response {
    d.query(&r, Duration::from_secs(5), Duration::from_millis(100))
        .unwrap()
}

fn streams(r: &Response) -> Vec<u32> {
    let mut v: Vec<u32> = r.results.iter().map(|f| f.stream_id).collect();
    v.sort();
    v
}

fn discoverer(rig: &Rig, reply: i32) -> Discoverer {
    Discoverer::new(&rig.client, Endpoint::tp(9000), Endpoint::tp(reply)).unwrap()
}

#[test]
fn ds_5_1_1_filters_combine_with_and_tags_are_case_sensitive_and_deduplicated() {
    let (rig, _held) = rig_with_streams();
    let mut d = discoverer(&rig, 9001);
    let all = ask(&mut d, Request::default());
    assert_eq!(all.status, Status::Ok);
    assert_eq!(streams(&all), vec![10000, 10003, 10004]);
    let tags = |t: &[&str]| Request {
        tags: t.iter().map(|s| s.to_string()).collect(),
        ..Request::default()
    };
    assert_eq!(streams(&ask(&mut d, tags(&["rgb"]))), vec![10003, 10004]);
    assert_eq!(streams(&ask(&mut d, tags(&["rgb", "front"]))), vec![10003]);
    assert_eq!(streams(&ask(&mut d, tags(&["rgb", "rgb"]))), vec![10003, 10004]);
    let none = ask(&mut d, tags(&["RGB"]));
    assert_eq!(
        (none.status, none.results.len()),
        (Status::Ok, 0),
        "OK even for no hit"
    );
    let front = ask(&mut d, tags(&["front"]));
    assert_eq!(
        front.results[0].tags,
        vec!["rgb", "front"],
        "the full tag set, de-duplicated"
    );
    let by_stream = Request {
        stream_id: Some(10004),
        ..Request::default()
    };
    assert_eq!(streams(&ask(&mut d, by_stream)), vec![10004]);
    // A name from the stream's DataSourceAnnounce, compared byte for byte, AND the tags.
    let metadata = rig.client.publication("aeron:ipc?term-length=4m", 1300).unwrap();
    let name = DataSourceAnnounce {
        stream_id: 10003,
        producer_id: 0,
        epoch: 0,
        meta_version: 1,
        name: "front-cam".into(),
        summary: String::new(),
    }
    .encode()
    .unwrap();
    let named = |n: &str, t: &[&str]| Request {
        data_source_name: n.into(),
        tags: t.iter().map(|s| s.to_string()).collect(),
        ..Request::default()
    };
    rig::eventually(Duration::from_secs(5), "the name registered", || {
        let _ = metadata.offer(&name);
        (streams(&ask(&mut d, named("front-cam", &[]))) == vec![10003]).then_some(())
    });
    assert_eq!(streams(&ask(&mut d, named("front-cam", &["rgb"]))), vec![10003]);
    assert!(ask(&mut d, named("front-cam", &["Rear"])).results.is_empty());
    assert!(ask(&mut d, named("Front-cam", &[])).results.is_empty());
}

#[test]
fn ds_5_2_1_results_carry_the_driver_authority_and_pass_the_client_checks() {
    let (rig, _held) = rig_with_streams();
    let mut d = discoverer(&rig, 9002);
    let r = ask(
        &mut d,
        Request {
            stream_id: Some(10000),
            ..Request::default()
        },
    );
    let f = &r.results[0];
    assert_eq!(f.check(), Ok(()));
    assert_eq!(
        (
            f.driver_instance_id.as_str(),
            f.driver_control_channel.as_str(),
            f.driver_control_stream_id
        ),
        ("driver-test", "aeron:ipc?term-length=4m", 1000)
    );
    assert_eq!((f.max_dims, f.header_slot_bytes, f.header_nslots), (8, 256, 16));
    assert_eq!(d.dropped, 0);
    // What a client refuses of a result.
    for broken in 0..4 {
        let mut b = f.clone();
        match broken {
            0 => b.header_slot_bytes = 128,
            1 => b.max_dims = 4,
            2 => b.driver_control_stream_id = 0,
            _ => b.driver_instance_id.clear(),
        }
        assert!(b.check().is_err(), "case {broken}");
    }
}

#[test]
fn ds_4_3_1_requests_need_a_channel_and_a_nonzero_stream() {
    let (rig, _held) = rig_with_streams();
    let out = rig.client.publication("aeron:ipc?term-length=4m", 9000).unwrap();
    let mut zero: Subscription = rig
        .client
        .subscription("aeron:ipc?term-length=4m|tether=false", 0)
        .unwrap();
    let bad = Request {
        request_id: 77,
        response_channel: "aeron:ipc?term-length=4m".into(),
        response_stream_id: 0,
        ..Request::default()
    }
    .encode()
    .unwrap();
    let silent = Request {
        request_id: 78,
        response_channel: String::new(),
        response_stream_id: 9003,
        ..Request::default()
    }
    .encode()
    .unwrap();
    let answer = rig::eventually(Duration::from_secs(5), "an ERROR on stream 0", || {
        let _ = out.offer(&silent);
        let _ = out.offer(&bad);
        let mut got = None;
        zero.poll(16, |m| got = got.take().or(Response::decode(m.bytes)))
            .unwrap();
        got
    });
    assert_eq!(answer.request_id, 77);
    assert_eq!(answer.status, Status::Error);
    assert!(answer.results.is_empty(), "numInGroup 0 with ERROR");
    // Still serving.
    let mut d = discoverer(&rig, 9003);
    assert_eq!(ask(&mut d, Request::default()).results.len(), 3);
}

#[test]
fn ds_4_2_1_other_schemas_on_shared_streams_are_gated_out() {
    let (rig, _held) = rig_with_streams();
    let out = rig.client.publication("aeron:ipc?term-length=4m", 9000).unwrap();
    let reply = rig.client.publication("aeron:ipc?term-length=4m", 9004).unwrap();
    let mut d = discoverer(&rig, 9004);
    let request = Request {
        request_id: 5,
        response_channel: "aeron:ipc?term-length=4m".into(),
        response_stream_id: 9004,
        ..Request::default()
    }
    .encode()
    .unwrap();
    // The same bytes relabelled as the wire (900) and driver (901) schemas: not requests; and
    // a "response" of another schema on the reply stream is not taken for one.
    for schema in [900u16, 901] {
        let mut b = request.clone();
        b[4..6].copy_from_slice(&schema.to_le_bytes());
        let _ = out.offer(&b);
        let mut fake = Response {
            request_id: 6,
            status: Status::Ok,
            results: Vec::new(),
            error_message: String::new(),
        }
        .encode()
        .unwrap();
        fake[4..6].copy_from_slice(&schema.to_le_bytes());
        assert!(Response::decode(&fake).is_none());
        let _ = reply.offer(&fake);
    }
    assert_eq!(ask(&mut d, Request::default()).results.len(), 3);
}
