//! The publishing side of a stream.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::*;
use std::time::{Duration, Instant};

use super::layout::{
    pool_name_of, Member, MemberState, StreamHeader, StreamLayout, LAYOUT_HASH, LAYOUT_VERSION,
    PUBLISHER_CLOSED, PUBLISHER_OPEN,
};
use super::queue::{self, Entry, QueueCells};
use super::{Notifier, Policy, StreamMap};
use crate::error::{Error, Result};
use crate::object::{self, CreateOutcome, CreateSpec, ObjectKind};
use crate::os::process::pidfd_exited;
use crate::os::{futex, time, Liveness, ProcessIdentity, ShmDir};
use crate::pool::{Buffer, BufferMut, BufferPool, HintBatching, PoolBuilder, SlotState};
use crate::segment::seqlock;

/// How often the publisher looks for subscribers that died (one `poll` of their pidfds).
const CHECK_EVERY_NS: u64 = 10_000_000;

/// How long a publisher waiting for room sleeps before it checks that the subscriber lives.
const PARK_SLICE: Duration = Duration::from_millis(20);

/// Configuration of a new stream. Start with [`Publisher::builder`].
#[derive(Debug, Clone)]
pub struct PublisherBuilder {
    name: String,
    dir: ShmDir,
    buffers: u32,
    buffer_size: u64,
    alignment: u32,
    mode: u32,
    policy: Policy,
    depth: Option<u32>,
    history: u32,
    max_subscribers: u32,
    spin: Duration,
}

impl PublisherBuilder {
    fn new(name: &str) -> Self {
        PublisherBuilder {
            name: name.to_string(),
            dir: ShmDir::default(),
            buffers: 8,
            buffer_size: 0,
            alignment: 64,
            mode: 0o600,
            policy: Policy::default(),
            depth: None,
            history: 0,
            max_subscribers: 8,
            spin: Duration::from_micros(20),
        }
    }

    /// Buffers in the stream's pool (default 8). Frames queued, held by subscribers, kept as
    /// history or being written all take one.
    pub fn buffers(mut self, count: u32) -> Self {
        self.buffers = count;
        self
    }

    /// Bytes per frame (required).
    pub fn buffer_size(mut self, size: u64) -> Self {
        self.buffer_size = size;
        self
    }

    /// Alignment of each frame (default 64).
    pub fn alignment(mut self, alignment: u32) -> Self {
        self.alignment = alignment;
        self
    }

    /// File mode of the stream and its pool (default `0o600`).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// What happens when a subscriber's queue is full (default [`Policy::DropOldest`]).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Frames each subscriber's queue holds: a power of two (default 4; `Latest` forces 1).
    pub fn depth(mut self, depth: u32) -> Self {
        self.depth = Some(depth);
        self
    }

    /// The last `n` frames are kept for subscribers that join later (default 0).
    pub fn history(mut self, n: u32) -> Self {
        self.history = n;
        self
    }

    /// Most subscribers at once (default 8, at most [`super::MAX_SUBSCRIBERS`]).
    pub fn max_subscribers(mut self, n: u32) -> Self {
        self.max_subscribers = n;
        self
    }

    /// Directory of the stream and its pool (default `$XMEM_SHM_DIR` or `/dev/shm`).
    pub fn directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = ShmDir::new(dir);
        self
    }

    /// How long a publisher waiting for room spins before it sleeps (default 20 µs).
    pub fn spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// Creates the stream (and its pool, `NAME.pool`, unless a previous publisher's is still
    /// in use and has the same configuration) and becomes its only publisher. A stream whose
    /// publisher died is replaced; one whose publisher lives gives [`Error::PublisherExists`].
    pub fn create(&self) -> Result<Publisher> {
        self.check()?;
        // A live publisher first: its pool would otherwise answer with a configuration mismatch.
        self.refuse_live_publisher()?;
        let pool = self.pool_builder()?.open_or_create()?;
        self.create_on(pool)
    }

    /// The builder of the pool [`create`](Self::create) would make (`NAME.pool`, this
    /// directory, mode and buffer configuration): for a caller that makes the pool itself, a
    /// device pool for instance, and then calls [`create_with_pool`](Self::create_with_pool).
    pub fn pool_builder(&self) -> Result<PoolBuilder> {
        Ok(BufferPool::builder(&pool_name_of(&self.name)?)
            .directory(self.dir.path())
            .buffers(self.buffers)
            .buffer_size(self.buffer_size)
            .alignment(self.alignment)
            .mode(self.mode)
            .spin(self.spin))
    }

    /// Creates the stream over `pool`, which must be the one [`pool_builder`](Self::pool_builder)
    /// names (subscribers find it by that name).
    pub fn create_with_pool(&self, pool: BufferPool) -> Result<Publisher> {
        self.check()?;
        let want = object::path_of(&self.dir, &pool_name_of(&self.name)?)?;
        if pool.path() != want {
            return Err(Error::InvalidConfig(format!(
                "stream {}'s pool must be {}, not {}",
                self.name,
                want.display(),
                pool.path().display()
            )));
        }
        self.refuse_live_publisher()?;
        self.create_on(pool)
    }

    fn check(&self) -> Result<()> {
        object::path_of(&self.dir, &self.name)?;
        object::refuse_hugetlbfs(&self.dir, "a stream")?;
        if self.buffer_size == 0 {
            return Err(Error::InvalidConfig(
                "a stream needs a frame size (PublisherBuilder::buffer_size)".into(),
            ));
        }
        Ok(())
    }

    fn refuse_live_publisher(&self) -> Result<()> {
        let path = object::path_of(&self.dir, &self.name)?;
        match object::live_owner(&path, ObjectKind::Stream) {
            Some(pid) => Err(Error::PublisherExists {
                name: self.name.clone(),
                pid,
            }),
            None => Ok(()),
        }
    }

    fn create_on(&self, pool: BufferPool) -> Result<Publisher> {
        let path = object::path_of(&self.dir, &self.name)?;
        let pool_name = pool.name().to_string();
        let depth = match self.policy {
            Policy::Latest => 1,
            _ => self.depth.unwrap_or(4),
        };
        let layout = StreamLayout::compute(depth, self.max_subscribers, self.history)?;
        // Small frames: loans claim several free hints at a time (see `HintBatching`, and the
        // subscriber's side for why large frames do not).
        if self.buffer_size <= super::BATCH_HINTS_UP_TO {
            pool.batch_hints(HintBatching::Claim);
        }
        let spec = CreateSpec {
            kind: ObjectKind::Stream,
            layout_version: LAYOUT_VERSION,
            header_size: std::mem::size_of::<StreamHeader>() as u32,
            total_size: layout.total as u64,
            mode: self.mode,
            populate: true,
            placement: Default::default(),
            keep_lock: true,
        };
        for _ in 0..4 {
            let init = |map: &crate::os::Mapping| {
                let h = map.at::<StreamHeader>(0)?;
                h.layout_hash.store(LAYOUT_HASH, Relaxed);
                h.pool_id.store(pool.pool_id(), Relaxed);
                h.policy.store(self.policy.code(), Relaxed);
                h.depth.store(layout.depth, Relaxed);
                h.max_subscribers.store(layout.max_subscribers, Relaxed);
                h.history.store(layout.history, Relaxed);
                for (d, s) in h.pool_name.iter().zip(pool_name.bytes()) {
                    d.store(s, Relaxed);
                }
                h.pool_name_len.store(pool_name.len() as u32, Relaxed);
                h.publisher_state.store(PUBLISHER_OPEN, Relaxed);
                for e in map
                    .slice_at::<super::layout::HistoryEntry>(layout.history_offset, layout.history as usize)?
                {
                    e.index.store(u64::MAX, Relaxed);
                }
                Ok(())
            };
            match object::create(&path, &spec, init)? {
                CreateOutcome::Created(obj) => {
                    let map = StreamMap::new(&self.name, obj)?;
                    return Ok(Publisher::new(map, pool, path, self));
                }
                CreateOutcome::Exists => {
                    object::take_over(&self.name, &path, ObjectKind::Stream).map_err(|pid| {
                        Error::PublisherExists {
                            name: self.name.clone(),
                            pid,
                        }
                    })??
                }
            }
        }
        Err(Error::AlreadyExists {
            name: self.name.clone(),
            detail: "it keeps being re-created by another process".into(),
        })
    }
}

/// A subscriber the publisher delivers to.
#[derive(Debug, Clone, Copy)]
struct Delivery {
    /// Its record.
    record: usize,
    /// Its record's `state` word when it was seen active.
    word: u64,
    /// Its pool slot and holder bit.
    pool_slot: usize,
    bit: u64,
    /// The next position of its queue.
    tail: u64,
}

/// A subscriber that left or died: its record is freed once its pool slot is released.
#[derive(Debug, Clone, Copy)]
struct Departed {
    record: usize,
    word: u64,
    pool_slot: Option<usize>,
}

/// The one publisher of a stream. Dropping it closes the stream: subscribers receive what was
/// published, then [`Error::PublisherGone`].
#[derive(Debug)]
pub struct Publisher {
    map: StreamMap,
    path: PathBuf,
    pool: BufferPool,
    me: ProcessIdentity,
    policy: Policy,
    spin: Duration,
    deliveries: Vec<Delivery>,
    /// How each delivery's subscriber is watched (same order): a pidfd, readable once its
    /// process has exited, or polling where no descriptor could be had.
    pidfds: Vec<ExitWatch>,
    /// Whether running out of descriptors for pidfds was reported already.
    warned_fds: bool,
    departed: Vec<Departed>,
    epoch: u64,
    next_seq: u64,
    /// Frames kept for late joiners (this process's references).
    history: VecDeque<Buffer>,
    notifier: Notifier,
    next_check_ns: u64,
}

impl Publisher {
    /// Starts configuring a stream called `name`.
    pub fn builder(name: &str) -> PublisherBuilder {
        PublisherBuilder::new(name)
    }

    fn new(map: StreamMap, pool: BufferPool, path: PathBuf, b: &PublisherBuilder) -> Publisher {
        Publisher {
            me: pool.identity(),
            policy: b.policy,
            spin: b.spin,
            deliveries: Vec::new(),
            pidfds: Vec::new(),
            warned_fds: false,
            departed: Vec::new(),
            epoch: u64::MAX,
            next_seq: 0,
            history: VecDeque::new(),
            notifier: Notifier::default(),
            next_check_ns: 0,
            map,
            path,
            pool,
        }
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.map.name
    }

    /// The stream's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stream's pool (to look at; frames come from [`Publisher::loan`]).
    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }

    /// Subscribers that receive the next frame.
    pub fn subscriber_count(&mut self) -> usize {
        self.maintain();
        self.deliveries.len()
    }

    /// Frames published so far.
    pub fn published(&self) -> u64 {
        self.next_seq
    }

    /// A free buffer to write the next frame into. When the pool is exhausted, `DropOldest` and
    /// `Latest` first drop the oldest frames still queued; then this waits for a buffer (with
    /// `Block`, at most its timeout).
    pub fn loan(&mut self) -> Result<BufferMut> {
        if let Ok(b) = self.pool.try_acquire() {
            return Ok(b);
        }
        self.loan_slow()
    }

    #[cold]
    fn loan_slow(&mut self) -> Result<BufferMut> {
        self.maintain();
        match self.policy {
            Policy::Block { timeout } => self.pool.acquire_timeout(timeout),
            Policy::DropOldest | Policy::Latest => {
                // Queued frames pin buffers; giving back the oldest of each queue may free one.
                for _ in 0..self.map.layout.depth {
                    let mut dropped_any = false;
                    for i in 0..self.deliveries.len() {
                        dropped_any |= self.drop_oldest_queued(i);
                    }
                    if let Ok(b) = self.pool.try_acquire() {
                        return Ok(b);
                    }
                    if !dropped_any {
                        break;
                    }
                }
                self.pool.acquire()
            }
        }
    }

    /// Drops the oldest frame still queued for delivery `i`, if any.
    fn drop_oldest_queued(&mut self, i: usize) -> bool {
        let d = self.deliveries[i];
        let q = self.map.queue(d.record, None);
        let depth = q.depth();
        // The oldest unread entry is among the last `depth` positions.
        for back in (1..=depth.min(d.tail)).rev() {
            let pos = d.tail - back;
            if q.seq(pos).load(Acquire) == 2 * pos + 1 {
                // Take it back as if publishing at `pos + depth` (the slot's next lap).
                if let Some(e) = queue_take_back_at(&q, pos) {
                    self.pool.revoke_delivered(d.bit, e.index);
                    self.map.record(d.record).dropped.fetch_add(1, Relaxed);
                    return true;
                }
            }
        }
        false
    }

    /// Publishes `frame` to every subscriber. Returns its sequence number.
    ///
    /// The frame must come from [`Publisher::loan`]. Its sequence number is stamped into its
    /// metadata, and its timestamp too unless one was set.
    ///
    /// # Errors
    ///
    /// A frame that is not published comes back inside the [`PublishError`], untouched but for
    /// its sequence number and time stamp: nothing was delivered to anyone, and it can be
    /// published again ([`PublishError::into_frame`]) or dropped, which returns it to the pool.
    pub fn publish(&mut self, frame: BufferMut) -> Result<u64, PublishError> {
        self.publish_inner(frame, false).map(|(seq, _)| seq)
    }

    /// Publishes `frame` like [`Publisher::publish`] and keeps a read-only reference to it for
    /// the caller: for views of the frame that outlive the call (a numpy array filled in place),
    /// whose memory must not be recycled while they exist.
    ///
    /// # Errors
    ///
    /// As [`Publisher::publish`]: the frame comes back in the error.
    pub fn publish_and_keep(&mut self, frame: BufferMut) -> Result<(u64, Buffer), PublishError> {
        let (seq, kept) = self.publish_inner(frame, true)?;
        Ok((seq, kept.expect("kept for the caller")))
    }

    fn publish_inner(
        &mut self,
        mut frame: BufferMut,
        for_caller: bool,
    ) -> Result<(u64, Option<Buffer>), PublishError> {
        if frame.pool_ptr() != self.pool.attachment_ptr() {
            let error = Error::InvalidConfig(
                "publish takes frames loaned from this publisher (Publisher::loan)".into(),
            );
            return Err(PublishError { error, frame });
        }
        // New subscribers before delivering (they get this frame); the look for dead ones
        // after it, off the path from the time stamp to the subscribers.
        self.refresh_roster();
        let seq = self.next_seq;
        frame.set_sequence(seq);
        if !frame.has_timestamp() {
            frame.set_timestamp_ns(time::monotonic_ns());
        }
        // Room in every queue first, so that a `Block` timeout leaves nothing half delivered.
        let mut to = 0u64;
        let mut i = 0;
        while i < self.deliveries.len() {
            match self.make_room(i) {
                Ok(true) => {
                    to |= self.deliveries[i].bit;
                    i += 1;
                }
                Ok(false) => {} // it was removed (dead); the same index is the next delivery
                Err(error) => return Err(PublishError { error, frame }),
            }
        }
        let entry = Entry {
            index: frame.index(),
            generation: frame.generation(),
            seq,
        };
        let history = self.map.layout.history > 0;
        let kept = self.pool.deliver(frame, to, history || for_caller);
        for d in &mut self.deliveries {
            let q = self.map.queue(d.record, Some(&self.notifier));
            queue::put(&q, d.tail, entry);
            d.tail += 1;
        }
        let mut mine = None;
        if let Some(frame) = kept {
            if history {
                mine = for_caller.then(|| frame.clone());
                self.remember(frame, entry);
            } else {
                mine = Some(frame);
            }
        }
        self.next_seq += 1;
        self.map.header().published.store(self.next_seq, Relaxed);
        self.check_if_due();
        Ok((seq, mine))
    }

    /// Makes room at delivery `i`'s tail. `Ok(false)` if that subscriber turned out to be gone
    /// (it was removed from the deliveries).
    #[inline]
    fn make_room(&mut self, i: usize) -> Result<bool> {
        let d = self.deliveries[i];
        let q = self.map.queue(d.record, Some(&self.notifier));
        match queue::has_room(&q, d.tail) {
            Some(true) => return Ok(true),
            Some(false) => {}
            None => {
                tracing::warn!(stream = %self.map.name, record = d.record, "a subscriber's queue is corrupt; it is dropped from the stream");
                self.depart(i);
                return Ok(false);
            }
        }
        match self.policy {
            Policy::DropOldest | Policy::Latest => {
                if let Some(e) = queue::take_back(&q, d.tail) {
                    self.pool.revoke_delivered(d.bit, e.index);
                    self.map.record(d.record).dropped.fetch_add(1, Relaxed);
                }
                Ok(true)
            }
            Policy::Block { timeout } => self.wait_for_room(i, timeout),
        }
    }

    #[cold]
    fn wait_for_room(&mut self, i: usize, timeout: Duration) -> Result<bool> {
        let started = Instant::now();
        let spin_until = started + self.spin;
        let d = self.deliveries[i];
        loop {
            let q = self.map.queue(d.record, Some(&self.notifier));
            if queue::has_room(&q, d.tail) != Some(false) {
                return Ok(true);
            }
            let now = Instant::now();
            if now < spin_until {
                std::hint::spin_loop();
                continue;
            }
            if self.pidfds[i].exited() || self.map.record(d.record).state.load(Acquire) != d.word {
                self.depart(i);
                return Ok(false);
            }
            if now >= started + timeout {
                return Err(Error::QueueFull {
                    name: self.map.name.clone(),
                    pid: Member::decode(d.word).pid,
                    depth: self.map.layout.depth,
                    waited: now - started,
                });
            }
            if let Some(seen) = queue::park_publisher(&q, d.tail) {
                let slice = (started + timeout - now).min(PARK_SLICE);
                futex::wait(&self.map.record(d.record).pub_wake, seen, slice);
            }
        }
    }

    /// Keeps `frame` as history.
    fn remember(&mut self, frame: Buffer, e: Entry) {
        let ring = self.map.history();
        let slot = &ring[(e.seq % ring.len() as u64) as usize];
        let v = seqlock::write_begin(&slot.version);
        slot.seq.store(e.seq, Relaxed);
        slot.generation.store(e.generation, Relaxed);
        slot.index.store(u64::from(e.index), Relaxed);
        seqlock::write_end(&slot.version, v);
        self.history.push_back(frame);
        if self.history.len() > ring.len() {
            self.history.pop_front(); // its reference goes back
        }
    }

    /// Takes in joins and departures; every `CHECK_EVERY_NS`, looks for dead subscribers.
    #[inline]
    fn maintain(&mut self) {
        self.refresh_roster();
        self.check_if_due();
    }

    /// Takes in subscribers that joined or left since the last look.
    #[inline]
    fn refresh_roster(&mut self) {
        let epoch = self.map.header().roster_epoch.load(Acquire);
        if epoch != self.epoch {
            self.refresh(epoch);
        }
    }

    /// Looks for subscribers that died, at most every [`CHECK_EVERY_NS`].
    #[inline]
    fn check_if_due(&mut self) {
        if time::monotonic_coarse_ns() >= self.next_check_ns {
            self.check();
        }
    }

    /// Re-reads the subscriber records.
    #[cold]
    fn refresh(&mut self, epoch: u64) {
        self.epoch = epoch;
        // Departures first: whoever is no longer the active member we deliver to.
        let mut i = 0;
        while i < self.deliveries.len() {
            let d = self.deliveries[i];
            if self.map.record(d.record).state.load(Acquire) != d.word {
                self.depart(i);
            } else {
                i += 1;
            }
        }
        for r in 0..self.map.layout.max_subscribers as usize {
            let record = self.map.record(r);
            let word = record.state.load(Acquire);
            let m = Member::decode(word);
            let tracked = self.deliveries.iter().any(|d| d.record == r);
            if m.state != MemberState::Active || tracked {
                if m.state != MemberState::Free
                    && !tracked
                    && !self.departed.iter().any(|d| d.record == r)
                    && m.liveness() == Liveness::Dead
                {
                    self.next_check_ns = 0; // a joiner waits for this record: free it now
                }
                continue;
            }
            let pool_slot = record.pool_slot.load(Relaxed) as usize;
            // Deliver only to a slot this publisher manages: only then is it kept from reuse.
            if pool_slot >= crate::pool::MAX_PROCESSES
                || self.pool.slot_state(pool_slot, self.me) != (SlotState::Active, true)
            {
                continue;
            }
            let watch = match pidfd_of(&m) {
                Ok(Some(pidfd)) => ExitWatch::Pidfd(pidfd),
                Ok(None) => {
                    self.next_check_ns = 0; // it is gone already: its record is freed below
                    continue;
                }
                // Out of descriptors: deliver all the same (a subscriber must not starve for
                // our lack of fds), and look for its death by polling.
                Err(e) => {
                    if !std::mem::replace(&mut self.warned_fds, true) {
                        tracing::warn!(
                            stream = %self.map.name, error = %e,
                            "no pidfd for a subscriber: its death is looked for every check instead; raise the limit of open files (ulimit -n)"
                        );
                    }
                    ExitWatch::Polled(m)
                }
            };
            self.pidfds.push(watch);
            self.deliveries.push(Delivery {
                record: r,
                word,
                pool_slot,
                bit: crate::pool::protocol::slot_bit(pool_slot),
                tail: 0,
            });
        }
    }

    /// Stops delivering to delivery `i`; its record and slot are freed by `check`.
    fn depart(&mut self, i: usize) {
        let d = self.deliveries.swap_remove(i);
        self.pidfds.swap_remove(i);
        self.departed.push(Departed {
            record: d.record,
            word: d.word,
            pool_slot: Some(d.pool_slot),
        });
        self.next_check_ns = 0;
    }

    /// Looks for dead subscribers; frees records and pool slots of departed ones.
    #[cold]
    fn check(&mut self) {
        self.next_check_ns = time::monotonic_coarse_ns() + CHECK_EVERY_NS;
        for i in (0..self.deliveries.len()).rev() {
            if self.pidfds[i].exited() {
                self.depart(i);
            }
        }
        // Records of subscribers that died while joining.
        for r in 0..self.map.layout.max_subscribers as usize {
            let word = self.map.record(r).state.load(Acquire);
            let m = Member::decode(word);
            let tracked =
                self.deliveries.iter().any(|d| d.record == r) || self.departed.iter().any(|d| d.record == r);
            if m.state != MemberState::Free && !tracked && m.liveness() == Liveness::Dead {
                self.departed.push(Departed {
                    record: r,
                    word,
                    pool_slot: None,
                });
            }
        }
        if self.departed.is_empty() {
            return;
        }
        // Dead subscribers' slots move to RETIRED once reclaimed.
        self.pool.reclaim();
        let pool = &self.pool;
        let me = self.me;
        let map = &self.map;
        self.departed.retain(|d| {
            let free_record = match d.pool_slot {
                Some(slot) => match pool.slot_state(slot, me) {
                    (SlotState::Retired, true) => pool.release_retired(slot),
                    (SlotState::Active, true) | (SlotState::Reclaiming, _) => false, // still in use
                    _ => true, // released already, or no longer ours to release
                },
                None => true,
            };
            if free_record {
                let record = map.record(d.record);
                let now = record.state.load(Acquire);
                // Still the same subscriber (active, or leaving since): free the record.
                if Member::decode(now).same_process(&Member::decode(d.word)) {
                    record.pool_slot.store(u32::MAX, Relaxed);
                    let _ = record.state.compare_exchange(now, 0, AcqRel, Relaxed);
                }
            }
            !free_record
        });
        // Slots of subscribers that died before we ever delivered to them. Never one we still
        // deliver to: a sweep may have retired it before its pidfd told us of the death.
        for slot in 0..crate::pool::MAX_PROCESSES {
            if self.pool.slot_state(slot, me) == (SlotState::Retired, true)
                && !self.departed.iter().any(|d| d.pool_slot == Some(slot))
                && !self.deliveries.iter().any(|d| d.pool_slot == slot)
            {
                self.pool.release_retired(slot);
            }
        }
    }
}

/// How the publisher learns that a subscriber's process exited.
#[derive(Debug)]
enum ExitWatch {
    /// Readable once the process has exited.
    Pidfd(OwnedFd),
    /// No descriptor could be had for a pidfd: the member's liveness is read at each check.
    Polled(Member),
}

impl ExitWatch {
    fn exited(&self) -> bool {
        match self {
            ExitWatch::Pidfd(fd) => pidfd_exited(fd),
            ExitWatch::Polled(m) => match m.liveness() {
                Liveness::Dead => true,
                Liveness::Alive => false,
                // /proc unreadable without a descriptor: whether the pid exists at all.
                Liveness::Unknown => !crate::os::process::exists(m.pid),
            },
        }
    }
}

/// A pidfd for the member's process: `Ok(None)` if that process is gone, `Err` if no pidfd
/// could be had for a process that may live (out of descriptors).
fn pidfd_of(m: &Member) -> std::io::Result<Option<OwnedFd>> {
    let Some(fd) = crate::os::process::pidfd_open(m.pid)? else {
        return Ok(None);
    };
    // The pidfd pins the process it names; is that still our member (not a reused pid)?
    Ok((m.liveness() != Liveness::Dead).then_some(fd))
}

/// Takes back the unread entry of position `pos` (the next lap's take-back, early).
fn queue_take_back_at(q: &super::QueueRef<'_>, pos: u64) -> Option<Entry> {
    queue::take_back(q, pos + q.depth())
}

impl Drop for Publisher {
    fn drop(&mut self) {
        let h = self.map.header();
        h.publisher_state.store(PUBLISHER_CLOSED, SeqCst);
        // Wake every waiting subscriber: it sees the stream closed once it has drained it.
        for r in 0..self.map.layout.max_subscribers as usize {
            let q = self.map.queue(r, Some(&self.notifier));
            queue::wake_subscriber(&q);
        }
        self.history.clear();
        // From here on this process delivers nothing: its subscribers' slots are ordinary.
        self.pool.unmanage_all();
        if let Err(e) = unlink_if_same(&self.path, &self.map) {
            tracing::warn!(stream = %self.map.name, error = %e, "could not remove the stream's file");
        }
    }
}

/// Unlinks `path` only if it still names this stream (not a newer one of that name).
fn unlink_if_same(path: &Path, map: &StreamMap) -> Result<()> {
    // By lstat, not by opening it: a publisher out of file descriptors must still clean up.
    crate::os::shm::unlink_if_same(path, map.object.file.identity()?)
        .map(|_| ())
        .map_err(Error::from)
}

/// A publish that failed, with the frame it was given: nothing was delivered to anyone.
///
/// As `crossbeam`'s and `tokio`'s send errors do, it hands the value back
/// ([`PublishError::into_frame`]): the caller may publish it again (a full queue under
/// [`Policy::Block`] can have room a moment later) or drop it, which returns it to the pool.
/// `?` turns it into the plain [`Error`], dropping the frame.
pub struct PublishError {
    error: Error,
    frame: BufferMut,
}

impl PublishError {
    /// Why the frame was not published.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The frame, to publish again.
    pub fn into_frame(self) -> BufferMut {
        self.frame
    }

    /// The reason and the frame.
    pub fn into_parts(self) -> (Error, BufferMut) {
        (self.error, self.frame)
    }
}

impl std::fmt::Debug for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishError")
            .field("error", &self.error)
            .field("frame", &self.frame)
            .finish()
    }
}

impl std::fmt::Display for PublishError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for PublishError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}

impl From<PublishError> for Error {
    fn from(e: PublishError) -> Error {
        e.error
    }
}
