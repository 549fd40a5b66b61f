//! A hostile control stream: requests mutated byte by byte and plain garbage, sent to a real
//! driver process; afterwards it must still be alive and serve an honest client.

mod rig;

use std::time::Duration;

use proptest::prelude::*;
use rig::Rig;
use xmem_tp_driver::protocol::{
    AttachRequest, DetachRequest, Keepalive, RevokeRequest, ShutdownReason, ShutdownRequest,
};
use xmem_tp_driver::Role;

fn valid_requests() -> Vec<Vec<u8>> {
    vec![
        AttachRequest::new(1, 10000, 5, Role::Producer).encode(),
        AttachRequest::new(2, 0, 6, Role::Consumer).encode(),
        DetachRequest {
            correlation_id: 3,
            lease_id: 1,
            stream_id: 10000,
            client_id: 5,
            role: 1,
        }
        .encode(),
        Keepalive {
            lease_id: 1,
            stream_id: 10000,
            client_id: 5,
            role: 1,
            client_timestamp_ns: 0,
        }
        .encode(),
        ShutdownRequest {
            correlation_id: 4,
            reason: ShutdownReason::Admin,
            token: "guess".into(),
            message: String::new(),
        }
        .encode()
        .unwrap(),
        RevokeRequest {
            correlation_id: 5,
            lease_id: 1,
            token: "guess".into(),
            message: "hostile".into(),
        }
        .encode(),
    ]
}

/// One hostile message: a valid request with some bytes overwritten, truncated or extended, or
/// random bytes.
fn hostile() -> impl Strategy<Value = Vec<u8>> {
    let mutated = (
        0..6usize,
        proptest::collection::vec((0..64usize, any::<u8>()), 1..6),
        0..3u8,
        any::<u8>(),
    )
        .prop_map(|(which, edits, tail, fill)| {
            let mut b = valid_requests()[which].clone();
            for (at, v) in edits {
                let i = at % b.len();
                b[i] = v;
            }
            match tail {
                0 => b.truncate(b.len().saturating_sub(fill as usize % 8)),
                1 => b.extend(std::iter::repeat_n(fill, fill as usize % 16)),
                _ => {}
            }
            b
        });
    prop_oneof![mutated, proptest::collection::vec(any::<u8>(), 0..96)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]
    #[test]
    fn hostile_requests_leave_the_driver_serving(messages in proptest::collection::vec(hostile(), 1..200)) {
        let mut rig = Rig::new("");
        let out = rig.client.publication("aeron:ipc?term-length=4m", 1000).unwrap();
        rig::eventually(Duration::from_secs(5), "connected", || out.is_connected().then_some(()));
        for m in &messages {
            if m.is_empty() {
                continue;
            }
            rig::eventually(Duration::from_secs(2), "offer", || out.offer(m).is_sent().then_some(()));
        }
        let mut honest = rig.driver_client();
        let attached = honest.attach(10000, Role::Consumer, 0);
        prop_assert!(attached.is_ok(), "{:?}", attached.err());
        honest.detach().unwrap();
        drop(honest);
        let alive = rig.driver.as_mut().unwrap().child.try_wait().unwrap().is_none();
        prop_assert!(alive, "the driver died");
        prop_assert!(rig.stop_driver().success());
    }
}
