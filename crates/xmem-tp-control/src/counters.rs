//! A producer's, a consumer's and a bridge end's counters in the media driver's counters file,
//! where any process can read them (`xmem tp stat`, Aeron's own AeronStat), refreshed every
//! announce period. Observability only: a counter that cannot be added is warned about and
//! left out.

use xmem_aeron::{Client, Counter, CounterValue};

/// Aeron counter type id of every xmem tensor-pool counter (Aeron's own types are below 1000).
pub const COUNTER_TYPE: i32 = 9_100;

const MAGIC: &[u8; 8] = b"xmem-tp\0";

/// Whose counter it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner {
    /// `producer`, `consumer`, `bridge-sender` or `bridge-receiver`.
    pub role: &'static str,
    /// The stream.
    pub stream_id: u32,
    /// The producer id or consumer id.
    pub id: u32,
    /// The process.
    pub pid: u32,
}

/// The roles, by their code in a counter's key.
const ROLES: [&str; 4] = ["producer", "consumer", "bridge-sender", "bridge-receiver"];

/// The counters of one producer, consumer or bridge end.
pub struct Counters(Vec<Counter>);

impl Counters {
    /// Adds one counter per name; `None` (with a warning) if the driver refuses one.
    pub fn add(client: &Client, owner: &Owner, names: &[&str]) -> Option<Counters> {
        let role = ROLES.iter().position(|r| *r == owner.role).unwrap_or(0) as u8;
        let specs: Vec<(Vec<u8>, String)> = names
            .iter()
            .map(|name| {
                let mut key = MAGIC.to_vec();
                key.push(role);
                key.extend_from_slice(&owner.stream_id.to_le_bytes());
                key.extend_from_slice(&owner.id.to_le_bytes());
                key.extend_from_slice(&owner.pid.to_le_bytes());
                key.extend_from_slice(name.as_bytes());
                let label = format!(
                    "xmem tp {} stream {} id {} pid {}: {name}",
                    owner.role, owner.stream_id, owner.id, owner.pid
                );
                (key, label)
            })
            .collect();
        match client.counters(COUNTER_TYPE, &specs) {
            Ok(c) => Some(Counters(c)),
            Err(e) => {
                tracing::warn!("tensor-pool counters left out: {e}");
                None
            }
        }
    }

    /// Sets them, in the order of their names.
    pub fn set(&self, values: &[u64]) {
        for (c, v) in self.0.iter().zip(values) {
            c.set(*v);
        }
    }
}

/// An xmem tensor-pool counter read from a counters file: its owner, name and value. `None` for
/// any other counter (or a key that is not one of ours: nothing read there is trusted).
pub fn parse(c: &CounterValue) -> Option<(Owner, String, i64)> {
    if c.type_id != COUNTER_TYPE || c.key.len() < 21 || &c.key[..8] != MAGIC {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes(c.key[i..i + 4].try_into().expect("4 bytes"));
    let role = *ROLES.get(usize::from(c.key[8]))?;
    // The key buffer is fixed-length in the counters file: the name is followed by zeros.
    let name = std::str::from_utf8(&c.key[21..])
        .ok()?
        .trim_end_matches('\0')
        .to_string();
    Some((
        Owner {
            role,
            stream_id: u32_at(9),
            id: u32_at(13),
            pid: u32_at(17),
        },
        name,
        c.value,
    ))
}
