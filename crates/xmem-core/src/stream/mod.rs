//! Streams: one publisher hands frames (pool buffers, written in place) to any number of
//! subscribers in other processes, each of which receives a read-only guard on the same memory.
//!
//! ```no_run
//! use xmem_core::stream::{Policy, Publisher, Subscriber};
//! # fn main() -> xmem_core::Result<()> {
//! let mut publisher = Publisher::builder("camera")
//!     .buffer_size(1920 * 1080 * 3)
//!     .buffers(8)
//!     .policy(Policy::DropOldest)                 // or Block { timeout }, or Latest
//!     .create()?;
//! let mut frame = publisher.loan()?;              // a free buffer of the stream's pool
//! frame.bytes_mut().fill(0x80);                   // written in place
//! publisher.publish(frame)?;                      // every subscriber gets it
//! // … in another process:
//! let mut subscriber = Subscriber::open("camera")?;
//! let frame = subscriber.receive()?;              // a read-only guard on the same memory
//! assert_eq!(frame.bytes()[0], 0x80);
//! # Ok(()) }
//! ```
//!
//! Each subscriber has its own queue of frame descriptors in the stream's shared memory (see
//! `queue`), and its own slot in the pool: a frame queued for it is a reference *it* holds,
//! so it survives the publisher's death (subscribers drain what was published, then get
//! [`Error::PublisherGone`]) and returns to the pool if the subscriber dies. Publishing a frame
//! to every subscriber is one store into the buffer's holder word plus one entry per queue; a
//! subscriber takes an entry and its reference with two locked instructions on words of its own,
//! and makes a system call only when it sleeps.

mod layout;
mod publisher;
pub(crate) mod queue;
mod subscriber;

#[cfg(all(test, loom))]
mod model;

use std::path::Path;
use std::sync::atomic::Ordering::*;
use std::time::Duration;

pub use layout::{MemberState, MAX_DEPTH, MAX_HISTORY, MAX_SUBSCRIBERS};
pub use publisher::{PublishError, Publisher, PublisherBuilder};
pub use subscriber::{Subscriber, SubscriberBuilder, POLL_HOOK_EVERY};

use self::layout::{
    HistoryEntry, QueueSlot, StreamHeader, StreamLayout, SubscriberRecord, LAYOUT_HASH, LAYOUT_VERSION,
    PARKED_FD, PARKED_FUTEX,
};
use self::queue::QueueCells;
use crate::error::{Error, Result};
use crate::object::{self, ObjectKind, OpenObject, OpenSpec};
use crate::os::futex;

/// Streams of buffers up to this size batch their work on the pool's free hints (the subscriber
/// defers them, the publisher claims several at a time): for them a locked instruction per
/// frame on a line the other core wrote is a large share of the cost. Larger frames take the
/// buffer freed last instead, which is still in the cache.
const BATCH_HINTS_UP_TO: u64 = 1024;

/// What the publisher does when a subscriber's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Reliable: the publisher waits (at most `timeout`) until the subscriber takes a frame;
    /// nothing is lost. GStreamer-style back-pressure.
    Block {
        /// Longest wait before [`Error::QueueFull`].
        timeout: Duration,
    },
    /// Real time: the oldest frame still queued for that subscriber is dropped (its buffer goes
    /// back to the pool) and counted as the subscriber's drop.
    DropOldest,
    /// Only the newest frame waits: `DropOldest` with a queue of one.
    Latest,
}

impl Default for Policy {
    /// `DropOldest`: a slow subscriber never stalls the publisher.
    fn default() -> Self {
        Policy::DropOldest
    }
}

impl Policy {
    fn code(self) -> u32 {
        match self {
            Policy::Block { .. } => 1,
            Policy::DropOldest => 2,
            Policy::Latest => 3,
        }
    }

    /// The policy a stream records (a `Block` timeout is the publisher's own business).
    fn from_code(code: u32) -> Option<Policy> {
        match code {
            1 => Some(Policy::Block {
                timeout: Duration::ZERO,
            }),
            2 => Some(Policy::DropOldest),
            3 => Some(Policy::Latest),
            _ => None,
        }
    }

    /// A word for people.
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::Block { .. } => "block",
            Policy::DropOldest => "drop-oldest",
            Policy::Latest => "latest",
        }
    }
}

/// A mapped, validated stream.
#[derive(Debug)]
pub(crate) struct StreamMap {
    name: String,
    object: OpenObject,
    layout: StreamLayout,
}

fn open_spec(writable: bool) -> OpenSpec {
    OpenSpec {
        kind: ObjectKind::Stream,
        layout_version: LAYOUT_VERSION,
        header_size: std::mem::size_of::<StreamHeader>() as u32,
        timeout: object::DEFAULT_OPEN_TIMEOUT,
        writable,
        populate: true,
    }
}

impl StreamMap {
    /// Validates a stream object and computes where everything is.
    fn new(name: &str, object: OpenObject) -> Result<StreamMap> {
        let path = object.map.path().to_path_buf();
        let corrupt = |detail: String| Error::Corrupt {
            path: path.clone(),
            detail,
        };
        let h = object.map.at::<StreamHeader>(0)?;
        let hash = h.layout_hash.load(Relaxed);
        if hash != LAYOUT_HASH {
            return Err(Error::VersionMismatch {
                path: path.clone(),
                found: (hash >> 32) as u32,
                supported: (LAYOUT_HASH >> 32) as u32,
            });
        }
        let layout = StreamLayout::compute(
            h.depth.load(Relaxed),
            h.max_subscribers.load(Relaxed),
            h.history.load(Relaxed),
        )
        .map_err(|e| corrupt(e.to_string()))?;
        if layout.total != object.map.len() {
            return Err(corrupt(format!(
                "its configuration needs {} bytes, the file has {}",
                layout.total,
                object.map.len()
            )));
        }
        if Policy::from_code(h.policy.load(Relaxed)).is_none() {
            return Err(corrupt(format!("unknown policy code {}", h.policy.load(Relaxed))));
        }
        let map = StreamMap {
            name: name.to_string(),
            object,
            layout,
        };
        map.pool_name()?;
        Ok(map)
    }

    /// Opens the stream at `path`.
    fn open(name: &str, path: &Path, writable: bool) -> Result<StreamMap> {
        let object = object::open(path, &open_spec(writable))?.ok_or_else(|| Error::NotFound {
            name: name.to_string(),
            path: path.to_path_buf(),
        })?;
        StreamMap::new(name, object)
    }

    #[inline(always)]
    fn header(&self) -> &StreamHeader {
        // SAFETY: `new` checked that the mapping holds the layout, which begins with the header;
        // the mapping is page-aligned; the header is `SharedLayout` (atomics, any bits valid).
        unsafe { &*self.object.map.base().cast::<StreamHeader>() }
    }

    fn path(&self) -> &Path {
        self.object.map.path()
    }

    fn policy(&self) -> Policy {
        Policy::from_code(self.header().policy.load(Relaxed)).expect("validated in new")
    }

    fn pool_name(&self) -> Result<String> {
        let h = self.header();
        let len = h.pool_name_len.load(Relaxed) as usize;
        let bytes: Vec<u8> = h
            .pool_name
            .iter()
            .take(len.min(h.pool_name.len()))
            .map(|b| b.load(Relaxed))
            .collect();
        let name = String::from_utf8(bytes).unwrap_or_default();
        object::validate_name(&name).map_err(|e| Error::Corrupt {
            path: self.path().to_path_buf(),
            detail: format!("its pool name: {e}"),
        })?;
        Ok(name)
    }

    /// Subscriber record `i` (< max_subscribers). No bounds check per call: `new` checked once
    /// that the mapping holds the whole layout.
    #[inline(always)]
    fn record(&self, i: usize) -> &SubscriberRecord {
        assert!(i < self.layout.max_subscribers as usize);
        let offset = self.layout.records_offset + i * std::mem::size_of::<SubscriberRecord>();
        // SAFETY: `new` checked that the mapping is `layout.total` bytes, and `StreamLayout`
        // places `max_subscribers` records from `records_offset` (a multiple of 64, their
        // alignment; the mapping is page-aligned) below `total`; i < max_subscribers. The record
        // is `SharedLayout` (atomics, any bits valid).
        unsafe { &*self.object.map.base().add(offset).cast::<SubscriberRecord>() }
    }

    fn history(&self) -> &[HistoryEntry] {
        self.object
            .map
            .slice_at(self.layout.history_offset, self.layout.history as usize)
            .expect("within the validated layout")
    }

    /// Subscriber `i`'s queue (i < max_subscribers), checked as [`Self::record`].
    #[inline(always)]
    fn queue<'a>(&'a self, i: usize, notify: Option<&'a Notifier>) -> QueueRef<'a> {
        assert!(i < self.layout.max_subscribers as usize);
        let offset = self.layout.queues_offset + i * self.layout.queue_stride;
        // SAFETY: as in `record`: queue `i` (`depth` slots of `SharedLayout`, from a multiple of
        // 64) lies inside the validated layout, inside the mapping.
        let slots = unsafe {
            std::slice::from_raw_parts(
                self.object.map.base().add(offset).cast::<QueueSlot>(),
                self.layout.depth as usize,
            )
        };
        QueueRef {
            record: self.record(i),
            slots,
            mask: u64::from(self.layout.depth) - 1,
            notify,
        }
    }
}

/// One subscriber's queue, with the means to wake either side.
pub(crate) struct QueueRef<'a> {
    record: &'a SubscriberRecord,
    slots: &'a [QueueSlot],
    mask: u64,
    notify: Option<&'a Notifier>,
}

impl QueueRef<'_> {
    #[inline(always)]
    fn slot(&self, pos: u64) -> &QueueSlot {
        // `slots` has `mask + 1` entries (see `StreamMap::queue`), so the index is in range;
        // the check compiles to nothing but keeps this safe code.
        &self.slots[(pos & self.mask) as usize]
    }
}

impl QueueCells for QueueRef<'_> {
    type W64 = std::sync::atomic::AtomicU64;
    type W32 = std::sync::atomic::AtomicU32;
    #[inline(always)]
    fn depth(&self) -> u64 {
        self.mask + 1
    }
    #[inline(always)]
    fn seq(&self, pos: u64) -> &Self::W64 {
        &self.slot(pos).seq
    }
    #[inline(always)]
    fn generation(&self, pos: u64) -> &Self::W64 {
        &self.slot(pos).generation
    }
    #[inline(always)]
    fn tag(&self, pos: u64) -> &Self::W64 {
        &self.slot(pos).tag
    }
    #[inline(always)]
    fn sub_parked(&self) -> &Self::W32 {
        &self.record.sub_parked
    }
    #[inline(always)]
    fn sub_wake(&self) -> &Self::W32 {
        &self.record.sub_wake
    }
    #[inline(always)]
    fn pub_parked(&self) -> &Self::W32 {
        &self.record.pub_parked
    }
    #[inline(always)]
    fn pub_wake(&self) -> &Self::W32 {
        &self.record.pub_wake
    }
    fn wake_subscriber(&self, how: u32) {
        // Only the publisher writes it.
        let woken = self.record.woken.load(Relaxed);
        self.record.woken.store(woken.wrapping_add(1), Relaxed);
        match how {
            PARKED_FUTEX => {
                futex::wake(&self.record.sub_wake, 1);
            }
            PARKED_FD => {
                if let Some(n) = self.notify {
                    n.send(self.record.notify_key.load(Relaxed));
                }
            }
            _ => {}
        }
    }
    fn wake_publisher(&self) {
        futex::wake(&self.record.pub_wake, 1);
    }
}

/// The publisher's side of notification sockets (see `os::notify`).
pub(crate) type Notifier = crate::os::notify::NotifySender;

/// What `xmem ls` and `xmem inspect` show of a stream.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// The stream's name.
    pub name: String,
    /// The publisher's pid.
    pub publisher_pid: u32,
    /// Whether the publisher is still publishing (alive and not closed).
    pub publisher_alive: bool,
    /// The pool holding the frames.
    pub pool: String,
    /// What happens when a queue is full.
    pub policy: Policy,
    /// Queue depth.
    pub depth: u32,
    /// Frames kept for late joiners.
    pub history: u32,
    /// Frames published.
    pub published: u64,
    /// The subscribers.
    pub subscribers: Vec<SubscriberInfo>,
    /// Most subscribers.
    pub max_subscribers: u32,
}

/// One subscriber, as [`StreamInfo`] shows it.
#[derive(Debug, Clone)]
pub struct SubscriberInfo {
    /// Its record's index.
    pub record: usize,
    /// Its pid.
    pub pid: u32,
    /// Joining, active or leaving.
    pub state: MemberState,
    /// Whether its process lives.
    pub alive: bool,
    /// Frames it received.
    pub received: u64,
    /// Frames dropped from its queue to make room.
    pub dropped: u64,
    /// Frames waiting in its queue.
    pub queued: u64,
    /// Times the publisher woke it from sleep (each a system call on the publisher's side).
    pub woken: u64,
    /// Why its counters cannot be true (more frames received or dropped than were published):
    /// its record was written by someone else. Its counters are not to be shown as facts then.
    pub damage: Option<String>,
}

/// Inspects the stream at `path` without joining it.
pub fn inspect_path(path: &Path, name: &str) -> Result<StreamInfo> {
    let map = StreamMap::open(name, path, false)?;
    let h = map.header();
    let owner = h.object.owner();
    let file_lock_free = lock_is_free(&map)?;
    let mut subscribers = Vec::new();
    for i in 0..map.layout.max_subscribers as usize {
        let r = map.record(i);
        let m = layout::Member::decode(r.state.load(Acquire));
        if m.state == MemberState::Free {
            continue;
        }
        let q = map.queue(i, None);
        let queued = (0..q.depth())
            .filter(|&p| q.seq(p).load(Relaxed) & 1 == 1)
            .count() as u64;
        let (received, dropped) = (r.received.load(Relaxed), r.dropped.load(Relaxed));
        // Read after the counters. The publisher counts a frame after queueing it, so one frame
        // may be received before it is counted; more than that, and the record is not true.
        let published = h.published.load(Acquire);
        let damage = (received.saturating_add(dropped) > published.saturating_add(1)).then(|| {
            format!("its counters read {received} received and {dropped} dropped of {published} published")
        });
        subscribers.push(SubscriberInfo {
            record: i,
            pid: m.pid,
            state: m.state,
            alive: m.liveness() != crate::os::Liveness::Dead,
            received,
            dropped,
            queued,
            woken: r.woken.load(Relaxed),
            damage,
        });
    }
    Ok(StreamInfo {
        name: name.to_string(),
        publisher_pid: owner.pid,
        publisher_alive: !file_lock_free && h.publisher_state.load(Acquire) == layout::PUBLISHER_OPEN,
        pool: map.pool_name()?,
        policy: map.policy(),
        depth: map.layout.depth,
        history: map.layout.history,
        published: h.published.load(Relaxed),
        subscribers,
        max_subscribers: map.layout.max_subscribers,
    })
}

/// Whether nobody holds the stream's lock: its publisher is gone.
fn lock_is_free(map: &StreamMap) -> Result<bool> {
    let file = &map.object.file;
    if file.try_lock_shared()? {
        file.unlock()?;
        Ok(true)
    } else {
        Ok(false)
    }
}

/// Removes the stream at `path` if its publisher is gone (what `xmem clean` does). With
/// `dry_run`, only says whether it would. Subscribers still attached keep their mapping.
pub fn clean_path(path: &Path, dry_run: bool) -> Result<bool> {
    let map = StreamMap::open("", path, false)?;
    if !lock_is_free(&map)? {
        return Ok(false);
    }
    if !dry_run {
        crate::os::shm::unlink(path)?;
    }
    Ok(true)
}
