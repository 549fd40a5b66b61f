//! TraceLink (spec v1.0): where a frame came from.
//!
//! A root frame gets a new trace id; a 1→1 stage passes its input's id on; an N→1 stage mints a
//! new id and says which ids it was made from in a `TraceLinkSet` (schema 904). Ids are
//! snowflakes in Agrona's layout, as tensor_pool_c mints them: 1 unused bit, 41 bits of
//! milliseconds since the Unix epoch, 10 bits of node id, 12 bits of sequence.

use xmem_tensorpool::codec::{decode_exact, peek_header, CodecError, Message, TRACE_LINK_SCHEMA_ID};

/// Bits of the node id (0–1023).
pub const NODE_BITS: u32 = 10;
/// Bits of the per-millisecond sequence.
pub const SEQUENCE_BITS: u32 = 12;

/// Mints trace ids: unique per node, rising with time, 4096 a millisecond (more wait for the
/// next millisecond's ids by borrowing from it: the id stays unique and rising).
#[derive(Debug)]
pub struct TraceIds {
    node: u64,
    last_ms: u64,
    sequence: u64,
}

impl TraceIds {
    /// A generator for `node` (taken modulo 1024: driver-assigned node ids are wider).
    pub fn new(node: u32) -> TraceIds {
        TraceIds {
            node: u64::from(node) & ((1 << NODE_BITS) - 1),
            last_ms: 0,
            sequence: 0,
        }
    }

    /// The next id (never 0, which means "not traced").
    pub fn next_id(&mut self) -> u64 {
        let now = crate::realtime_ns() / 1_000_000;
        if now > self.last_ms {
            self.last_ms = now;
            self.sequence = 0;
        } else {
            self.sequence += 1;
            if self.sequence >> SEQUENCE_BITS != 0 {
                self.last_ms += 1;
                self.sequence = 0;
            }
        }
        let ms = self.last_ms & ((1 << 41) - 1);
        (ms << (NODE_BITS + SEQUENCE_BITS)) | (self.node << SEQUENCE_BITS) | self.sequence
    }
}

/// The parts of a snowflake id: (milliseconds, node, sequence).
pub fn parts(id: u64) -> (u64, u64, u64) {
    (
        id >> (NODE_BITS + SEQUENCE_BITS),
        (id >> SEQUENCE_BITS) & ((1 << NODE_BITS) - 1),
        id & ((1 << SEQUENCE_BITS) - 1),
    )
}

/// The id an output frame carries (TL-6.3-1): none without traced inputs, the input's own for a
/// 1→1 stage, a new one for an N→1 stage (whose parents go into a [`TraceLinkSet`]).
pub fn propagate(inputs: &[u64], ids: &mut TraceIds) -> u64 {
    let traced: Vec<u64> = inputs.iter().copied().filter(|&t| t != 0).collect();
    match traced.as_slice() {
        [] if inputs.is_empty() => ids.next_id(),
        [] => 0,
        [one] if inputs.len() == 1 => *one,
        _ => ids.next_id(),
    }
}

/// "Frame `seq` of `stream_id`, traced `trace_id`, was made from `parents`" (schema 904).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceLinkSet {
    /// The output stream.
    pub stream_id: u32,
    /// Its epoch.
    pub epoch: u64,
    /// The output frame.
    pub seq: u64,
    /// The output's trace id.
    pub trace_id: u64,
    /// The inputs' trace ids: at least one, all nonzero, no two alike.
    pub parents: Vec<u64>,
}

impl TraceLinkSet {
    /// Checks the rules of TL-9-1.
    pub fn validate(&self) -> Result<(), CodecError> {
        if self.trace_id == 0 {
            return Err(CodecError::Shape("a TraceLinkSet's traceId is nonzero".into()));
        }
        if self.parents.is_empty() {
            return Err(CodecError::Shape("a TraceLinkSet has at least one parent".into()));
        }
        for (i, p) in self.parents.iter().enumerate() {
            if *p == 0 {
                return Err(CodecError::Shape("a TraceLinkSet's parents are nonzero".into()));
            }
            if self.parents[..i].contains(p) {
                return Err(CodecError::Shape(format!("parent {p} is listed twice")));
            }
        }
        Ok(())
    }

    /// Encodes it, refusing what breaks the rules.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        self.validate()?;
        let mut m =
            Message::new("trace-link", "TraceLinkSet").expect("the trace-link schema has TraceLinkSet");
        m.set("streamId", self.stream_id)?;
        m.set("epoch", self.epoch)?;
        m.set("seq", self.seq)?;
        m.set("traceId", self.trace_id)?;
        for p in &self.parents {
            let e = m.push_entry("parents")?;
            e.fields[0] = xmem_tensorpool::codec::Value::Int(i128::from(*p));
        }
        m.encode()
    }

    /// Decodes one; `Ok(None)` for another schema's message (shared streams), an error for one
    /// of schema 904 that breaks the rules.
    pub fn decode(bytes: &[u8]) -> Result<Option<TraceLinkSet>, CodecError> {
        if peek_header(bytes)?.schema_id != TRACE_LINK_SCHEMA_ID {
            return Ok(None);
        }
        let m = decode_exact(bytes)?;
        let int = |f: &str| m.int(f).unwrap_or(0) as u64;
        let set = TraceLinkSet {
            stream_id: int("streamId") as u32,
            epoch: int("epoch"),
            seq: int("seq"),
            trace_id: int("traceId"),
            parents: m
                .group("parents")
                .unwrap_or_default()
                .iter()
                .map(|e| e.fields.first().and_then(|v| v.as_int()).unwrap_or(0) as u64)
                .collect(),
        };
        set.validate()?;
        Ok(Some(set))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TL-6.1-1: 64-bit snowflakes, Agrona's layout, unique and rising, the node in its bits.
    #[test]
    fn tl_6_1_1_trace_ids_are_snowflakes() {
        let mut ids = TraceIds::new(1000 + 1024);
        let mut last = 0;
        for _ in 0..20_000 {
            let id = ids.next_id();
            assert!(id > last, "rising and unique");
            assert_eq!(id >> 63, 0, "the top bit is unused");
            let (ms, node, _) = parts(id);
            assert_eq!(node, 1000);
            let now_ms = crate::realtime_ns() / 1_000_000;
            assert!(
                ms <= now_ms + 10 && ms + 60_000 > now_ms,
                "milliseconds of now: {ms} vs {now_ms}"
            );
            last = id;
        }
    }

    /// TL-6.3-1: root mints, 1→1 passes on, N→1 mints anew; untraced inputs stay untraced.
    #[test]
    fn tl_6_3_1_propagation() {
        let mut ids = TraceIds::new(3);
        let root = propagate(&[], &mut ids);
        assert_ne!(root, 0);
        assert_eq!(propagate(&[root], &mut ids), root);
        let other = ids.next_id();
        let merged = propagate(&[root, other], &mut ids);
        assert!(merged != root && merged != other && merged != 0);
        assert_eq!(propagate(&[0], &mut ids), 0);
    }

    /// TL-9-1: at least one parent, all nonzero and unique; gated on schema 904.
    #[test]
    fn tl_9_1_trace_link_sets_are_checked_and_gated() {
        let set = TraceLinkSet {
            stream_id: 5,
            epoch: 6,
            seq: 7,
            trace_id: 8,
            parents: vec![1, 2],
        };
        let bytes = set.encode().unwrap();
        assert_eq!(TraceLinkSet::decode(&bytes).unwrap(), Some(set.clone()));
        for parents in [vec![], vec![0, 1], vec![3, 3]] {
            let bad = TraceLinkSet {
                parents,
                ..set.clone()
            };
            assert!(bad.encode().is_err(), "{bad:?}");
        }
        let other = xmem_tensorpool::codec::FrameDescriptor::default().encode();
        assert_eq!(
            TraceLinkSet::decode(&other).unwrap(),
            None,
            "another schema's message is not ours"
        );
        // A 904 message with a duplicate parent, written by hand, is refused on receipt.
        let mut m = Message::new("trace-link", "TraceLinkSet").unwrap();
        m.set("traceId", 9).unwrap();
        for _ in 0..2 {
            m.push_entry("parents").unwrap().fields[0] = xmem_tensorpool::codec::Value::Int(4);
        }
        assert!(TraceLinkSet::decode(&m.encode().unwrap()).is_err());
    }
}
