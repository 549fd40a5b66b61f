//! The authority: the process that holds a stream's MergeMaps answers every
//! `SequenceMergeMapRequest` / `TimestampMergeMapRequest` for them, and announces a map when it
//! is set (a new epoch needs a fresh one).

use std::collections::HashMap;

use xmem_aeron::{Client, Publication, Subscription};

use crate::map::{decode_request, SequenceMap, TimestampMap};

/// Answers requests for the maps it holds.
pub struct Authority {
    requests: Subscription,
    announces: Publication,
    sequence: HashMap<(u32, u64), Vec<u8>>,
    timestamp: HashMap<(u32, u64), Vec<u8>>,
    /// Requests answered.
    pub answered: u64,
    /// Requests for maps it does not hold (ignored: another authority may).
    pub unknown: u64,
}

impl Authority {
    /// Requests come on `channel`/`stream_id` (the stream's control stream, by convention) and
    /// announces go there too.
    pub fn new(client: &Client, channel: &str, stream_id: i32) -> Result<Authority, xmem_aeron::Error> {
        Ok(Authority {
            requests: client.subscription(channel, stream_id)?,
            announces: client.publication(channel, stream_id)?,
            sequence: HashMap::new(),
            timestamp: HashMap::new(),
            answered: 0,
            unknown: 0,
        })
    }

    /// Holds `map` and announces it.
    pub fn set_sequence(&mut self, map: &SequenceMap) -> Result<(), xmem_tensorpool::codec::CodecError> {
        let bytes = map.encode()?;
        let _ = self.announces.offer(&bytes);
        self.sequence.insert((map.out_stream_id, map.epoch), bytes);
        Ok(())
    }

    /// Holds `map` and announces it.
    pub fn set_timestamp(&mut self, map: &TimestampMap) -> Result<(), xmem_tensorpool::codec::CodecError> {
        let bytes = map.encode()?;
        let _ = self.announces.offer(&bytes);
        self.timestamp.insert((map.out_stream_id, map.epoch), bytes);
        Ok(())
    }

    /// One duty cycle: requests answered. Returns the work done.
    pub fn poll(&mut self) -> Result<usize, xmem_aeron::Error> {
        let mut asked = Vec::new();
        let n = self
            .requests
            .poll(32, |m| asked.extend(decode_request(m.bytes)))?;
        for (timestamp, out, epoch) in asked {
            let held = if timestamp {
                &self.timestamp
            } else {
                &self.sequence
            };
            match held.get(&(out, epoch)) {
                Some(bytes) => {
                    if self.announces.offer(bytes).is_sent() {
                        self.answered += 1;
                    }
                }
                None => self.unknown += 1,
            }
        }
        Ok(n)
    }
}
