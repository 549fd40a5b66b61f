//! Loom model of a subscriber queue: the publisher's puts and take-backs racing the subscriber's
//! takes, and both parking handshakes. Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" cargo test -p xmem-core --release --lib stream::model
//! ```

use loom::sync::atomic::{AtomicU32, AtomicU64};
use loom::sync::Arc;
use loom::thread;
use std::sync::atomic::Ordering::SeqCst;

use super::queue::*;

struct Q {
    seq: Vec<AtomicU64>,
    gen: Vec<AtomicU64>,
    tag: Vec<AtomicU64>,
    sub_parked: AtomicU32,
    sub_wake: AtomicU32,
    pub_parked: AtomicU32,
    pub_wake: AtomicU32,
}

impl Q {
    fn new(depth: usize) -> Arc<Q> {
        let q = Q {
            seq: (0..depth).map(|_| AtomicU64::new(0)).collect(),
            gen: (0..depth).map(|_| AtomicU64::new(0)).collect(),
            tag: (0..depth).map(|_| AtomicU64::new(0)).collect(),
            sub_parked: AtomicU32::new(0),
            sub_wake: AtomicU32::new(0),
            pub_parked: AtomicU32::new(0),
            pub_wake: AtomicU32::new(0),
        };
        reset(&q);
        Arc::new(q)
    }
}

impl QueueCells for Q {
    type W64 = AtomicU64;
    type W32 = AtomicU32;
    fn depth(&self) -> u64 {
        self.seq.len() as u64
    }
    fn seq(&self, p: u64) -> &AtomicU64 {
        &self.seq[(p % self.depth()) as usize]
    }
    fn generation(&self, p: u64) -> &AtomicU64 {
        &self.gen[(p % self.depth()) as usize]
    }
    fn tag(&self, p: u64) -> &AtomicU64 {
        &self.tag[(p % self.depth()) as usize]
    }
    fn sub_parked(&self) -> &AtomicU32 {
        &self.sub_parked
    }
    fn sub_wake(&self) -> &AtomicU32 {
        &self.sub_wake
    }
    fn pub_parked(&self) -> &AtomicU32 {
        &self.pub_parked
    }
    fn pub_wake(&self) -> &AtomicU32 {
        &self.pub_wake
    }
    fn wake_subscriber(&self, _how: u32) {}
    fn wake_publisher(&self) {}
}

/// Entry `n`: its generation and index are derived from it, so a torn entry is detected.
fn entry(n: u64) -> Entry {
    Entry {
        index: n as u32 + 1,
        generation: 100 + n,
        seq: n,
    }
}

fn check(e: Entry) -> u64 {
    assert_eq!(e, entry(e.seq), "a torn entry");
    e.seq
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.max_branches = 100_000;
    b.check(f);
}

/// Publishes `n` entries dropping the oldest when full; returns the entries taken back.
fn publish_dropping(q: &Q, n: u64) -> Vec<u64> {
    let mut back = Vec::new();
    for t in 0..n {
        match has_room(q, t) {
            Some(true) => {}
            Some(false) => {
                if let Some(e) = take_back(q, t) {
                    back.push(check(e));
                }
            }
            None => panic!("corrupt slot"),
        }
        assert_eq!(has_room(q, t), Some(true));
        put(q, t, entry(t));
    }
    back
}

/// Takes up to `attempts` times from `*h` on; returns the entries taken.
fn take_some(q: &Q, h: &mut u64, attempts: usize) -> Vec<u64> {
    let mut got = Vec::new();
    for _ in 0..attempts {
        match take(q, *h) {
            Take::Entry(e) => {
                got.push(check(e));
                *h += 1;
            }
            Take::Dropped => *h += 1,
            Take::Empty => {}
            Take::Corrupt(s) => panic!("corrupt slot {s}"),
        }
    }
    got
}

fn dropping_publisher_and_subscriber(depth: usize) {
    model(move || {
        let q = Q::new(depth);
        let sub = {
            let q = q.clone();
            thread::spawn(move || {
                let mut h = 0;
                let got = take_some(&q, &mut h, 2);
                (got, h)
            })
        };
        let back = publish_dropping(&q, 3);
        let (mut got, mut h) = sub.join().unwrap();
        got.extend(take_some(&q, &mut h, 3));
        // In order, and every entry exactly once: taken by the subscriber or taken back.
        assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order: {got:?}");
        let mut all: Vec<u64> = got.iter().chain(back.iter()).copied().collect();
        all.sort_unstable();
        assert_eq!(all, [0, 1, 2], "taken {got:?}, taken back {back:?}");
        assert_eq!(take(&*q, h), Take::Empty);
    });
}

#[test]
fn with_depth_1_every_entry_is_taken_or_dropped_exactly_once() {
    dropping_publisher_and_subscriber(1);
}

#[test]
fn with_depth_2_every_entry_is_taken_or_dropped_exactly_once() {
    dropping_publisher_and_subscriber(2);
}

#[test]
fn a_blocking_publisher_loses_nothing_and_keeps_order() {
    model(|| {
        let q = Q::new(1);
        let sub = {
            let q = q.clone();
            thread::spawn(move || {
                let mut h = 0;
                let mut got = Vec::new();
                while got.len() < 2 {
                    match take(&*q, h) {
                        Take::Entry(e) => {
                            got.push(check(e));
                            h += 1;
                        }
                        Take::Empty => thread::yield_now(),
                        other => panic!("{other:?}"),
                    }
                }
                got
            })
        };
        for t in 0..2 {
            while has_room(&*q, t) != Some(true) {
                thread::yield_now();
            }
            put(&*q, t, entry(t));
        }
        assert_eq!(sub.join().unwrap(), [0, 1]);
    });
}

#[test]
fn a_parking_subscriber_never_misses_the_entry_that_wakes_it() {
    model(|| {
        let q = Q::new(2);
        let sub = {
            let q = q.clone();
            thread::spawn(move || park_subscriber(&*q, 0, 1))
        };
        put(&*q, 0, entry(0));
        match sub.join().unwrap() {
            None => {} // it saw the entry before sleeping
            // It would sleep while `sub_wake == seen`: the publisher must have moved it.
            Some(seen) => assert_ne!(q.sub_wake.load(SeqCst), seen, "lost wake-up"),
        }
    });
}

#[test]
fn a_subscriber_that_stops_sleeping_by_its_clock_and_sleeps_again_misses_nothing() {
    model(|| {
        let q = Q::new(2);
        let sub = {
            let q = q.clone();
            thread::spawn(move || {
                if park_subscriber(&*q, 0, 1).is_none() {
                    return None;
                }
                // Its timer ran out (`wake_ahead`): it looks without sleeping, then sleeps again.
                unpark_subscriber(&*q);
                if take(&*q, 0) != Take::Empty {
                    return None;
                }
                park_subscriber(&*q, 0, 1)
            })
        };
        put(&*q, 0, entry(0));
        match sub.join().unwrap() {
            None => {}
            Some(seen) => assert_ne!(q.sub_wake.load(SeqCst), seen, "lost wake-up"),
        }
    });
}

#[test]
fn a_parking_publisher_never_misses_the_take_that_makes_room() {
    model(|| {
        let q = Q::new(1);
        put(&*q, 0, entry(0));
        let publisher = {
            let q = q.clone();
            thread::spawn(move || park_publisher(&*q, 1))
        };
        assert_eq!(take(&*q, 0), Take::Entry(entry(0)));
        match publisher.join().unwrap() {
            None => {}
            Some(seen) => assert_ne!(q.pub_wake.load(SeqCst), seen, "lost wake-up"),
        }
    });
}
