//! The supervisor's policy: a `ConsumerHello` in, a `ConsumerConfig` out (W-10.5-1).
//!
//! tensor_pool_c's supervisor gives consumer `c` the stream `base + c % range`, so two consumers
//! whose ids are congruent share one (aeron.md §2.2 item 9); here each grant is checked against
//! the others and a taken id is replaced by the lowest free one of the range.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use crate::messages::{ConsumerConfig, ConsumerHello, Mode, StreamRequest};

/// How a supervisor answers.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Grant the per-consumer streams consumers ask for (else every consumer stays on the
    /// shared descriptor stream).
    pub per_consumer: bool,
    /// Stream ids of per-consumer descriptor streams.
    pub descriptor_ids: RangeInclusive<u32>,
    /// Stream ids of per-consumer control streams.
    pub control_ids: RangeInclusive<u32>,
    /// Where consumers that cannot map shared memory (`supportsShm = 0`) get payloads; with
    /// `fallback_all`, every consumer is sent there.
    pub fallback_uri: Option<String>,
    /// Send every consumer to `fallback_uri`.
    pub fallback_all: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            per_consumer: true,
            descriptor_ids: 31000..=31999,
            control_ids: 32000..=32999,
            fallback_uri: None,
            fallback_all: false,
        }
    }
}

#[derive(Debug, Clone)]
struct Grant {
    config: ConsumerConfig,
    seen: Instant,
}

/// Answers hellos and remembers what it granted, so that a repeated hello gets the same answer
/// and no two consumers share a stream.
#[derive(Debug, Default)]
pub struct Supervisor {
    policy: Policy,
    grants: HashMap<(u32, u32), Grant>,
}

impl Supervisor {
    /// A supervisor with `policy`.
    pub fn new(policy: Policy) -> Supervisor {
        Supervisor {
            policy,
            grants: HashMap::new(),
        }
    }

    /// The answer to `h`.
    pub fn on_hello(&mut self, h: &ConsumerHello) -> ConsumerConfig {
        let key = (h.stream_id, h.consumer_id);
        if let Some(g) = self.grants.get_mut(&key) {
            g.seen = Instant::now();
            return g.config.clone();
        }
        let fallback = self
            .policy
            .fallback_uri
            .clone()
            .filter(|_| self.policy.fallback_all || !h.supports_shm);
        let (descriptor, control) = if self.policy.per_consumer && fallback.is_none() {
            let d = h.descriptor.as_ref().map(|r| StreamRequest {
                channel: r.channel.clone(),
                stream_id: self.free_id(h.stream_id, r.stream_id, &self.policy.descriptor_ids, |c| {
                    &c.descriptor
                }),
            });
            let c = h.control.as_ref().map(|r| StreamRequest {
                channel: r.channel.clone(),
                stream_id: self.free_id(h.stream_id, r.stream_id, &self.policy.control_ids, |c| &c.control),
            });
            (d.filter(|d| d.stream_id != 0), c.filter(|c| c.stream_id != 0))
        } else {
            (None, None)
        };
        // RATE_LIMITED is served on a per-consumer descriptor stream only; declined without one
        // (the consumer then throttles itself).
        let mode = if h.mode == Mode::RateLimited && descriptor.is_some() {
            Mode::RateLimited
        } else {
            Mode::Stream
        };
        let config = ConsumerConfig {
            stream_id: h.stream_id,
            consumer_id: h.consumer_id,
            use_shm: fallback.is_none(),
            mode,
            descriptor,
            control,
            fallback_uri: fallback.unwrap_or_default(),
        };
        self.grants.insert(
            key,
            Grant {
                config: config.clone(),
                seen: Instant::now(),
            },
        );
        config
    }

    /// A consumer showed it lives (a QosConsumer).
    pub fn touch(&mut self, stream_id: u32, consumer_id: u32) {
        if let Some(g) = self.grants.get_mut(&(stream_id, consumer_id)) {
            g.seen = Instant::now();
        }
    }

    /// Forgets consumers not heard from for `stale`; returns their (stream, consumer) ids.
    pub fn sweep(&mut self, stale: Duration) -> Vec<(u32, u32)> {
        let gone: Vec<_> = self
            .grants
            .iter()
            .filter(|(_, g)| g.seen.elapsed() > stale)
            .map(|(k, _)| *k)
            .collect();
        for k in &gone {
            self.grants.remove(k);
        }
        gone
    }

    /// `asked` if no other consumer of the stream holds it, else the lowest free id of `range`
    /// (0 when the range is used up: the request is declined).
    fn free_id(
        &self,
        stream_id: u32,
        asked: u32,
        range: &RangeInclusive<u32>,
        of: impl Fn(&ConsumerConfig) -> &Option<StreamRequest>,
    ) -> u32 {
        let taken = |id: u32| {
            self.grants.iter().any(|((s, _), g)| {
                *s == stream_id && of(&g.config).as_ref().is_some_and(|r| r.stream_id == id)
            })
        };
        if asked != 0 && !taken(asked) {
            return asked;
        }
        range.clone().find(|&id| !taken(id)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(consumer_id: u32, asked: u32, shm: bool) -> ConsumerHello {
        ConsumerHello {
            stream_id: 10000,
            consumer_id,
            supports_shm: shm,
            supports_progress: false,
            mode: Mode::RateLimited,
            max_rate_hz: 10,
            expected_layout_version: 1,
            progress: [None; 3],
            descriptor: Some(StreamRequest {
                channel: "aeron:ipc?term-length=4m".into(),
                stream_id: asked,
            }),
            control: None,
        }
    }

    /// W-10.5-1: hellos become configs by policy: per-consumer streams without collisions (ids
    /// that C's `base + id % range` would give twice), the same answer to a repeated hello,
    /// FALLBACK for a consumer without shared memory, RATE_LIMITED only with its own stream.
    #[test]
    fn w_10_5_1_hellos_become_configs_by_policy() {
        let mut s = Supervisor::new(Policy {
            fallback_uri: Some("aeron:udp?endpoint=10.0.0.9:40000".into()),
            ..Policy::default()
        });
        let a = s.on_hello(&hello(1, 31001, true));
        let b = s.on_hello(&hello(1001, 31001, true));
        assert_eq!(a.descriptor.as_ref().unwrap().stream_id, 31001);
        assert_eq!(
            b.descriptor.as_ref().unwrap().stream_id,
            31000,
            "31001 is taken: the lowest free"
        );
        assert_eq!((a.mode, a.use_shm), (Mode::RateLimited, true));
        assert_eq!(
            s.on_hello(&hello(1001, 31001, true)),
            b,
            "a repeated hello, the same answer"
        );
        let f = s.on_hello(&hello(7, 31007, false));
        assert!(!f.use_shm && f.fallback_uri.contains("10.0.0.9"));
        assert_eq!((f.descriptor, f.mode), (None, Mode::Stream));
        let mut plain = hello(8, 0, true);
        plain.descriptor = None;
        let p = s.on_hello(&plain);
        assert_eq!(
            (p.descriptor, p.mode),
            (None, Mode::Stream),
            "RATE_LIMITED declined without a stream"
        );
        // Ids come back when their consumers go.
        assert_eq!(s.sweep(Duration::ZERO).len(), 4);
        assert_eq!(
            s.on_hello(&hello(1001, 31001, true))
                .descriptor
                .unwrap()
                .stream_id,
            31001
        );
    }

    #[test]
    fn a_used_up_range_declines() {
        let mut s = Supervisor::new(Policy {
            descriptor_ids: 31000..=31000,
            ..Policy::default()
        });
        assert!(s.on_hello(&hello(1, 31000, true)).descriptor.is_some());
        let c = s.on_hello(&hello(2, 31000, true));
        assert_eq!((c.descriptor, c.mode), (None, Mode::Stream));
    }
}
