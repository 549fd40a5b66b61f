//! The shared-memory layout of a stream.
//!
//! ```text
//! 0        StreamHeader (576 B): object header (owner: the publisher), configuration, the pool's
//!          name and id, the publisher's state, the roster epoch
//! …        HistoryEntry × history (32 B each): the last frames, for subscribers that join late
//! …        SubscriberRecord × max_subscribers (192 B each): who subscribes, wake-up words
//! …        QueueSlot × depth (64 B each) per subscriber: its queue of frame descriptors
//! ```
//!
//! The frames themselves live in the stream's [`BufferPool`](crate::BufferPool); queues carry
//! their descriptors (buffer index and generation, stream sequence number).

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8};

use crate::error::{Error, Result};
use crate::object::{ObjectHeader, MAX_NAME_LEN};
use crate::os::map::SharedLayout;
use crate::os::ProcessIdentity;
use xmem_os::assert_layout;

/// Version of this layout.
pub(super) const LAYOUT_VERSION: u32 = 1;

/// Most subscribers of one stream: each needs a slot of the pool, which has 63, one of which is
/// the publisher's.
pub const MAX_SUBSCRIBERS: u32 = crate::pool::MAX_PROCESSES as u32 - 1;

/// Deepest queue.
pub const MAX_DEPTH: u32 = 1 << 16;

/// Longest history.
pub const MAX_HISTORY: u32 = 1 << 10;

/// [`StreamHeader::publisher_state`]: publishing.
pub(super) const PUBLISHER_OPEN: u32 = 1;
/// [`StreamHeader::publisher_state`]: the publisher closed the stream.
pub(super) const PUBLISHER_CLOSED: u32 = 2;

/// [`SubscriberRecord::flags`]: wake this subscriber through its notification socket too.
pub(super) const NOTIFY_FD: u32 = 1;

/// [`SubscriberRecord::sub_parked`]: a thread sleeps on `sub_wake`.
pub(super) const PARKED_FUTEX: u32 = 1;
/// [`SubscriberRecord::sub_parked`]: the subscriber waits for its notification socket.
pub(super) const PARKED_FD: u32 = 2;

/// The stream's header.
#[repr(C, align(64))]
#[derive(Debug)]
pub(super) struct StreamHeader {
    /// The common object header; its owner is the publisher.
    pub object: ObjectHeader,
    /// [`LAYOUT_HASH`] of the creating build.
    pub layout_hash: AtomicU64,
    /// Random id of the stream's pool (a subscriber checks it opened the right one).
    pub pool_id: AtomicU64,
    /// [`Policy`](super::Policy) code.
    pub policy: AtomicU32,
    /// Slots per subscriber queue (a power of two).
    pub depth: AtomicU32,
    /// Subscriber records.
    pub max_subscribers: AtomicU32,
    /// History entries.
    pub history: AtomicU32,
    /// Bytes of `pool_name`.
    pub pool_name_len: AtomicU32,
    /// `PUBLISHER_OPEN` or `PUBLISHER_CLOSED`. Among the configuration, which is written once:
    /// a subscriber that finds its queue empty reads it, and the line must not be one the
    /// publisher writes per frame (that line would then cross between the cores per frame).
    pub publisher_state: AtomicU32,
    _config_reserved: [AtomicU64; 3],
    /// The pool's name.
    pub pool_name: [AtomicU8; 256],
    /// Frames published so far (the next frame's sequence number). Alone in its line: the
    /// publisher writes it per frame, others read it only to show it.
    pub published: AtomicU64,
    _publisher_reserved: [AtomicU64; 7],
    /// Bumped by every subscriber that joins or leaves, so the publisher re-reads the records.
    pub roster_epoch: AtomicU64,
    _roster_pad: [AtomicU64; 7],
}

assert_layout!(StreamHeader, size 576, align 64, {
    object: 0, layout_hash: 128, pool_id: 136, policy: 144, depth: 148, max_subscribers: 152,
    history: 156, pool_name_len: 160, publisher_state: 164, pool_name: 192, published: 448,
    roster_epoch: 512,
});
// SAFETY: repr(C), only atomics, layout asserted above.
unsafe impl SharedLayout for StreamHeader {}

/// One frame of the history (a seqlock-protected record: `version` odd while it is written).
#[repr(C)]
#[derive(Debug)]
pub(super) struct HistoryEntry {
    /// Seqlock version.
    pub version: AtomicU64,
    /// The frame's sequence number.
    pub seq: AtomicU64,
    /// Its buffer's generation.
    pub generation: AtomicU64,
    /// Its buffer's index; `u64::MAX` while empty.
    pub index: AtomicU64,
}

assert_layout!(HistoryEntry, size 32, align 8, { version: 0, seq: 8, generation: 16, index: 24 });
// SAFETY: repr(C), only atomics, layout asserted above.
unsafe impl SharedLayout for HistoryEntry {}

/// One subscriber. Three cache lines: its lifecycle (written when it joins and leaves), the words
/// it writes to ask for a wake-up, and the words the publisher writes back.
#[repr(C, align(64))]
#[derive(Debug)]
pub(super) struct SubscriberRecord {
    /// [`Member`] word: free, joining, active or leaving, and whose.
    pub state: AtomicU64,
    /// The subscriber's slot in the pool (`u32::MAX` until known).
    pub pool_slot: AtomicU32,
    /// `NOTIFY_FD` if it also wants wake-ups on its notification socket.
    pub flags: AtomicU32,
    /// When it joined, ns since the epoch.
    pub joined_unix_ns: AtomicU64,
    /// Names its notification socket (an abstract Unix socket).
    pub notify_key: AtomicU64,
    /// Frames it received.
    pub received: AtomicU64,
    _lifecycle_reserved: [AtomicU64; 3],
    /// `PARKED_FUTEX` or `PARKED_FD` while it waits for a frame; the publisher clears it.
    pub sub_parked: AtomicU32,
    /// Futex word the subscriber sleeps on; the publisher bumps it.
    pub sub_wake: AtomicU32,
    _sub_reserved: [AtomicU64; 7],
    /// Non-zero while the publisher waits for room in this queue; the subscriber clears it.
    pub pub_parked: AtomicU32,
    /// Futex word the publisher sleeps on; the subscriber bumps it.
    pub pub_wake: AtomicU32,
    /// Frames dropped from this queue to make room (policies `DropOldest` and `Latest`).
    pub dropped: AtomicU64,
    /// Times the publisher had to wake it (a system call each): how often it slept.
    pub woken: AtomicU64,
    _pub_reserved: [AtomicU64; 5],
}

assert_layout!(SubscriberRecord, size 192, align 64, {
    state: 0, pool_slot: 8, flags: 12, joined_unix_ns: 16, notify_key: 24, received: 32,
    sub_parked: 64, sub_wake: 68, pub_parked: 128, pub_wake: 132, dropped: 136, woken: 144,
});
// SAFETY: repr(C), only atomics, layout asserted above.
unsafe impl SharedLayout for SubscriberRecord {}

/// One slot of a queue (see `queue` for the protocol). A cache line of its own: the publisher
/// fills the next slot while the subscriber takes this one, and a shared line would cross
/// between their cores for each (measured: 6–10 % of the 8-byte message rate).
#[repr(C, align(64))]
#[derive(Debug)]
pub(super) struct QueueSlot {
    /// `2p`: free for position p; `2p + 1`: holds the entry of position p.
    pub seq: AtomicU64,
    /// The frame's buffer generation.
    pub generation: AtomicU64,
    /// The frame's sequence number (48 bits) and buffer index (16 bits).
    pub tag: AtomicU64,
    _pad: [AtomicU64; 5],
}

assert_layout!(QueueSlot, size 64, align 64, { seq: 0, generation: 8, tag: 16 });
// SAFETY: repr(C), only atomics, layout asserted above.
unsafe impl SharedLayout for QueueSlot {}

/// Hash of every shared struct's shape, refused if another build's differs.
pub(super) const LAYOUT_HASH: u64 = {
    use std::mem::{offset_of, size_of};
    let parts = [
        size_of::<StreamHeader>(),
        offset_of!(StreamHeader, pool_name),
        offset_of!(StreamHeader, publisher_state),
        offset_of!(StreamHeader, published),
        offset_of!(StreamHeader, roster_epoch),
        size_of::<HistoryEntry>(),
        size_of::<SubscriberRecord>(),
        offset_of!(SubscriberRecord, sub_parked),
        offset_of!(SubscriberRecord, pub_parked),
        offset_of!(SubscriberRecord, dropped),
        offset_of!(SubscriberRecord, woken),
        size_of::<QueueSlot>(),
        offset_of!(QueueSlot, tag),
    ];
    let mut h: u64 = 0xcbf29ce484222325;
    let mut i = 0;
    while i < parts.len() {
        h = (h ^ parts[i] as u64).wrapping_mul(0x100000001b3);
        i += 1;
    }
    h
};

/// Where everything is, computed from the configuration alone (an opener recomputes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct StreamLayout {
    /// Slots per queue.
    pub depth: u32,
    /// Subscriber records.
    pub max_subscribers: u32,
    /// History entries.
    pub history: u32,
    /// Offset of the history.
    pub history_offset: usize,
    /// Offset of the subscriber records.
    pub records_offset: usize,
    /// Offset of the first queue.
    pub queues_offset: usize,
    /// Bytes from one queue to the next.
    pub queue_stride: usize,
    /// Total bytes (whole pages).
    pub total: usize,
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

impl StreamLayout {
    /// The layout for a configuration, checked.
    pub(super) fn compute(depth: u32, max_subscribers: u32, history: u32) -> Result<StreamLayout> {
        if depth == 0 || depth > MAX_DEPTH || !depth.is_power_of_two() {
            return Err(Error::InvalidConfig(format!(
                "queue depth {depth}: it must be a power of two from 1 to {MAX_DEPTH}"
            )));
        }
        if max_subscribers == 0 || max_subscribers > MAX_SUBSCRIBERS {
            return Err(Error::InvalidConfig(format!(
                "{max_subscribers} subscribers: a stream has 1 to {MAX_SUBSCRIBERS} (each needs a slot of the pool)"
            )));
        }
        if history > MAX_HISTORY {
            return Err(Error::InvalidConfig(format!(
                "history of {history} frames: at most {MAX_HISTORY}"
            )));
        }
        let header = std::mem::size_of::<StreamHeader>();
        let history_offset = header;
        let records_offset = round_up(
            history_offset + history as usize * std::mem::size_of::<HistoryEntry>(),
            64,
        );
        let queues_offset =
            records_offset + max_subscribers as usize * std::mem::size_of::<SubscriberRecord>();
        let queue_stride = round_up(depth as usize * std::mem::size_of::<QueueSlot>(), 64);
        let total = round_up(queues_offset + max_subscribers as usize * queue_stride, 4096);
        Ok(StreamLayout {
            depth,
            max_subscribers,
            history,
            history_offset,
            records_offset,
            queues_offset,
            queue_stride,
            total,
        })
    }
}

/// A pool name for the stream called `name`, checked to fit the header.
pub(super) fn pool_name_of(name: &str) -> Result<String> {
    let pool = format!("{name}.pool");
    if pool.len() > MAX_NAME_LEN {
        return Err(Error::InvalidName {
            name: name.to_string(),
            reason: "it is too long to name its pool as well (NAME.pool)",
            max: crate::object::MAX_NAME_LEN,
        });
    }
    Ok(pool)
}

/// What a subscriber record's `state` word says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Unused.
    Free,
    /// A subscriber is setting it up; the publisher ignores it.
    Joining,
    /// Receiving frames.
    Active,
    /// Left; the publisher frees it once the subscriber's pool slot is released.
    Leaving,
}

/// A decoded `state` word: `state:2 | pid:22 | start_ticks:40`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Member {
    /// Its state.
    pub state: MemberState,
    /// The subscriber's pid.
    pub pid: u32,
    /// Low 40 bits of its start time.
    pub start: u64,
}

const STATE_SHIFT: u32 = 62;
const PID_SHIFT: u32 = 40;
const PID_MASK: u64 = (1 << 22) - 1;
const START_MASK: u64 = (1 << 40) - 1;

impl Member {
    /// Decodes a `state` word.
    pub(super) fn decode(word: u64) -> Member {
        let state = match word >> STATE_SHIFT {
            1 => MemberState::Joining,
            2 => MemberState::Active,
            3 => MemberState::Leaving,
            _ => MemberState::Free,
        };
        Member {
            state,
            pid: ((word >> PID_SHIFT) & PID_MASK) as u32,
            start: word & START_MASK,
        }
    }

    /// Encodes a `state` word (`Free` is 0).
    pub(super) fn encode(state: MemberState, id: ProcessIdentity) -> u64 {
        let s: u64 = match state {
            MemberState::Free => return 0,
            MemberState::Joining => 1,
            MemberState::Active => 2,
            MemberState::Leaving => 3,
        };
        (s << STATE_SHIFT) | ((u64::from(id.pid) & PID_MASK) << PID_SHIFT) | (id.start_ticks & START_MASK)
    }

    /// Whether both name the same process.
    pub(super) fn same_process(&self, other: &Member) -> bool {
        self.pid == other.pid && self.start == other.start
    }

    /// Whether the subscriber's process lives.
    pub(super) fn liveness(&self) -> crate::os::Liveness {
        let start = self.start;
        crate::os::process::liveness_of(self.pid, |ticks| ticks & START_MASK == start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_validated_and_aligned() {
        assert!(StreamLayout::compute(0, 1, 0).is_err());
        assert!(StreamLayout::compute(3, 1, 0).is_err());
        assert!(StreamLayout::compute(4, 0, 0).is_err());
        assert!(StreamLayout::compute(4, MAX_SUBSCRIBERS + 1, 0).is_err());
        assert!(StreamLayout::compute(4, 1, MAX_HISTORY + 1).is_err());
        let l = StreamLayout::compute(1, 3, 5).unwrap();
        assert_eq!(l.records_offset % 64, 0);
        assert_eq!(l.queues_offset % 64, 0);
        assert_eq!(l.queue_stride, 64);
        assert_eq!(l.total % 4096, 0);
        assert!(l.total >= l.queues_offset + 3 * 64);
    }

    #[test]
    fn member_words_round_trip() {
        let id = ProcessIdentity {
            pid: 4_194_303,
            start_ticks: (1 << 41) + 7,
        };
        for state in [MemberState::Joining, MemberState::Active, MemberState::Leaving] {
            let m = Member::decode(Member::encode(state, id));
            assert_eq!(
                (m.state, m.pid, m.start),
                (state, id.pid, id.start_ticks & START_MASK)
            );
        }
        assert_eq!(Member::decode(0).state, MemberState::Free);
    }
}
