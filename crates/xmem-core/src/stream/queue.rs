//! A subscriber's queue: a bounded ring of frame descriptors that one publisher fills and one
//! subscriber empties, in shared memory, without locks and without system calls unless someone
//! sleeps.
//!
//! # Slots
//!
//! Positions count up forever; position `p` lives in slot `p mod depth`. A slot's `seq` word
//! says what it holds:
//!
//! - `2p`: free, waiting for the entry of position `p`;
//! - `2p + 1`: the entry of position `p`, not yet taken.
//!
//! The publisher writes position `t` only into a slot reading `2t`, then stores `2t + 1`
//! (release). The subscriber takes position `h` from a slot reading `2h + 1` by a CAS to
//! `2(h + depth)`: free for the same slot's next position. When the queue is full, a publisher
//! that drops the oldest frame takes the unread entry `t - depth` back with the CAS
//! `2(t - depth) + 1 → 2t`. The subscriber's take and the publisher's take-back are the only two
//! writes that can race, and both are CASes from the same value, so every entry is taken or
//! taken back exactly once. A subscriber that finds its slot already a lap ahead
//! (`seq > 2h + 1`) knows position `h` was taken back and moves on. This is Vyukov's bounded
//! queue with the sequence doubled, so that a queue of depth 1 (policy `Latest`) works too.
//!
//! # Waking
//!
//! A subscriber that wants to sleep stores a non-zero `sub_parked` and looks at its slot again;
//! a publisher that has stored an entry loads `sub_parked`. All four accesses are `SeqCst`, so
//! either the subscriber sees the entry or the publisher sees it parked (Dekker) and bumps the
//! futex word `sub_wake`. A publisher waiting for room does the same with `pub_parked` and
//! `pub_wake`, against the subscriber's take. Nobody makes a system call unless someone sleeps.

use std::sync::atomic::Ordering::{Acquire, Relaxed, SeqCst};

use crate::sync::{seqcst_store_load, Word32, Word64};

/// Bits of a tag that hold the buffer index (pools have at most 2^16 buffers).
const INDEX_BITS: u32 = 16;

/// The shared words of one queue and its subscriber's wake-up words.
pub(crate) trait QueueCells {
    /// 64-bit word type.
    type W64: Word64;
    /// 32-bit word type.
    type W32: Word32;
    /// Slots (a power of two).
    fn depth(&self) -> u64;
    /// `seq` of the slot of position `pos`.
    fn seq(&self, pos: u64) -> &Self::W64;
    /// Buffer generation of the slot of position `pos`.
    fn generation(&self, pos: u64) -> &Self::W64;
    /// Sequence number and buffer index of the slot of position `pos`.
    fn tag(&self, pos: u64) -> &Self::W64;
    /// Non-zero while the subscriber waits for an entry.
    fn sub_parked(&self) -> &Self::W32;
    /// Futex word of a waiting subscriber.
    fn sub_wake(&self) -> &Self::W32;
    /// Non-zero while the publisher waits for room.
    fn pub_parked(&self) -> &Self::W32;
    /// Futex word of a waiting publisher.
    fn pub_wake(&self) -> &Self::W32;
    /// Wakes the subscriber, which waited as `how` (futex wake, or a datagram; nothing in the
    /// model).
    fn wake_subscriber(&self, how: u32);
    /// Wakes the publisher (a futex wake; nothing in the model).
    fn wake_publisher(&self);
}

/// A frame descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The buffer's index in the pool.
    pub index: u32,
    /// The buffer's generation (the life delivered).
    pub generation: u64,
    /// The frame's sequence number in the stream (48 bits are carried).
    pub seq: u64,
}

impl Entry {
    fn tag(&self) -> u64 {
        (self.seq << INDEX_BITS) | u64::from(self.index)
    }

    fn from_words(generation: u64, tag: u64) -> Entry {
        Entry {
            index: (tag & ((1 << INDEX_BITS) - 1)) as u32,
            generation,
            seq: tag >> INDEX_BITS,
        }
    }
}

/// What a subscriber found at its position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// The entry; the subscriber owns its reference now.
    Entry(Entry),
    /// Nothing yet.
    Empty,
    /// The entry of this position was dropped to make room: move on.
    Dropped,
    /// The slot holds a value no protocol step writes.
    Corrupt(u64),
}

/// The `seq` of position `t`'s slot while it still holds the unread entry of `t - depth`.
#[inline(always)]
fn full<Q: QueueCells>(q: &Q, t: u64) -> u64 {
    t.wrapping_sub(q.depth()).wrapping_mul(2).wrapping_add(1)
}

/// Whether position `t`'s slot can take an entry (`Some(true)`), holds the unread entry of
/// `t - depth` (`Some(false)`), or holds something else (`None`: corrupt).
#[inline]
pub(crate) fn has_room<Q: QueueCells>(q: &Q, t: u64) -> Option<bool> {
    let s = q.seq(t).load(Acquire);
    if s == 2 * t {
        Some(true)
    } else if s == full(q, t) {
        Some(false)
    } else {
        None
    }
}

/// Publisher: stores `e` at position `t`, whose slot must have room ([`has_room`]), and wakes
/// the subscriber if it waits.
#[inline]
pub(crate) fn put<Q: QueueCells>(q: &Q, t: u64, e: Entry) {
    q.generation(t).store(e.generation, Relaxed);
    q.tag(t).store(e.tag(), Relaxed);
    // Release: the entry (and the frame it names) happens-before the subscriber's take.
    q.seq(t).store(2 * t + 1, SeqCst);
    seqcst_store_load();
    if q.sub_parked().load(SeqCst) != 0 {
        wake_subscriber(q);
    }
}

/// Wakes the subscriber if it still waits.
#[cold]
pub(crate) fn wake_subscriber<Q: QueueCells>(q: &Q) {
    let how = q.sub_parked().swap(0, SeqCst);
    if how != 0 {
        q.sub_wake().fetch_add(1, SeqCst);
        q.wake_subscriber(how);
    }
}

/// Publisher, when position `t`'s slot still holds the unread entry of `t - depth`: takes that
/// entry back (the frame is dropped for this subscriber, and its reference is the publisher's
/// to return). `None` if the subscriber took it first; the slot has room then.
#[inline]
pub(crate) fn take_back<Q: QueueCells>(q: &Q, t: u64) -> Option<Entry> {
    let old = t.wrapping_sub(q.depth());
    // Only the publisher writes these words, and it wrote them for `old`.
    let e = Entry::from_words(q.generation(t).load(Relaxed), q.tag(t).load(Relaxed));
    q.seq(t)
        .cas(old.wrapping_mul(2).wrapping_add(1), 2 * t, SeqCst, Acquire)
        .ok()
        .map(|_| e)
}

/// Subscriber: takes the entry of position `h`.
#[inline]
pub(crate) fn take<Q: QueueCells>(q: &Q, h: u64) -> Take {
    let seq = q.seq(h);
    let s = seq.load(Acquire);
    if s == 2 * h + 1 {
        // Read before claiming; if the claim fails these values are discarded.
        let generation = q.generation(h).load(Relaxed);
        let tag = q.tag(h).load(Relaxed);
        if seq.cas(s, 2 * (h + q.depth()), SeqCst, Relaxed).is_err() {
            return Take::Dropped; // the publisher took it back
        }
        seqcst_store_load();
        if q.pub_parked().load(SeqCst) != 0 {
            wake_publisher(q);
        }
        return Take::Entry(Entry::from_words(generation, tag));
    }
    if s == 2 * h {
        Take::Empty
    } else if s > 2 * h + 1 && (s / 2 - h) % q.depth() == 0 {
        Take::Dropped // the slot is on a later lap: position `h` was taken back
    } else {
        Take::Corrupt(s)
    }
}

/// Wakes the publisher if it still waits for room.
#[cold]
pub(crate) fn wake_publisher<Q: QueueCells>(q: &Q) {
    if q.pub_parked().swap(0, SeqCst) != 0 {
        q.pub_wake().fetch_add(1, SeqCst);
        q.wake_publisher();
    }
}

/// Subscriber about to wait at position `h`, as `how` (`PARKED_FUTEX` or `PARKED_FD`):
/// registers, then looks once more. Returns the futex value to sleep on, or `None` if an entry
/// (or anything but "empty") arrived meanwhile.
pub(crate) fn park_subscriber<Q: QueueCells>(q: &Q, h: u64, how: u32) -> Option<u32> {
    let seen = q.sub_wake().load(SeqCst);
    q.sub_parked().store(how, SeqCst);
    seqcst_store_load();
    if q.seq(h).load(SeqCst) != 2 * h {
        q.sub_parked().store(0, Relaxed);
        return None;
    }
    Some(seen)
}

/// Subscriber that stops waiting by its own timer (it goes on looking without sleeping): the
/// publisher need not wake it. A wake-up already on its way is harmless.
pub(crate) fn unpark_subscriber<Q: QueueCells>(q: &Q) {
    q.sub_parked().store(0, Relaxed);
}

/// Publisher about to wait for room at position `t`: registers, then looks once more. Returns
/// the futex value to sleep on, or `None` if room appeared (or the slot is no longer full).
pub(crate) fn park_publisher<Q: QueueCells>(q: &Q, t: u64) -> Option<u32> {
    let seen = q.pub_wake().load(SeqCst);
    q.pub_parked().store(1, SeqCst);
    seqcst_store_load();
    if q.seq(t).load(SeqCst) != full(q, t) {
        q.pub_parked().store(0, Relaxed);
        return None;
    }
    Some(seen)
}

/// Sets every slot free for the first lap (a subscriber joining, before the publisher sees it).
pub(crate) fn reset<Q: QueueCells>(q: &Q) {
    for p in 0..q.depth() {
        q.generation(p).store(0, Relaxed);
        q.tag(p).store(0, Relaxed);
        q.seq(p).store(2 * p, Relaxed);
    }
    q.sub_parked().store(0, Relaxed);
    q.pub_parked().store(0, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, AtomicU64};

    struct Q {
        seq: Vec<AtomicU64>,
        gen: Vec<AtomicU64>,
        tag: Vec<AtomicU64>,
        words: [AtomicU32; 4],
        wakes: AtomicU32,
    }

    impl Q {
        fn new(depth: usize) -> Q {
            let q = Q {
                seq: (0..depth).map(|_| AtomicU64::new(0)).collect(),
                gen: (0..depth).map(|_| AtomicU64::new(0)).collect(),
                tag: (0..depth).map(|_| AtomicU64::new(0)).collect(),
                words: Default::default(),
                wakes: AtomicU32::new(0),
            };
            reset(&q);
            q
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
            &self.words[0]
        }
        fn sub_wake(&self) -> &AtomicU32 {
            &self.words[1]
        }
        fn pub_parked(&self) -> &AtomicU32 {
            &self.words[2]
        }
        fn pub_wake(&self) -> &AtomicU32 {
            &self.words[3]
        }
        fn wake_subscriber(&self, _how: u32) {
            self.wakes.fetch_add(1, Relaxed);
        }
        fn wake_publisher(&self) {
            self.wakes.fetch_add(1, Relaxed);
        }
    }

    fn entry(seq: u64) -> Entry {
        Entry {
            index: (seq % 7) as u32,
            generation: seq * 3 + 1,
            seq,
        }
    }

    #[test]
    fn entries_come_out_in_order_and_a_full_queue_says_so() {
        let q = Q::new(4);
        for t in 0..4 {
            assert_eq!(has_room(&q, t), Some(true));
            put(&q, t, entry(t));
        }
        assert_eq!(has_room(&q, 4), Some(false));
        for h in 0..4 {
            assert_eq!(take(&q, h), Take::Entry(entry(h)));
        }
        assert_eq!(take(&q, 4), Take::Empty);
        assert_eq!(has_room(&q, 4), Some(true));
    }

    #[test]
    fn dropping_the_oldest_skips_exactly_the_dropped_positions() {
        for depth in [1usize, 2, 4] {
            let q = Q::new(depth);
            let mut dropped = vec![];
            for t in 0..10u64 {
                if has_room(&q, t) == Some(false) {
                    dropped.push(take_back(&q, t).unwrap().seq);
                }
                put(&q, t, entry(t));
            }
            let mut got = vec![];
            let mut skipped = 0;
            for h in 0..10u64 {
                match take(&q, h) {
                    Take::Entry(e) => got.push(e.seq),
                    Take::Dropped => skipped += 1,
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(skipped, dropped.len(), "depth {depth}");
            assert_eq!(
                got,
                ((10 - depth as u64)..10).collect::<Vec<_>>(),
                "depth {depth}"
            );
            assert_eq!(take(&q, 10), Take::Empty);
        }
    }

    #[test]
    fn sequence_numbers_keep_48_bits_and_indices_16() {
        let e = Entry {
            index: 65535,
            generation: u64::MAX,
            seq: (1 << 48) - 1,
        };
        assert_eq!(Entry::from_words(e.generation, e.tag()), e);
    }

    #[test]
    fn a_parked_subscriber_is_woken_once() {
        let q = Q::new(2);
        let seen = park_subscriber(&q, 0, 1).unwrap();
        put(&q, 0, entry(0));
        assert_ne!(q.sub_wake().load(SeqCst), seen);
        assert_eq!(q.wakes.load(SeqCst), 1);
        put(&q, 1, entry(1));
        assert_eq!(q.wakes.load(SeqCst), 1, "no second wake without a second park");
        assert_eq!(park_subscriber(&q, 0, 1), None, "an entry is there");
    }

    #[test]
    fn garbage_in_a_slot_is_reported() {
        let q = Q::new(2);
        q.seq(0).store(3, SeqCst); // position 1 cannot live in slot 0
        assert_eq!(take(&q, 0), Take::Corrupt(3));
        assert_eq!(has_room(&q, 0), None);
    }
}
