//! The barriers: given what each input has shown (its newest sequence number or timestamp),
//! whether an output frame may be made now. They never wait (a caller asks again later) and
//! allocate nothing after construction: their state is one fixed array sized to the map
//! (JB-5-1). Nothing here reads shared memory: the caller feeds what its consumers accepted.

use crate::map::{SeqRule, SequenceMap, TimeRule, TimestampMap, MAX_INPUTS};

/// The answer for one output frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Every input (not stale) has what the output needs.
    Ready {
        /// Inputs left out as stale (bit i: rule i).
        stale: u64,
    },
    /// Not yet: the first rule (by index) still waiting.
    Waiting {
        /// That rule's index.
        rule: usize,
    },
    /// Never for this output: it is out of the rules' range (an OFFSET below 0, a WINDOW not
    /// yet full), or out of order.
    NotApplicable,
}

impl Readiness {
    /// Whether the output may be made.
    pub fn is_ready(self) -> bool {
        matches!(self, Readiness::Ready { .. })
    }
}

/// Why an observation was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ObserveError {
    /// Of a stream no rule names.
    #[error("input stream {0} is in no rule")]
    UnknownInput(u32),
    /// Of another epoch than the map's (a new epoch needs a fresh map).
    #[error("epoch {got}, the map is for {want}")]
    Epoch {
        /// The observation's.
        got: u64,
        /// The map's.
        want: u64,
    },
    /// A clock domain other than the map's.
    #[error("clock domain {0} is not the map's")]
    ClockDomain(u8),
    /// A timestamp before the input's previous one (timestamps must be monotonic).
    #[error("timestamp went backwards")]
    NotMonotonic,
}

#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    /// Newest value observed (sequence or time), if any in this epoch.
    value: Option<u64>,
    /// When (the caller's clock), for staleness.
    at_ns: u64,
}

/// A sequence barrier for one map.
#[derive(Debug)]
pub struct SequenceBarrier {
    map: SequenceMap,
    seen: [Seen; MAX_INPUTS],
    processed: Option<[Option<u64>; MAX_INPUTS]>,
}

fn index_of<T>(rules: &[(u32, T)], input: u32) -> Option<usize> {
    rules.iter().position(|(s, _)| *s == input)
}

impl SequenceBarrier {
    /// A barrier for `map`; with `track_processed`, readiness also needs each input's processed
    /// cursor (as the spec's optional `processed_cursor`).
    pub fn new(map: SequenceMap, track_processed: bool) -> SequenceBarrier {
        SequenceBarrier {
            map,
            seen: [Seen::default(); MAX_INPUTS],
            processed: track_processed.then_some([None; MAX_INPUTS]),
        }
    }

    /// The map.
    pub fn map(&self) -> &SequenceMap {
        &self.map
    }

    /// Input `input` of `epoch` has shown frame `seq` at `now_ns`.
    pub fn observe(&mut self, input: u32, epoch: u64, seq: u64, now_ns: u64) -> Result<(), ObserveError> {
        if epoch != self.map.epoch {
            return Err(ObserveError::Epoch {
                got: epoch,
                want: self.map.epoch,
            });
        }
        let i = index_of(&self.map.rules, input).ok_or(ObserveError::UnknownInput(input))?;
        let s = &mut self.seen[i];
        s.value = Some(s.value.map_or(seq, |v| v.max(seq)));
        s.at_ns = now_ns;
        Ok(())
    }

    /// Input `input` has processed up to `seq` (only with `track_processed`).
    pub fn processed(&mut self, input: u32, seq: u64) -> Result<(), ObserveError> {
        let i = index_of(&self.map.rules, input).ok_or(ObserveError::UnknownInput(input))?;
        if let Some(p) = &mut self.processed {
            p[i] = Some(p[i].map_or(seq, |v| v.max(seq)));
        }
        Ok(())
    }

    /// Whether output frame `out` may be made now (JB-7-1).
    pub fn ready(&self, out: u64, now_ns: u64) -> Readiness {
        // An OFFSET rule needs in = out + offset (none below 0); a WINDOW of n the range
        // [out − n + 1, out], ready on its upper bound (none while out + 1 < n).
        let required = |rule: SeqRule| match rule {
            SeqRule::Offset(o) => u64::try_from(i128::from(out) + i128::from(o)).ok(),
            SeqRule::Window(n) => (out + 1 >= u64::from(n)).then_some(out),
        };
        if self.map.rules.iter().any(|&(_, r)| required(r).is_none()) {
            return Readiness::NotApplicable;
        }
        let mut stale = 0u64;
        for (i, &(_, rule)) in self.map.rules.iter().enumerate() {
            let required = required(rule).expect("checked above");
            let s = self.seen[i];
            if let Some(timeout) = self.map.stale_timeout_ns {
                if s.value.is_some() && now_ns.saturating_sub(s.at_ns) > timeout {
                    stale |= 1 << i;
                    continue;
                }
            }
            let observed_ok = s.value.is_some_and(|v| v >= required);
            let processed_ok = self
                .processed
                .as_ref()
                .is_none_or(|p| p[i].is_some_and(|v| v >= required));
            if !(observed_ok && processed_ok) {
                return Readiness::Waiting { rule: i };
            }
        }
        Readiness::Ready { stale }
    }
}

/// A timestamp barrier for one map.
#[derive(Debug)]
pub struct TimestampBarrier {
    map: TimestampMap,
    seen: [Seen; MAX_INPUTS],
    last_out: Option<u64>,
}

impl TimestampBarrier {
    /// A barrier for `map`.
    pub fn new(map: TimestampMap) -> TimestampBarrier {
        TimestampBarrier {
            map,
            seen: [Seen::default(); MAX_INPUTS],
            last_out: None,
        }
    }

    /// Input `input` of `epoch` has shown a frame stamped `timestamp_ns` (`None`: the frame had
    /// no time stamp of the rule's source, which is never ready) in `clock_domain`, at `now_ns`.
    pub fn observe(
        &mut self,
        input: u32,
        epoch: u64,
        clock_domain: u8,
        timestamp_ns: Option<u64>,
        now_ns: u64,
    ) -> Result<(), ObserveError> {
        if epoch != self.map.epoch {
            return Err(ObserveError::Epoch {
                got: epoch,
                want: self.map.epoch,
            });
        }
        if clock_domain != self.map.clock_domain {
            return Err(ObserveError::ClockDomain(clock_domain));
        }
        let i = self
            .map
            .rules
            .iter()
            .position(|(s, _, _)| *s == input)
            .ok_or(ObserveError::UnknownInput(input))?;
        let Some(t) = timestamp_ns else { return Ok(()) };
        let s = &mut self.seen[i];
        if s.value.is_some_and(|v| t < v) {
            return Err(ObserveError::NotMonotonic);
        }
        s.value = Some(t);
        s.at_ns = now_ns;
        Ok(())
    }

    /// Whether an output stamped `out_time_ns` may be made now (JB-8-1). Output times must not
    /// go backwards: an earlier one than the last asked is [`Readiness::NotApplicable`].
    pub fn ready(&mut self, out_time_ns: u64, now_ns: u64) -> Readiness {
        if self.last_out.is_some_and(|t| out_time_ns < t) {
            return Readiness::NotApplicable;
        }
        self.last_out = Some(out_time_ns);
        let lateness = i128::from(self.map.lateness_ns.unwrap_or(0));
        let mut stale = 0u64;
        for (i, &(_, _, rule)) in self.map.rules.iter().enumerate() {
            let required = match rule {
                TimeRule::OffsetNs(o) => i128::from(out_time_ns) + i128::from(o),
                TimeRule::WindowNs(_) => i128::from(out_time_ns),
            };
            let s = self.seen[i];
            if let Some(timeout) = self.map.stale_timeout_ns {
                if s.value.is_some() && now_ns.saturating_sub(s.at_ns) > timeout {
                    stale |= 1 << i;
                    continue;
                }
            }
            if s.value.is_none_or(|v| i128::from(v) < required - lateness) {
                return Readiness::Waiting { rule: i };
            }
        }
        Readiness::Ready { stale }
    }
}

/// LatestValue (JB-9-1): ready once every input has one observation in this epoch; an input
/// whose latest value was overwritten before it was read counts as absent until it shows one.
#[derive(Debug)]
pub struct LatestValue {
    inputs: [u32; MAX_INPUTS],
    latest: [Option<u64>; MAX_INPUTS],
    n: usize,
    epoch: u64,
}

impl LatestValue {
    /// Over `inputs` (at most [`MAX_INPUTS`]), in `epoch`.
    pub fn new(inputs: &[u32], epoch: u64) -> LatestValue {
        let mut a = [0u32; MAX_INPUTS];
        let n = inputs.len().min(MAX_INPUTS);
        a[..n].copy_from_slice(&inputs[..n]);
        LatestValue {
            inputs: a,
            latest: [None; MAX_INPUTS],
            n,
            epoch,
        }
    }

    fn index(&self, input: u32) -> Result<usize, ObserveError> {
        self.inputs[..self.n]
            .iter()
            .position(|s| *s == input)
            .ok_or(ObserveError::UnknownInput(input))
    }

    /// A new epoch: every input absent again.
    pub fn new_epoch(&mut self, epoch: u64) {
        self.epoch = epoch;
        self.latest = [None; MAX_INPUTS];
    }

    /// Input `input` of `epoch` shows frame `seq` (another epoch's is refused).
    pub fn observe(&mut self, input: u32, epoch: u64, seq: u64) -> Result<(), ObserveError> {
        if epoch != self.epoch {
            return Err(ObserveError::Epoch {
                got: epoch,
                want: self.epoch,
            });
        }
        let i = self.index(input)?;
        self.latest[i] = Some(seq);
        Ok(())
    }

    /// Its latest value was overwritten before it was read: absent.
    pub fn overwritten(&mut self, input: u32) -> Result<(), ObserveError> {
        let i = self.index(input)?;
        self.latest[i] = None;
        Ok(())
    }

    /// The latest value of each input, in the order given, once every one has one.
    pub fn select(&self) -> Option<&[Option<u64>]> {
        self.latest[..self.n]
            .iter()
            .all(Option::is_some)
            .then(|| &self.latest[..self.n])
    }
}
