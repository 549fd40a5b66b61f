//! The receiving side of a stream.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering::*;
use std::time::{Duration, Instant};

use super::layout::{Member, MemberState, NOTIFY_FD, PARKED_FD, PARKED_FUTEX, PUBLISHER_CLOSED};
use super::queue::{self, Take};
use super::StreamMap;
use crate::error::{Error, Result};
use crate::object;
use crate::os::notify::NotifyReceiver as NotifySocket;
use crate::os::{futex, time, ProcessIdentity, ShmDir};
use crate::pool::{Buffer, BufferPool, BufferRef, HintBatching};
use crate::segment::seqlock;

/// How often a subscriber that finds its queue empty checks that the publisher lives.
const LIVENESS_EVERY_NS: u64 = 10_000_000;

/// Longest single sleep of a blocked receive (it then checks the publisher).
const PARK_SLICE: Duration = Duration::from_millis(10);

/// How often [`Subscriber::receive_timeout_with`] calls its hook while it polls.
pub const POLL_HOOK_EVERY: Duration = Duration::from_micros(100);

/// How to subscribe. Start with [`Subscriber::builder`].
#[derive(Debug, Clone)]
pub struct SubscriberBuilder {
    name: String,
    dir: ShmDir,
    spin: Duration,
    wake_ahead: Option<Duration>,
    notify_fd: bool,
}

impl SubscriberBuilder {
    fn new(name: &str) -> Self {
        SubscriberBuilder {
            name: name.to_string(),
            dir: ShmDir::default(),
            spin: Duration::from_micros(20),
            wake_ahead: None,
            notify_fd: false,
        }
    }

    /// Directory of the stream (default `$XMEM_SHM_DIR` or `/dev/shm`).
    pub fn directory(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = ShmDir::new(dir);
        self
    }

    /// The builder that opens the stream's pool (`NAME.pool` in the stream's directory): for
    /// a caller that must attach to the pool itself first, a device pool's for instance.
    pub fn pool_builder(&self) -> Result<crate::PoolBuilder> {
        Ok(BufferPool::builder(&super::layout::pool_name_of(&self.name)?).directory(self.dir.path()))
    }

    /// How long a blocking receive spins before it sleeps (default 20 µs: waking a sleeping
    /// thread costs tens of µs on a VM).
    pub fn spin(mut self, spin: Duration) -> Self {
        self.spin = spin;
        self
    }

    /// For frames that come at a steady rate (a camera): a blocking receive learns the frame
    /// clock from the frames' time stamps (the publisher's default stamps; frames stamped with
    /// another clock are timed when seen), sleeps until `lead` before the next frame is due and
    /// spins from then on (up to `lead` past it, then it sleeps until woken). The frame is then
    /// seen within µs of its publication instead of a wake-up later (tens of µs on a VM), at
    /// the cost of spinning about `2 × lead` per frame. `lead` must cover the lateness of this
    /// process's timer and of the publisher's frame clock: 300 µs–1 ms on a VM. Off by default.
    pub fn wake_ahead(mut self, lead: Duration) -> Self {
        self.wake_ahead = Some(lead);
        self
    }

    /// Also signal new frames on a descriptor an event loop can poll ([`Subscriber::notify_fd`]).
    pub fn notify_fd(mut self, on: bool) -> Self {
        self.notify_fd = on;
        self
    }

    /// Joins the stream. Frames published from now on are delivered, after the stream's history.
    pub fn open(&self) -> Result<Subscriber> {
        let path = object::path_of(&self.dir, &self.name)?;
        let map = StreamMap::open(&self.name, &path, true)?;
        let h = map.header();
        let publisher = h.object.owner();
        if h.publisher_state.load(Acquire) == PUBLISHER_CLOSED || super::lock_is_free(&map)? {
            return Err(Error::PublisherGone {
                name: self.name.clone(),
                pid: publisher.pid,
            });
        }
        let pool_name = map.pool_name()?;
        let shared = BufferPool::builder(&pool_name)
            .directory(self.dir.path())
            .open()?;
        if shared.pool_id() != h.pool_id.load(Relaxed) {
            return Err(Error::ConfigMismatch {
                name: self.name.clone(),
                detail: format!("its pool {pool_name:?} is not the one the stream was made with"),
            });
        }
        let pool = shared.attach_managed(publisher)?;
        drop(shared);
        // Small frames: frees publish their hints in batches, one locked instruction per batch on
        // the line the publisher claims from instead of one per frame. A batch is at most an
        // eighth of the pool, so the publisher is rarely short of hinted buffers; small pools do
        // not batch. Large frames do not either: for them reusing the buffer freed last, still
        // in the cache, is worth far more than a locked instruction.
        let batch = (pool.buffer_count() / 8).min(32);
        if batch >= 2 && pool.buffer_size() <= super::BATCH_HINTS_UP_TO {
            pool.batch_hints(HintBatching::Defer(batch));
        }
        let me = pool.identity();
        let record = claim_record(&map, me)?;
        // Until ACTIVE below, the publisher ignores this record: set it up freely.
        let notify = if self.notify_fd {
            Some(NotifySocket::bind().map_err(|e| Error::os("notification socket", "", e))?)
        } else {
            None
        };
        let r = map.record(record);
        r.pool_slot.store(pool.process_slot() as u32, Relaxed);
        r.flags
            .store(if notify.is_some() { NOTIFY_FD } else { 0 }, Relaxed);
        r.notify_key
            .store(notify.as_ref().map_or(0, |n| n.key()), Relaxed);
        r.joined_unix_ns.store(time::unix_now_ns(), Relaxed);
        r.received.store(0, Relaxed);
        r.dropped.store(0, Relaxed);
        r.woken.store(0, Relaxed);
        queue::reset(&map.queue(record, None));
        let backlog = read_history(&map, &pool);
        let word = Member::encode(MemberState::Active, me);
        r.state.store(word, Release);
        h.roster_epoch.fetch_add(1, AcqRel);
        Ok(Subscriber {
            map,
            pool,
            record,
            word,
            head: 0,
            backlog,
            publisher,
            spin: self.spin,
            pace: self.wake_ahead.map(Pace::new),
            notify,
            next_liveness_ns: 0,
            gone: false,
            received: 0,
        })
    }
}

/// When frames are published, learnt from their time stamps (see
/// [`SubscriberBuilder::wake_ahead`]).
#[derive(Debug)]
struct Pace {
    lead: Duration,
    /// When the latest frames were published, oldest first (a gap of unknown time clears it).
    times: VecDeque<Instant>,
}

impl Pace {
    /// Frames remembered: enough for a median interval that one late frame cannot move.
    const KEEP: usize = 9;
    /// Latest frames whose schedule the next one is projected from.
    const PROJECT: usize = 4;

    fn new(lead: Duration) -> Pace {
        Pace {
            lead,
            times: VecDeque::with_capacity(Self::KEEP),
        }
    }

    fn arrived(&mut self, at: Instant) {
        if self.times.len() == Self::KEEP {
            self.times.pop_front();
        }
        self.times.push_back(at);
    }

    fn missed(&mut self) {
        self.times.clear();
    }

    /// When to wake and until when to spin for the next frame, seen from `now`; `None` until
    /// the period is known or once the frame is overdue.
    ///
    /// The period is the (lower) median interval, so a frame published late or early does not
    /// change it. The next frame is expected where the latest few frames' schedule puts it: a
    /// publisher keeping a frame clock publishes on time again right after one late frame, so
    /// the window opens `lead` before the earliest of those projections and closes `lead`
    /// after the newest frame's.
    fn window(&self, now: Instant) -> Option<(Instant, Instant)> {
        let n = self.times.len();
        if n < 3 {
            return None;
        }
        // No allocation: a fixed array of the (at most KEEP - 1) intervals.
        let mut intervals = [Duration::ZERO; Self::KEEP - 1];
        for (slot, (a, b)) in intervals
            .iter_mut()
            .zip(self.times.iter().zip(self.times.iter().skip(1)))
        {
            *slot = b.saturating_duration_since(*a);
        }
        let intervals = &mut intervals[..n - 1];
        intervals.sort_unstable();
        let period = intervals[(n - 2) / 2];
        let projections = self
            .times
            .iter()
            .rev()
            .take(Self::PROJECT)
            .enumerate()
            .map(|(back, t)| *t + period * (back as u32 + 1));
        let earliest = projections.clone().min()?;
        let end = projections.max()? + self.lead;
        (end > now).then(|| (earliest.checked_sub(self.lead).unwrap_or(now), end))
    }
}

/// Claims a free subscriber record. When all are taken but some by dead subscribers, asks the
/// publisher to free them (it does at its next publish) and waits up to a second.
fn claim_record(map: &StreamMap, me: ProcessIdentity) -> Result<usize> {
    let joining = Member::encode(MemberState::Joining, me);
    let records = map.layout.max_subscribers as usize;
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let claimed = (0..records).find(|&r| {
            map.record(r)
                .state
                .compare_exchange(0, joining, AcqRel, Relaxed)
                .is_ok()
        });
        if let Some(r) = claimed {
            return Ok(r);
        }
        let dead = (0..records).any(|r| {
            Member::decode(map.record(r).state.load(Acquire)).liveness() == crate::os::Liveness::Dead
        });
        if !dead || Instant::now() >= deadline {
            return Err(Error::TooManySubscribers {
                name: map.name.clone(),
                max: map.layout.max_subscribers,
            });
        }
        map.header().roster_epoch.fetch_add(1, AcqRel);
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The frames of the stream's history that are still alive, oldest first.
fn read_history(map: &StreamMap, pool: &BufferPool) -> VecDeque<Buffer> {
    let mut found: Vec<(u64, u32, u64)> = Vec::new();
    for e in map.history() {
        for _ in 0..100 {
            let Some(v) = seqlock::read_begin(&e.version) else {
                std::hint::spin_loop();
                continue;
            };
            let (seq, generation, index) = (
                e.seq.load(Relaxed),
                e.generation.load(Relaxed),
                e.index.load(Relaxed),
            );
            if seqlock::read_validate(&e.version, v) {
                if let Ok(index) = u32::try_from(index) {
                    found.push((seq, index, generation));
                }
                break;
            }
        }
    }
    found.sort_unstable();
    let tag = pool.pool_id() as u32;
    found
        .into_iter()
        .filter_map(|(_, index, generation)| pool.get(BufferRef::new(tag, index, generation)).ok())
        .collect()
}

/// A subscriber's notification socket: an abstract Unix datagram socket the publisher sends a
/// byte to when it delivers a frame the subscriber waits for.
/// A subscription to a stream. Dropping it leaves the stream; frames already received stay valid
/// until their guards drop.
#[derive(Debug)]
pub struct Subscriber {
    map: StreamMap,
    /// This subscriber's own attachment to the stream's pool.
    pool: BufferPool,
    record: usize,
    word: u64,
    /// The next position of its queue.
    head: u64,
    /// History frames not yet handed out.
    backlog: VecDeque<Buffer>,
    publisher: ProcessIdentity,
    spin: Duration,
    pace: Option<Pace>,
    notify: Option<NotifySocket>,
    next_liveness_ns: u64,
    gone: bool,
    received: u64,
}

impl Subscriber {
    /// Starts configuring a subscription to the stream called `name`.
    pub fn builder(name: &str) -> SubscriberBuilder {
        SubscriberBuilder::new(name)
    }

    /// Joins the stream called `name` with default settings.
    pub fn open(name: &str) -> Result<Subscriber> {
        Self::builder(name).open()
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.map.name
    }

    /// The publisher's pid.
    pub fn publisher_pid(&self) -> u32 {
        self.publisher.pid
    }

    /// Frames received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Times the publisher had to wake this subscriber from sleep since it joined.
    pub fn wakeups(&self) -> u64 {
        self.map.record(self.record).woken.load(Relaxed)
    }

    /// Frames the publisher dropped from this subscriber's queue to make room.
    pub fn dropped(&self) -> u64 {
        self.map.record(self.record).dropped.load(Relaxed)
    }

    /// The stream's pool, as this subscriber is attached to it.
    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }

    /// The next frame if one is waiting; `Ok(None)` if not. Never blocks, makes no system call
    /// while frames arrive. After the publisher is gone and every frame it published was
    /// received: [`Error::PublisherGone`].
    ///
    /// With [`SubscriberBuilder::notify_fd`], `Ok(None)` also arms the notification descriptor:
    /// it becomes readable when the next frame arrives.
    #[inline]
    pub fn try_receive(&mut self) -> Result<Option<Buffer>> {
        if !self.backlog.is_empty() {
            return Ok(self.backlog.pop_front());
        }
        loop {
            let q = self.map.queue(self.record, None);
            match queue::take(&q, self.head) {
                Take::Entry(e) => {
                    self.head += 1;
                    // A frame taken up through another path (a `get` on this subscriber's pool
                    // handle) is not received twice.
                    if let Ok(frame) = self.pool.adopt_delivered(e.index, e.generation) {
                        self.received += 1;
                        self.map
                            .record(self.record)
                            .received
                            .store(self.received, Relaxed);
                        return Ok(Some(frame));
                    }
                }
                Take::Dropped => self.head += 1,
                Take::Empty => return self.on_empty(),
                Take::Corrupt(seq) => {
                    return Err(Error::Corrupt {
                        path: self.map.path().to_path_buf(),
                        detail: format!("queue slot for position {} reads {seq}", self.head),
                    })
                }
            }
        }
    }

    #[cold]
    fn on_empty(&mut self) -> Result<Option<Buffer>> {
        // Nothing to read: the publisher may be waiting for the buffers we freed.
        self.pool.publish_deferred_hints();
        if self.gone || self.publisher_gone() {
            return self.last_look();
        }
        self.check_record()?;
        if let Some(n) = &self.notify {
            n.drain();
            let q = self.map.queue(self.record, None);
            if queue::park_subscriber(&q, self.head, PARKED_FD).is_none() {
                return self.try_receive(); // arrived meanwhile
            }
        }
        Ok(None)
    }

    /// Our record must still name us: only we change it while we live. Another value means the
    /// stream was written by someone else (a publisher that took our damaged queue for a
    /// departure, a scribbler); waiting on would wait for frames that never come.
    fn check_record(&self) -> Result<()> {
        let now = self.map.record(self.record).state.load(Acquire);
        if now == self.word {
            return Ok(());
        }
        Err(Error::Corrupt {
            path: self.map.path().to_path_buf(),
            detail: format!(
                "subscriber record {} reads {now:#x}, not this subscriber's {:#x}: another process wrote it, and no frame will come through it; subscribe again",
                self.record, self.word
            ),
        })
    }

    /// Whether the publisher closed the stream or died (checked at most every 10 ms).
    fn publisher_gone(&mut self) -> bool {
        if self.map.header().publisher_state.load(Acquire) == PUBLISHER_CLOSED {
            return true;
        }
        let now = time::monotonic_coarse_ns();
        if now < self.next_liveness_ns {
            return false;
        }
        self.next_liveness_ns = now + LIVENESS_EVERY_NS;
        super::lock_is_free(&self.map).unwrap_or(false)
    }

    /// The publisher is gone: what it published before is in the queue (its last store happened
    /// before its lock was dropped or its state closed); after that, the stream is over.
    fn last_look(&mut self) -> Result<Option<Buffer>> {
        loop {
            let q = self.map.queue(self.record, None);
            match queue::take(&q, self.head) {
                Take::Entry(e) => {
                    self.head += 1;
                    if let Ok(frame) = self.pool.adopt_delivered(e.index, e.generation) {
                        self.received += 1;
                        return Ok(Some(frame));
                    }
                }
                Take::Dropped => self.head += 1,
                _ => break,
            }
        }
        if !self.gone {
            self.gone = true;
            // A publisher killed between its delivery and its queue entries left references
            // with this subscriber that no entry names: return them.
            self.pool.drop_unclaimed_deliveries();
        }
        Err(Error::PublisherGone {
            name: self.map.name.clone(),
            pid: self.publisher.pid,
        })
    }

    /// The next frame, waiting as long as it takes.
    pub fn receive(&mut self) -> Result<Buffer> {
        loop {
            if let Some(frame) = self.receive_timeout(Duration::from_secs(3600))? {
                return Ok(frame);
            }
        }
    }

    /// The next frame, waiting at most `timeout` (`Ok(None)` then). Spins briefly, then sleeps
    /// on a futex that the publisher wakes only because this subscriber sleeps; with
    /// [`SubscriberBuilder::wake_ahead`], sleeps until the next frame is nearly due instead.
    pub fn receive_timeout(&mut self, timeout: Duration) -> Result<Option<Buffer>> {
        self.receive_timeout_with(timeout, &mut || ControlFlow::Continue(()))
    }

    /// [`Subscriber::receive_timeout`] that calls `while_polling` about every
    /// [`POLL_HOOK_EVERY`] while it polls (never while it sleeps); `Break` ends the receive with
    /// `Ok(None)`.
    ///
    /// For callers with their own work between a frame's arrival and its use: code and data
    /// left untouched for a few milliseconds fall out of the CPU caches (on a busy host within
    /// one), so a frame that comes after a long poll would find the caller's path cold. The
    /// Python binding rehearses its hand-over of a frame to Python here, and looks for Ctrl-C.
    pub fn receive_timeout_with(
        &mut self,
        timeout: Duration,
        while_polling: &mut dyn FnMut() -> ControlFlow<()>,
    ) -> Result<Option<Buffer>> {
        if let Some(frame) = self.try_receive()? {
            self.paced(&frame, false);
            return Ok(Some(frame));
        }
        let frame = self.wait(timeout, while_polling)?;
        if let Some(f) = &frame {
            self.paced(f, true);
        }
        Ok(frame)
    }

    /// Tells the pace (if any) when `frame` was published: its time stamp where that is this
    /// machine's monotonic clock (the publisher's default), else now if the receive waited for
    /// it (seen late by a wake-up, if it slept), else unknown.
    fn paced(&mut self, frame: &Buffer, waited: bool) {
        let Some(p) = &mut self.pace else { return };
        let now = Instant::now();
        let age = time::monotonic_ns().checked_sub(frame.timestamp_ns());
        match age {
            Some(age) if age < 1_000_000_000 => p.arrived(now - Duration::from_nanos(age)),
            _ if waited => p.arrived(now),
            _ => p.missed(),
        }
    }

    fn wait(
        &mut self,
        timeout: Duration,
        while_polling: &mut dyn FnMut() -> ControlFlow<()>,
    ) -> Result<Option<Buffer>> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut spin_until = start + self.spin.min(timeout);
        if let Some((wake_at, window_end)) = self.pace.as_ref().and_then(|p| p.window(start)) {
            if let Some(frame) = self.sleep_until(wake_at.min(deadline))? {
                return Ok(Some(frame));
            }
            spin_until = spin_until.max(window_end).min(deadline);
        }
        let mut next_hook = Instant::now() + POLL_HOOK_EVERY;
        loop {
            let now = Instant::now();
            if now >= spin_until {
                break;
            }
            if now >= next_hook {
                if while_polling().is_break() {
                    return Ok(None);
                }
                next_hook = Instant::now() + POLL_HOOK_EVERY;
            }
            for _ in 0..8 {
                std::hint::spin_loop();
            }
            if let Some(frame) = self.try_receive()? {
                return Ok(Some(frame));
            }
        }
        self.sleep_until(deadline)
    }

    /// Sleeps until `until` unless a frame comes first (the publisher wakes it then).
    fn sleep_until(&mut self, until: Instant) -> Result<Option<Buffer>> {
        loop {
            let now = Instant::now();
            if now >= until {
                // Awake by its own clock: the publisher need not wake it any more.
                queue::unpark_subscriber(&self.map.queue(self.record, None));
                return Ok(None);
            }
            let q = self.map.queue(self.record, None);
            if let Some(seen) = queue::park_subscriber(&q, self.head, PARKED_FUTEX) {
                let slice = (until - now).min(PARK_SLICE);
                futex::wait(&self.map.record(self.record).sub_wake, seen, slice);
            }
            if let Some(frame) = self.try_receive()? {
                return Ok(Some(frame));
            }
        }
    }

    /// A descriptor that becomes readable when a frame arrives, for event loops; `None` unless
    /// the subscriber was opened with [`SubscriberBuilder::notify_fd`]. After it polls readable,
    /// call [`Subscriber::try_receive`] until it returns `Ok(None)` (which re-arms it).
    pub fn notify_fd(&self) -> Option<BorrowedFd<'_>> {
        self.notify.as_ref().map(|n| n.as_fd())
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let r = self.map.record(self.record);
        let leaving = Member::encode(MemberState::Leaving, self.pool.identity());
        if r.state
            .compare_exchange(self.word, leaving, AcqRel, Relaxed)
            .is_ok()
        {
            self.map.header().roster_epoch.fetch_add(1, AcqRel);
        }
        // What is queued was delivered to us: give it back now rather than when the pool
        // attachment goes (which waits for every received frame's guard).
        loop {
            let q = self.map.queue(self.record, None);
            match queue::take(&q, self.head) {
                Take::Entry(e) => {
                    self.head += 1;
                    self.pool.drop_delivered(e.index);
                }
                Take::Dropped => self.head += 1,
                _ => break,
            }
        }
        self.backlog.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own in /dev/shm, removed (and checked empty) at the end.
    struct Dir(std::path::PathBuf);

    impl Dir {
        fn new(tag: &str) -> Dir {
            let path =
                std::path::PathBuf::from("/dev/shm").join(format!("xmem-unit-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&path).unwrap();
            Dir(path)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let left: Vec<_> = std::fs::read_dir(&self.0)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            let _ = std::fs::remove_dir_all(&self.0);
            if !std::thread::panicking() {
                assert!(left.is_empty(), "left behind: {left:?}");
            }
        }
    }

    /// A publish refused on a full queue (or for a frame of another pool) hands the frame back,
    /// contents intact, and it can be published again once there is room.
    #[test]
    fn a_refused_publish_gives_the_frame_back_to_publish_again() {
        let dir = Dir::new("giveback");
        let mut publisher = crate::stream::Publisher::builder("giveback")
            .directory(&dir.0)
            .buffers(4)
            .buffer_size(64)
            .depth(1)
            .policy(crate::stream::Policy::Block {
                timeout: Duration::from_millis(20),
            })
            .create()
            .unwrap();
        let mut sub = Subscriber::builder("giveback").directory(&dir.0).open().unwrap();
        let first = publisher.loan().unwrap();
        publisher.publish(first).unwrap();
        let mut second = publisher.loan().unwrap();
        second.bytes_mut().fill(0xA7);
        let refused = publisher.publish(second).unwrap_err();
        assert!(matches!(refused.error(), Error::QueueFull { .. }), "{refused:?}");
        assert!(refused.error().is_retryable());
        let second = refused.into_frame();
        assert!(second.bytes().iter().all(|&b| b == 0xA7));
        assert_eq!(publisher.published(), 1, "nothing was published");

        drop(sub.try_receive().unwrap().expect("the first frame"));
        let seq = publisher.publish(second).unwrap();
        let got = sub
            .try_receive()
            .unwrap()
            .expect("the frame given back, published again");
        assert_eq!((seq, got.sequence()), (1, 1));
        assert!(got.bytes().iter().all(|&b| b == 0xA7));
        drop(got);

        let other = crate::BufferPool::builder("giveback-other")
            .directory(&dir.0)
            .buffers(1)
            .buffer_size(64)
            .create()
            .unwrap();
        let foreign = other.acquire().unwrap();
        let refused = publisher.publish(foreign).unwrap_err();
        assert!(!refused.error().is_retryable(), "{refused}");
        drop(refused.into_frame());
        assert_eq!(other.free_count(), 1, "the foreign frame went back to its pool");
    }

    #[test]
    fn a_subscriber_whose_record_was_overwritten_says_so_instead_of_waiting_forever() {
        let dir = Dir::new("record");
        let mut publisher = crate::stream::Publisher::builder("scribbled")
            .directory(&dir.0)
            .buffers(4)
            .buffer_size(64)
            .create()
            .unwrap();
        let mut sub = Subscriber::builder("scribbled").directory(&dir.0).open().unwrap();
        let frame = publisher.loan().unwrap();
        publisher.publish(frame).unwrap();
        drop(sub.try_receive().unwrap().expect("the first frame"));
        for garbage in [0, 0x5555_5555_5555_5555] {
            sub.map.record(sub.record).state.store(garbage, Release);
            let started = Instant::now();
            match sub.receive_timeout(Duration::from_secs(30)) {
                Err(Error::Corrupt { detail, .. }) => assert!(detail.contains("subscribe again"), "{detail}"),
                other => panic!("{other:?}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "it did not wait out the timeout"
            );
        }
        sub.map.record(sub.record).state.store(sub.word, Release);
        let info = crate::stream::inspect_path(&dir.0.join("xmem.scribbled"), "scribbled").unwrap();
        assert_eq!(info.subscribers[0].damage, None);
        sub.map
            .record(sub.record)
            .received
            .store(15_501_577_856_141_985_574, Relaxed);
        let info = crate::stream::inspect_path(&dir.0.join("xmem.scribbled"), "scribbled").unwrap();
        let damage = info.subscribers[0]
            .damage
            .as_deref()
            .expect("counters beyond what was published");
        assert!(damage.contains("15501577856141985574 received"), "{damage}");
        drop(sub);
        drop(publisher);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn pace_projects_the_median_interval_from_the_latest_frames_and_gives_up_when_overdue() {
        let t0 = Instant::now();
        let at = |n: u64| t0 + ms(n);
        let mut p = Pace::new(ms(1));
        p.arrived(at(0));
        p.arrived(at(10));
        assert_eq!(p.window(at(11)), None, "one interval is not a period yet");
        p.arrived(at(20));
        assert_eq!(p.window(at(21)), Some((at(29), at(31))));
        assert_eq!(p.window(at(31)), None, "overdue: it waits as usual");
        // One frame published 3 ms late, on a 10 ms frame clock: the period stays 10 ms, and
        // the window spans both the clock's next tick (40) and 10 ms after the late frame (43).
        p.arrived(at(33));
        assert_eq!(p.window(at(34)), Some((at(39), at(44))));
        p.arrived(at(40));
        p.arrived(at(50));
        p.arrived(at(60));
        p.arrived(at(70));
        assert_eq!(
            p.window(at(71)),
            Some((at(79), at(81))),
            "the late one is forgotten"
        );
        p.missed();
        assert_eq!(p.window(at(71)), None, "after a frame of unknown time");
    }
}
