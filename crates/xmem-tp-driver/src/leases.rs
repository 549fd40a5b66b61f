//! The driver's leases in the media driver's counters file, one counter each, so that any
//! process can list them (`xmem tp leases`, Aeron's AeronStat): the key says whose lease it is,
//! the value is the milliseconds left before it expires (refreshed every announce period).

use std::time::Duration;

use xmem_aeron::{Client, Counter, CounterValue};

use crate::protocol::Role;

/// Aeron counter type id of a tensor-pool lease (beside xmem-tp-control's 9100).
pub const LEASE_COUNTER_TYPE: i32 = 9_101;

const MAGIC: &[u8; 8] = b"xmem-tpl";

/// What a lease counter names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LeaseInfo {
    /// The lease.
    pub lease_id: u64,
    /// Its stream.
    pub stream_id: u32,
    /// Its client.
    pub client_id: u32,
    /// Its role.
    pub role: Role,
    /// Its node id.
    pub node_id: u32,
    /// The driver that granted it.
    pub driver_pid: u32,
}

impl PartialOrd for Role {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Role {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.wire().cmp(&other.wire())
    }
}

/// One lease's counter (removed from the file when dropped, with the lease), shared by the
/// clones of its lease.
#[derive(Clone)]
pub(crate) struct LeaseCounter(std::rc::Rc<Counter>);

impl std::fmt::Debug for LeaseCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LeaseCounter")
    }
}

/// A lease counter on its way (the add is a round trip through Aeron's conductors, tens of
/// milliseconds: the driver polls it in its duty cycle instead of holding up the response).
pub(crate) struct PendingLeaseCounter(xmem_aeron::PendingCounter);

impl PendingLeaseCounter {
    /// Starts adding it; `None` (with a warning) when the media driver refuses.
    pub(crate) fn start(client: &Client, l: &LeaseInfo) -> Option<PendingLeaseCounter> {
        let mut key = MAGIC.to_vec();
        key.extend_from_slice(&l.lease_id.to_le_bytes());
        key.extend_from_slice(&l.stream_id.to_le_bytes());
        key.extend_from_slice(&l.client_id.to_le_bytes());
        key.push(l.role.wire());
        key.extend_from_slice(&l.node_id.to_le_bytes());
        key.extend_from_slice(&l.driver_pid.to_le_bytes());
        let label = format!(
            "xmem tp lease {} stream {} client {} {} node {} driver pid {}: ms left",
            l.lease_id,
            l.stream_id,
            l.client_id,
            l.role.name(),
            l.node_id,
            l.driver_pid
        );
        match client.counter_async(LEASE_COUNTER_TYPE, &key, &label) {
            Ok(p) => Some(PendingLeaseCounter(p)),
            Err(e) => {
                tracing::warn!("lease counter left out: {e}");
                None
            }
        }
    }

    /// The counter once added; `Err(())` when the add failed (left out, warned).
    pub(crate) fn poll(&self) -> Result<Option<LeaseCounter>, ()> {
        match self.0.poll() {
            Ok(c) => Ok(c.map(|c| LeaseCounter(std::rc::Rc::new(c)))),
            Err(e) => {
                tracing::warn!("lease counter left out: {e}");
                Err(())
            }
        }
    }
}

impl LeaseCounter {
    pub(crate) fn set_remaining(&self, left: Duration) {
        self.0.set(left.as_millis() as u64);
    }
}

/// A lease read from a counters file, with the milliseconds it had left at the last refresh.
/// `None` for any other counter (nothing read there is trusted).
pub fn parse(c: &CounterValue) -> Option<(LeaseInfo, i64)> {
    if c.type_id != LEASE_COUNTER_TYPE || c.key.len() < 33 || &c.key[..8] != MAGIC {
        return None;
    }
    let k = &c.key;
    let u32_at = |i: usize| u32::from_le_bytes(k[i..i + 4].try_into().expect("4 bytes"));
    Some((
        LeaseInfo {
            lease_id: u64::from_le_bytes(k[8..16].try_into().expect("8 bytes")),
            stream_id: u32_at(16),
            client_id: u32_at(20),
            role: Role::from_wire(k[24])?,
            node_id: u32_at(25),
            driver_pid: u32_at(29),
        },
        c.value,
    ))
}
