//! MergeMaps (join-barrier schema 903): what an output frame of `out_stream` in `epoch` needs of
//! each input. Each rule has exactly one parameter, matching its type (JB-6-1); a map that breaks
//! this is refused when built or decoded.

use xmem_tensorpool::codec::{decode_exact, peek_header, CodecError, Message, Value, JOIN_BARRIER_SCHEMA_ID};

/// Why a MergeMap is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// A rule whose parameters do not pair with its type (both, neither, or the other's).
    #[error("rule for input {input}: {why}")]
    Rule {
        /// The input stream.
        input: u32,
        /// What is wrong.
        why: &'static str,
    },
    /// No rule at all, or more than [`MAX_INPUTS`].
    #[error("a merge map has 1 to {MAX_INPUTS} rules, not {0}")]
    Rules(usize),
    /// The bytes are no MergeMap announce.
    #[error("not a merge map: {0}")]
    Codec(String),
}

/// Most inputs one barrier joins (its state is preallocated to this).
pub const MAX_INPUTS: usize = 64;

/// A sequence rule (`ruleType` OFFSET or WINDOW).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqRule {
    /// in = out + offset.
    Offset(i32),
    /// in ∈ [out − n + 1, out]; ready on the upper bound.
    Window(u32),
}

/// `SequenceMergeMapAnnounce`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceMap {
    /// The output stream.
    pub out_stream_id: u32,
    /// The epoch it is scoped to (a new epoch needs a fresh map).
    pub epoch: u64,
    /// An input silent this long counts as absent (`None`: never).
    pub stale_timeout_ns: Option<u64>,
    /// `(input stream, rule)`.
    pub rules: Vec<(u32, SeqRule)>,
}

/// `TimestampSource`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampSource {
    /// The descriptor's `timestampNs` (publish time).
    FrameDescriptor,
    /// The slot's `timestampNs` (capture time).
    SlotHeader,
}

/// A time rule (`ruleType` OFFSET_NS or WINDOW_NS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeRule {
    /// in_time = out_time + offset.
    OffsetNs(i64),
    /// in_time ∈ [out_time − w, out_time]; ready on the upper bound.
    WindowNs(u64),
}

/// `TimestampMergeMapAnnounce`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampMap {
    /// The output stream.
    pub out_stream_id: u32,
    /// The epoch.
    pub epoch: u64,
    /// An input silent this long counts as absent.
    pub stale_timeout_ns: Option<u64>,
    /// One clock domain for every input (1 MONOTONIC, 2 REALTIME_SYNCED).
    pub clock_domain: u8,
    /// How late an input may be (default 0).
    pub lateness_ns: Option<u64>,
    /// `(input stream, where its time comes from, rule)`.
    pub rules: Vec<(u32, TimestampSource, TimeRule)>,
}

fn jb(name: &str) -> Message {
    Message::new("join-barrier", name).expect("the join-barrier schema has its messages")
}

fn opt<T: Into<i128>>(v: Option<T>) -> Value {
    v.map_or(Value::Null, |v| Value::Int(v.into()))
}

fn check_count(n: usize) -> Result<(), MapError> {
    if n == 0 || n > MAX_INPUTS {
        return Err(MapError::Rules(n));
    }
    Ok(())
}

/// The rule of one wire entry (JB-6-1): exactly one parameter, the one its type names.
fn seq_rule(input: u32, kind: i128, offset: Option<i128>, window: Option<i128>) -> Result<SeqRule, MapError> {
    let bad = |why| MapError::Rule { input, why };
    match (kind, offset, window) {
        (0, Some(o), None) => Ok(SeqRule::Offset(o as i32)),
        (1, None, Some(w)) if w > 0 => Ok(SeqRule::Window(w as u32)),
        (1, None, Some(_)) => Err(bad("a window of 0")),
        (_, Some(_), Some(_)) => Err(bad("both offset and windowSize are set")),
        (_, None, None) => Err(bad("neither offset nor windowSize is set")),
        _ => Err(bad("the parameter set is not the one its ruleType names")),
    }
}

fn time_rule(
    input: u32,
    kind: i128,
    offset: Option<i128>,
    window: Option<i128>,
) -> Result<TimeRule, MapError> {
    let bad = |why| MapError::Rule { input, why };
    match (kind, offset, window) {
        (0, Some(o), None) => Ok(TimeRule::OffsetNs(o as i64)),
        (1, None, Some(w)) => Ok(TimeRule::WindowNs(w as u64)),
        (_, Some(_), Some(_)) => Err(bad("both offsetNs and windowNs are set")),
        (_, None, None) => Err(bad("neither offsetNs nor windowNs is set")),
        _ => Err(bad("the parameter set is not the one its ruleType names")),
    }
}

impl SequenceMap {
    /// A map, checked.
    pub fn new(
        out_stream_id: u32,
        epoch: u64,
        stale_timeout_ns: Option<u64>,
        rules: Vec<(u32, SeqRule)>,
    ) -> Result<SequenceMap, MapError> {
        check_count(rules.len())?;
        for &(input, r) in &rules {
            if r == SeqRule::Window(0) {
                return Err(MapError::Rule {
                    input,
                    why: "a window of 0",
                });
            }
        }
        Ok(SequenceMap {
            out_stream_id,
            epoch,
            stale_timeout_ns,
            rules,
        })
    }

    /// Encodes it.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut m = jb("SequenceMergeMapAnnounce");
        m.set("outStreamId", self.out_stream_id)?;
        m.set("epoch", self.epoch)?;
        match self.stale_timeout_ns {
            Some(t) => m.set("staleTimeoutNs", t)?,
            None => m.set_null("staleTimeoutNs")?,
        };
        for &(input, r) in &self.rules {
            let e = m.push_entry("rules")?;
            let (kind, offset, window) = match r {
                SeqRule::Offset(o) => (0, Some(o), None),
                SeqRule::Window(w) => (1, None, Some(w)),
            };
            e.fields = vec![
                Value::Int(input.into()),
                Value::Int(kind.into()),
                opt(offset),
                opt(window),
            ];
        }
        m.encode()
    }

    /// Decodes one, with the rule checks.
    pub fn decode(bytes: &[u8]) -> Result<SequenceMap, MapError> {
        let m = decode(bytes, 1)?;
        let rules = m
            .group("rules")
            .unwrap_or_default()
            .iter()
            .map(|e| {
                let f = |i: usize| e.fields.get(i).and_then(Value::as_int);
                let input = f(0).unwrap_or(0) as u32;
                seq_rule(input, f(1).unwrap_or(-1), f(2), f(3)).map(|r| (input, r))
            })
            .collect::<Result<Vec<_>, _>>()?;
        SequenceMap::new(
            m.int("outStreamId").unwrap_or(0) as u32,
            m.int("epoch").unwrap_or(0) as u64,
            m.int("staleTimeoutNs").map(|v| v as u64),
            rules,
        )
    }
}

impl TimestampMap {
    /// A map, checked (clock domain 1 or 2).
    pub fn new(
        out_stream_id: u32,
        epoch: u64,
        stale_timeout_ns: Option<u64>,
        clock_domain: u8,
        lateness_ns: Option<u64>,
        rules: Vec<(u32, TimestampSource, TimeRule)>,
    ) -> Result<TimestampMap, MapError> {
        check_count(rules.len())?;
        if !matches!(clock_domain, 1 | 2) {
            return Err(MapError::Codec(format!("clock domain {clock_domain}")));
        }
        Ok(TimestampMap {
            out_stream_id,
            epoch,
            stale_timeout_ns,
            clock_domain,
            lateness_ns,
            rules,
        })
    }

    /// Encodes it.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut m = jb("TimestampMergeMapAnnounce");
        m.set("outStreamId", self.out_stream_id)?;
        m.set("epoch", self.epoch)?;
        match self.stale_timeout_ns {
            Some(t) => m.set("staleTimeoutNs", t)?,
            None => m.set_null("staleTimeoutNs")?,
        };
        m.set("clockDomain", self.clock_domain)?;
        match self.lateness_ns {
            Some(t) => m.set("latenessNs", t)?,
            None => m.set_null("latenessNs")?,
        };
        for &(input, source, r) in &self.rules {
            let e = m.push_entry("rules")?;
            let (kind, offset, window) = match r {
                TimeRule::OffsetNs(o) => (0, Some(o), None),
                TimeRule::WindowNs(w) => (1, None, Some(w)),
            };
            let source = match source {
                TimestampSource::FrameDescriptor => 1,
                TimestampSource::SlotHeader => 2,
            };
            e.fields = vec![
                Value::Int(input.into()),
                Value::Int(kind.into()),
                Value::Int(source.into()),
                opt(offset),
                opt(window),
            ];
        }
        m.encode()
    }

    /// Decodes one, with the rule checks.
    pub fn decode(bytes: &[u8]) -> Result<TimestampMap, MapError> {
        let m = decode(bytes, 3)?;
        let rules = m
            .group("rules")
            .unwrap_or_default()
            .iter()
            .map(|e| {
                let f = |i: usize| e.fields.get(i).and_then(Value::as_int);
                let input = f(0).unwrap_or(0) as u32;
                let source = match f(2) {
                    Some(1) => TimestampSource::FrameDescriptor,
                    Some(2) => TimestampSource::SlotHeader,
                    _ => {
                        return Err(MapError::Rule {
                            input,
                            why: "no timestamp source",
                        })
                    }
                };
                time_rule(input, f(1).unwrap_or(-1), f(3), f(4)).map(|r| (input, source, r))
            })
            .collect::<Result<Vec<_>, _>>()?;
        TimestampMap::new(
            m.int("outStreamId").unwrap_or(0) as u32,
            m.int("epoch").unwrap_or(0) as u64,
            m.int("staleTimeoutNs").map(|v| v as u64),
            m.int("clockDomain").unwrap_or(0) as u8,
            m.int("latenessNs").map(|v| v as u64),
            rules,
        )
    }
}

fn decode(bytes: &[u8], template: u16) -> Result<Message, MapError> {
    let h = peek_header(bytes).map_err(|e| MapError::Codec(e.to_string()))?;
    if h.schema_id != JOIN_BARRIER_SCHEMA_ID || h.template_id != template {
        return Err(MapError::Codec(format!(
            "schema {} template {}",
            h.schema_id, h.template_id
        )));
    }
    decode_exact(bytes).map_err(|e| MapError::Codec(e.to_string()))
}

/// A `*MergeMapRequest` (templates 2 and 4): `(is_timestamp, out_stream_id, epoch)`.
pub fn decode_request(bytes: &[u8]) -> Option<(bool, u32, u64)> {
    let h = peek_header(bytes).ok()?;
    if h.schema_id != JOIN_BARRIER_SCHEMA_ID || !matches!(h.template_id, 2 | 4) {
        return None;
    }
    let m = decode_exact(bytes).ok()?;
    Some((
        h.template_id == 4,
        m.int("outStreamId")? as u32,
        m.int("epoch")? as u64,
    ))
}

/// Encodes a `*MergeMapRequest`.
pub fn encode_request(timestamp: bool, out_stream_id: u32, epoch: u64) -> Result<Vec<u8>, CodecError> {
    let mut m = jb(if timestamp {
        "TimestampMergeMapRequest"
    } else {
        "SequenceMergeMapRequest"
    });
    m.set("outStreamId", out_stream_id)?;
    m.set("epoch", epoch)?;
    m.encode()
}
