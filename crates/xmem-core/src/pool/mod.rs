//! `BufferPool`: a fixed set of equally sized, reference-counted buffers in shared memory.
//!
//! ```
//! use xmem_core::{BufferPool, DType, TensorDesc};
//! # fn main() -> xmem_core::Result<()> {
//! # // A directory of the example's own, removed when it ends (declared first: dropped last).
//! # struct Dir(String);
//! # impl Drop for Dir { fn drop(&mut self) { let _ = std::fs::remove_dir_all(&self.0); } }
//! # let _dir = Dir(format!("/dev/shm/xmem-doctest-{}", std::process::id()));
//! # std::fs::create_dir_all(&_dir.0).unwrap();
//! # std::env::set_var("XMEM_SHM_DIR", &_dir.0);
//! let pool = BufferPool::builder("camera").buffers(8).buffer_size(1920 * 1080 * 3).create()?;
//! let mut frame = pool.acquire()?;                       // exclusive, writable
//! frame.set_tensor(&TensorDesc::contiguous(DType::U8, &[1080, 1920, 3])?)?;
//! frame.as_mut_slice::<u8>()?.fill(0);
//! let frame = frame.freeze();                            // shared, read-only from here on
//! let token = frame.token().to_bytes();                  // 16 bytes for any channel
//! // … in another process:
//! let pool = BufferPool::open("camera")?;
//! let seen = pool.get(xmem_core::BufferRef::from_bytes(&token)?)?;
//! assert_eq!(seen.tensor()?.shape(), &[1080, 1920, 3]);
//! # Ok(()) }
//! ```
//!
//! Lifetime follows the references alone: a buffer is free again when the last reference to it
//! in any process is dropped, and a process that dies has its references returned (the
//! crate-private `protocol` module argues why that is exact). The pool's name disappears when the
//! last attached process closes it.

mod builder;
mod by_path;
mod guard;
mod inner;
mod inspect;
pub(crate) mod layout;
mod lifetime;
mod map;
pub(crate) mod protocol;
mod registry;

#[cfg(all(test, loom))]
mod model;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use builder::PoolBuilder;
use builder::{close_if_unused, unlink_if_same};
pub use by_path::{clean_path, inspect, inspect_path, reclaim_path, CleanReport};
pub use guard::{Buffer, BufferMut, BufferRef, Peer};
pub(crate) use inner::{HintBatching, LocalEntry, PoolInner};
use inner::{KeptHints, Parked};
pub use inspect::{BufferInfo, BufferStatus, PoolSnapshot, ProcessInfo};
pub use layout::{
    DeviceKind, DeviceRecord, PoolConfig, Storage, MAX_BUFFERS, MAX_PROCESSES, MAX_USER_METADATA,
};
pub use registry::{ReclaimReport, SlotState};

use self::layout::{PoolHeader, PoolLayout, LAYOUT_VERSION};
use self::lifetime::InnerPtr;
use self::map::{open_spec, PoolMap};
use self::protocol::{slot_bit, Access, Deferred, GetError, LocalCells, SharedCells};
use self::registry::AttachError;
use crate::error::{Error, Result};
use crate::object::{self, CreateOutcome, CreateSpec, ObjectKind, OpenObject};
use crate::os::{futex, process, ProcessIdentity, ShmDir, ShmFile};

/// How long a blocked acquire sleeps before it looks for dead holders again.
const PARK_SLICE: Duration = Duration::from_millis(50);

/// Default spin before parking: a futex round trip costs tens of µs on a VM.
const DEFAULT_SPIN: Duration = Duration::from_micros(5);

fn reuse(file: &ShmFile) -> Result<Option<BufferPool>> {
    let key = file.identity()?;
    Ok(lifetime::reuse(key, ProcessIdentity::current().pid).map(|ptr| BufferPool { ptr }))
}

/// A handle to a shared buffer pool. Cheap to clone; `Send` and `Sync`.
///
/// Handles and guards keep the pool's mapping alive, so dropping the handle before its guards is
/// fine. Do not use a handle across `fork`: open the pool again in the child.
pub struct BufferPool {
    ptr: InnerPtr,
}

impl Clone for BufferPool {
    fn clone(&self) -> Self {
        lifetime::clone_handle(self.ptr);
        BufferPool { ptr: self.ptr }
    }
}

impl Drop for BufferPool {
    fn drop(&mut self) {
        lifetime::drop_handle(self.ptr);
    }
}

impl std::fmt::Debug for BufferPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferPool")
            .field("name", &self.name())
            .field("config", &self.config())
            .field("slot", &self.inner().slot)
            .finish()
    }
}

impl BufferPool {
    /// Starts configuring a pool called `name`.
    pub fn builder(name: &str) -> PoolBuilder {
        PoolBuilder::new(Some(name))
    }

    /// Starts configuring an anonymous pool (see [`PoolBuilder::create_anonymous`]).
    pub fn anonymous() -> PoolBuilder {
        PoolBuilder::new(None)
    }

    /// Opens the existing pool called `name`, with default settings.
    pub fn open(name: &str) -> Result<BufferPool> {
        Self::builder(name).open()
    }

    /// Opens an anonymous pool from a descriptor another process handed over.
    pub fn from_fd(fd: std::os::fd::OwnedFd) -> Result<BufferPool> {
        let file = ShmFile::from_fd(fd)?;
        if let Some(pool) = reuse(&file)? {
            return Ok(pool);
        }
        let b = PoolBuilder::new(None);
        let obj = object::open_file(file, &open_spec(true, b.prefault, b.open_timeout))?;
        b.finish_open(obj, None)
    }

    /// Removes the name of pool `name` now; processes that have it open keep using it.
    pub fn remove(name: &str) -> Result<bool> {
        crate::os::shm::unlink(&object::path_of(&ShmDir::default(), name)?).map_err(Error::from)
    }

    fn inner(&self) -> &PoolInner {
        // SAFETY: this handle keeps the attachment alive (see `lifetime`).
        unsafe { self.ptr.0.as_ref() }
    }

    /// The pool's name (`anonymous` for an anonymous pool).
    pub fn name(&self) -> &str {
        &self.inner().map.label
    }

    /// The pool's file (`memfd:…` for an anonymous pool).
    pub fn path(&self) -> &Path {
        self.inner().map.path()
    }

    /// A duplicate of the pool's descriptor, to hand an anonymous pool to another process.
    pub fn fd(&self) -> Result<std::os::fd::OwnedFd> {
        self.inner().map.object.file.try_clone_fd().map_err(Error::from)
    }

    /// Count, size and alignment of the buffers.
    pub fn config(&self) -> PoolConfig {
        self.inner().map.layout.config
    }

    /// Number of buffers.
    pub fn buffer_count(&self) -> u32 {
        self.config().count
    }

    /// Bytes per buffer.
    pub fn buffer_size(&self) -> u64 {
        self.config().size
    }

    /// The pool instance's random identity (tokens carry its low 32 bits).
    pub fn pool_id(&self) -> u64 {
        self.inner().map.pool_id
    }

    /// Where the buffers' bytes live.
    pub fn storage(&self) -> Storage {
        self.inner().map.storage
    }

    /// A device pool's allocation, as its header records it; `None` for host storage.
    pub fn device(&self) -> Option<DeviceRecord> {
        self.inner().map.device
    }

    /// Distance between consecutive buffers: in the arena, or in a device allocation.
    pub fn stride(&self) -> u64 {
        self.inner().map.layout.stride
    }

    /// Pids of the other live processes attached now (a device pool's attacher asks them for
    /// the allocation's descriptor).
    pub fn attached_peers(&self) -> Vec<u32> {
        let me = std::process::id();
        registry::live_pids(&self.inner().map)
            .into_iter()
            .filter(|&pid| pid != me)
            .collect()
    }

    /// Who may open the pool's file (owner, group, mode): whom a device pool's descriptor
    /// broker admits.
    pub fn admission(&self) -> Result<crate::os::fdpass::Admission> {
        Ok(self.inner().map.object.file.admission()?)
    }

    /// Buffers no process holds right now (a snapshot).
    pub fn free_count(&self) -> u32 {
        self.inner().map.free_count()
    }

    /// How many processes have a thread parked in a blocking acquire right now.
    pub fn waiting_processes(&self) -> u32 {
        self.inner().map.wake().parked.load(SeqCst).count_ones()
    }

    /// This process's slot in the pool's process table.
    pub fn process_slot(&self) -> usize {
        self.inner().slot
    }

    /// Takes a free buffer for writing, or fails with [`Error::PoolExhausted`] at once.
    #[inline]
    pub fn try_acquire(&self) -> Result<BufferMut> {
        self.check_writable()?;
        match self.take() {
            Some(b) => Ok(b),
            None => self.try_acquire_slow(),
        }
    }

    #[cold]
    fn try_acquire_slow(&self) -> Result<BufferMut> {
        if let Some(b) = self.take_unhinted() {
            return Ok(b);
        }
        // A dead holder never releases: reclaim before declaring the pool exhausted.
        if !self.inner().sweep().is_empty() {
            if let Some(b) = self.take() {
                return Ok(b);
            }
        }
        Err(Error::PoolExhausted {
            pool: self.name().to_string(),
            count: self.buffer_count(),
        })
    }

    /// Takes a free buffer for writing, waiting as long as it takes.
    pub fn acquire(&self) -> Result<BufferMut> {
        self.acquire_until(None)
    }

    /// Takes a free buffer for writing, waiting at most `timeout` ([`Error::Timeout`] after).
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<BufferMut> {
        self.acquire_until(Some((Instant::now() + timeout, timeout)))
    }

    /// Refuses write access on a stream subscriber's attachment, whose buffers are mapped
    /// read-only (a write would fault).
    #[inline]
    fn check_writable(&self) -> Result<()> {
        if self.inner().read_only {
            return Err(Error::ReadOnly {
                pool: self.name().to_string(),
            });
        }
        Ok(())
    }

    /// One pass over the free hints; no system call, no allocation.
    #[inline]
    fn take(&self) -> Option<BufferMut> {
        let inner = self.inner();
        let start = if inner.map.hint_words().len() > 1 {
            inner.cursor.fetch_add(1, Relaxed)
        } else {
            0
        };
        let (index, generation) = protocol::try_acquire(&inner.map, inner, inner.me, start)?;
        Some(BufferMut::fresh(self.ptr, index, generation))
    }

    /// After [`BufferPool::take`] found no hint: free buffers whose hints a process keeps back
    /// (see [`HintBatching`]) are found through their holder words.
    #[cold]
    fn take_unhinted(&self) -> Option<BufferMut> {
        let inner = self.inner();
        protocol::give_back_claimed(&inner.map, inner);
        if protocol::find_unhinted(&inner.map) == 0 {
            return None;
        }
        self.take()
    }

    /// Batches this process's work on the free hints (see [`HintBatching`]); for streams.
    pub(crate) fn batch_hints(&self, how: HintBatching) {
        let inner = self.inner();
        // First: from now on, acquirers that find no hint look at the holder words.
        protocol::set_keep_back(&inner.map, inner.me);
        match how {
            HintBatching::Defer(batch) => inner.kept.defer_batch.store(batch.max(2), Relaxed),
            HintBatching::Claim => inner.kept.claiming.store(true, Relaxed),
        }
    }

    /// Publishes the hints this process deferred (a subscriber whose queue ran empty: the
    /// publisher may be about to need them).
    #[inline]
    pub(crate) fn publish_deferred_hints(&self) {
        let inner = self.inner();
        if inner.kept.deferred_count.load(Relaxed) != 0 {
            protocol::flush_deferred(&inner.map, inner);
        }
    }

    fn acquire_until(&self, deadline: Option<(Instant, Duration)>) -> Result<BufferMut> {
        self.check_writable()?;
        if let Some(b) = self.take() {
            return Ok(b);
        }
        // Spin briefly: a release is often only nanoseconds away, a futex round trip is not.
        let spin_end = Instant::now() + self.inner().spin;
        loop {
            for _ in 0..16 {
                std::hint::spin_loop();
            }
            if let Some(b) = self.take() {
                return Ok(b);
            }
            if Instant::now() >= spin_end {
                break;
            }
        }
        if let Some(b) = self.take_unhinted() {
            return Ok(b);
        }
        if !self.inner().sweep().is_empty() {
            if let Some(b) = self.take() {
                return Ok(b);
            }
        }
        self.park(deadline)
    }

    fn park(&self, deadline: Option<(Instant, Duration)>) -> Result<BufferMut> {
        let inner = self.inner();
        let _parked = Parked::enter(inner);
        let wake_seq = &inner.map.wake().wake_seq;
        loop {
            let seen = wake_seq.load(SeqCst);
            if let Some(b) = self.take().or_else(|| self.take_unhinted()) {
                return Ok(b);
            }
            let slice = match deadline {
                Some((at, waited)) => {
                    let now = Instant::now();
                    if now >= at {
                        inner.map.slots()[inner.slot].timeouts.fetch_add(1, Relaxed);
                        return Err(Error::Timeout {
                            pool: self.name().to_string(),
                            waited,
                            holders: self.describe_holders(),
                        });
                    }
                    (at - now).min(PARK_SLICE)
                }
                None => PARK_SLICE,
            };
            if futex::wait(wake_seq, seen, slice) == futex::WaitResult::TimedOut && slice == PARK_SLICE {
                // Nobody released for a while; perhaps a holder died.
                inner.sweep();
            }
        }
    }

    /// Takes a read-only reference to the buffer a token names.
    #[inline]
    ///
    /// Fails with [`Error::StaleRef`] if the buffer has been released and reused since, and with
    /// [`Error::Busy`] while its writer has not frozen it.
    pub fn get(&self, token: BufferRef) -> Result<Buffer> {
        self.take_ref(token, Access::Read)?;
        Ok(Buffer::new(self.ptr, token.index(), token.generation()))
    }

    /// Takes exclusive write access to the buffer a token names. Succeeds only if this process
    /// would be its only holder: typically a buffer [handed](BufferMut::send) to this process.
    pub fn get_mut(&self, token: BufferRef) -> Result<BufferMut> {
        self.check_writable()?;
        self.take_ref(token, Access::Write)?;
        Ok(BufferMut::adopt(self.ptr, token.index(), token.generation()))
    }

    #[inline]
    fn take_ref(&self, token: BufferRef, access: Access) -> Result<()> {
        self.check_token(token)?;
        let inner = self.inner();
        match protocol::get(
            &inner.map,
            inner,
            inner.me,
            token.index(),
            token.generation(),
            access,
        ) {
            Ok(()) => Ok(()),
            Err(e) => Err(get_error(token, e)),
        }
    }

    /// Two comparisons on the hot path; the error is built out of line.
    #[inline]
    fn check_token(&self, token: BufferRef) -> Result<()> {
        let map = &self.inner().map;
        if token.pool_tag() != map.pool_id as u32 || token.index() >= map.layout.config.count {
            return Err(self.token_error(token));
        }
        Ok(())
    }

    #[cold]
    fn token_error(&self, token: BufferRef) -> Error {
        if token.pool_tag() != self.inner().map.pool_id as u32 {
            Error::WrongPool {
                reference: token.to_string(),
                pool: self.name().to_string(),
            }
        } else {
            Error::InvalidIndex {
                index: token.index(),
                count: self.buffer_count(),
                pool: self.name().to_string(),
            }
        }
    }

    /// Drops one reference kept by [`Buffer::into_raw`] (or handed to this process and never
    /// taken). Fails with [`Error::DoubleRelease`] if this process holds none.
    pub fn release_raw(&self, token: BufferRef) -> Result<()> {
        self.check_token(token)?;
        let inner = self.inner();
        let index = token.index();
        let entry = &inner.local[index as usize];
        let held_here = entry.state.load(Acquire) & protocol::LOCAL_COUNT > 0;
        let generation = if held_here {
            entry.generation.load(Relaxed)
        } else {
            inner.map.generation(index).load(Acquire)
        };
        if generation != token.generation() {
            return Err(Error::StaleRef {
                reference: token.to_string(),
                current: Some(generation),
            });
        }
        protocol::release(&inner.map, inner, inner.me, index)
            .map(|_| ())
            .map_err(|_| Error::DoubleRelease {
                index,
                pool: self.name().to_string(),
            })
    }

    /// The process attached with `pid`, to hand buffers to.
    pub fn peer(&self, pid: u32) -> Result<Peer> {
        self.inner()
            .map
            .slots()
            .iter()
            .enumerate()
            .find_map(|(slot, s)| {
                let word = s.owner.load(Acquire);
                let owner = registry::Owner::decode(word);
                (owner.state == SlotState::Active && owner.pid == pid && slot != self.inner().slot)
                    .then_some(Peer::new(slot, pid, word))
            })
            .ok_or_else(|| Error::PeerNotAttached {
                pid,
                pool: self.name().to_string(),
            })
    }

    /// Returns the references of every dead process to the pool.
    ///
    /// Runs by itself when a pool is opened, before an acquire blocks, and every 50 ms while it
    /// stays blocked; call it to be prompt after a known crash.
    pub fn reclaim(&self) -> ReclaimReport {
        self.inner().sweep()
    }

    /// A consistent-enough picture of the pool for people (`xmem inspect`).
    pub fn snapshot(&self) -> PoolSnapshot {
        inspect::snapshot(&self.inner().map)
    }

    fn describe_holders(&self) -> String {
        let snap = self.snapshot();
        let mut parts: Vec<String> = snap
            .processes
            .iter()
            .map(|p| {
                let held = snap
                    .buffers
                    .iter()
                    .filter(|b| b.holder_slots.contains(&p.slot))
                    .count();
                format!(
                    "pid {} ({}) holds {held}",
                    p.pid,
                    p.command.as_deref().unwrap_or("?")
                )
            })
            .collect();
        if parts.is_empty() {
            parts.push("nobody (the pool may be corrupt)".into());
        }
        parts.join(", ")
    }
}

/// What streams (`crate::stream`) need from a pool: private attachments for subscribers, and
/// deliveries that hand a written buffer to several of them in one store.
impl BufferPool {
    /// A new attachment of this process with its own slot, managed by `manager` (the stream's
    /// publisher): what a subscriber holds is told apart from everything else of this process,
    /// and its slot is not re-used while the publisher may still deliver to it. It only reads
    /// buffers: they are mapped read-only.
    pub(crate) fn attach_managed(&self, manager: ProcessIdentity) -> Result<BufferPool> {
        self.attach_private(manager, true)
    }

    fn attach_private(&self, manager: ProcessIdentity, read_only: bool) -> Result<BufferPool> {
        let inner = self.inner();
        let file = ShmFile::from_fd(inner.map.object.file.try_clone_fd()?)?;
        let mut b = PoolBuilder::new(Some(self.name()));
        b.manager = registry::manager_word(Some(manager));
        b.read_only = read_only;
        b.spin = inner.spin;
        let obj = object::open_file(file, &open_spec(true, b.prefault, b.open_timeout))?;
        b.finish_open(obj, inner.path.clone())
    }

    /// This attachment (to check that a guard belongs to it).
    pub(crate) fn attachment_ptr(&self) -> std::ptr::NonNull<PoolInner> {
        self.ptr.0
    }

    /// Gives up managing slots: the publisher that managed them is done, so their next detach
    /// or reclaim frees them, and retired ones are freed now.
    pub(crate) fn unmanage_all(&self) {
        let inner = self.inner();
        registry::unmanage(&inner.map, inner.identity);
    }

    /// Returns references delivered to this (private) attachment that no queue entry names any
    /// more and no guard holds (a publisher died between delivering and queueing). Only sound
    /// once nothing more can be delivered to this attachment.
    pub(crate) fn drop_unclaimed_deliveries(&self) {
        let inner = self.inner();
        for index in 0..inner.map.layout.config.count {
            let h = inner.map.state(index).holders.load(Acquire);
            if h & inner.me != 0 && h & protocol::WRITER == 0 {
                let _ = protocol::drop_delivered(&inner.map, inner, inner.me, index);
            }
        }
        guard::after_release();
    }

    /// The identity of this process as the pool records it.
    pub(crate) fn identity(&self) -> ProcessIdentity {
        self.inner().identity
    }

    /// State of process slot `slot`, and whether `manager` manages it.
    pub(crate) fn slot_state(&self, slot: usize, manager: ProcessIdentity) -> (SlotState, bool) {
        let s = &self.inner().map.slots()[slot];
        let state = registry::Owner::decode(s.owner.load(Acquire)).state;
        (
            state,
            s.manager.load(Acquire) == registry::manager_word(Some(manager)),
        )
    }

    /// Frees a RETIRED slot this process manages. Returns whether it did.
    pub(crate) fn release_retired(&self, slot: usize) -> bool {
        let inner = self.inner();
        registry::release_retired(&inner.map, slot, inner.identity)
    }

    /// Hands a written buffer to the slots in `to`; with `keep`, this process keeps a read
    /// reference, returned as a guard. The caller ensures `to` names no slot of another process
    /// than those it may deliver to (its managed subscribers').
    #[inline]
    pub(crate) fn deliver(&self, frame: BufferMut, to: u64, keep: bool) -> Option<Buffer> {
        debug_assert!(frame.pool_ptr() == self.ptr.0);
        let inner = self.inner();
        let (index, generation) = (frame.index(), frame.generation());
        if to == 0 && !keep {
            drop(frame); // nobody to give it to: free it
            return None;
        }
        std::mem::forget(frame);
        protocol::share_written(&inner.map, inner, inner.me, index, to, keep);
        if !keep {
            guard::after_release();
        }
        keep.then(|| Buffer::new(self.ptr, index, generation))
    }

    /// Takes up a reference delivered to this (private) attachment.
    #[inline]
    pub(crate) fn adopt_delivered(&self, index: u32, generation: u64) -> Result<Buffer> {
        let inner = self.inner();
        if index >= inner.map.layout.config.count {
            return Err(self.token_error(BufferRef::new(inner.map.pool_id as u32, index, generation)));
        }
        match protocol::adopt_delivered(&inner.map, inner, inner.me, index, generation) {
            Ok(()) => Ok(Buffer::new(self.ptr, index, generation)),
            Err(e) => Err(get_error(
                BufferRef::new(inner.map.pool_id as u32, index, generation),
                e,
            )),
        }
    }

    /// Drops a delivered reference never taken up (a subscriber leaving).
    pub(crate) fn drop_delivered(&self, index: u32) {
        let inner = self.inner();
        if index < inner.map.layout.config.count {
            let _ = protocol::drop_delivered(&inner.map, inner, inner.me, index);
            guard::after_release();
        }
    }

    /// Takes back a reference delivered to the managed slot `bit` that its subscriber never took
    /// up (a frame dropped from its queue). Only the slot's manager may call this.
    pub(crate) fn revoke_delivered(&self, bit: u64, index: u32) {
        let inner = self.inner();
        if index < inner.map.layout.config.count {
            let _ = protocol::remove_holder(&inner.map, bit, index);
        }
    }
}

#[cold]
fn get_error(token: BufferRef, e: GetError) -> Error {
    match e {
        GetError::Free => Error::StaleRef {
            reference: token.to_string(),
            current: None,
        },
        GetError::Stale { current } => Error::StaleRef {
            reference: token.to_string(),
            current: Some(current),
        },
        GetError::Busy(reason) => Error::Busy {
            index: token.index(),
            reason,
        },
        GetError::TooManyRefs => Error::Busy {
            index: token.index(),
            reason: "this process holds 2^30 - 1 references to it",
        },
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn pool_of(buffers: u32) -> BufferPool {
        BufferPool::anonymous()
            .buffers(buffers)
            .buffer_size(64)
            .create_anonymous()
            .unwrap()
    }

    #[test]
    fn an_anonymous_pool_cannot_be_truncated_under_its_users() {
        let pool = pool_of(2);
        let fd = pool.fd().unwrap();
        let file = std::fs::File::from(fd);
        let size = file.metadata().unwrap().len();
        for wrong in [0, size / 2, size * 2] {
            let e = file.set_len(wrong).unwrap_err();
            assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
        }
        let mut b = pool.acquire().unwrap();
        b.bytes_mut().fill(1);
    }

    #[test]
    fn a_holder_word_scribbled_to_free_under_our_own_reference_is_not_waited_on() {
        let pool = pool_of(1);
        let held = pool.acquire().unwrap().freeze();
        // Another process writes: the holder word reads free, and a hint says so. The buffer
        // is this process's, so taking it would wait for our own reference to go: never.
        pool.inner().map.holders(0).store(0, SeqCst);
        pool.inner().map.hint_words()[0].fetch_or(1, SeqCst);
        let start = Instant::now();
        let e = pool.acquire_timeout(Duration::from_millis(20)).unwrap_err();
        assert!(matches!(e, Error::Timeout { .. }), "{e}");
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
        // Left as found: our reference still reads, and goes.
        assert_eq!(held.bytes().len(), 64);
        drop(held);
    }

    /// Another attachment of this process with its own slot, as a stream's subscriber has.
    fn second(pool: &BufferPool) -> BufferPool {
        pool.attach_managed(pool.identity()).unwrap()
    }

    fn hint_bits(pool: &BufferPool) -> u64 {
        pool.inner().map.hint_words()[0].load(SeqCst)
    }

    /// Frees buffer `frame` through `sub`, as a subscriber dropping a delivered frame does.
    fn free_through(pool: &BufferPool, sub: &BufferPool, frame: BufferMut) -> u32 {
        let (index, generation) = (frame.index(), frame.generation());
        let to = slot_bit(sub.process_slot());
        assert!(pool.deliver(frame, to, false).is_none());
        drop(sub.adopt_delivered(index, generation).unwrap());
        index
    }

    #[test]
    fn a_buffer_whose_hint_another_attachment_defers_is_still_acquired() {
        let pool = pool_of(2);
        let sub = second(&pool);
        sub.batch_hints(HintBatching::Defer(4));
        let kept = pool.try_acquire().unwrap();
        let index = free_through(&pool, &sub, pool.try_acquire().unwrap());
        assert_eq!(pool.free_count(), 1);
        assert_eq!(hint_bits(&pool), 0, "the freed buffer's hint is kept back");
        let again = pool.try_acquire().expect("found through its holder word");
        assert_eq!(again.index(), index);
        assert!(matches!(pool.try_acquire(), Err(Error::PoolExhausted { .. })));
        drop((kept, again, sub));
        assert_eq!(pool.free_count(), 2);
    }

    #[test]
    fn a_subscriber_attachment_publishes_its_deferred_hints_in_batches_and_when_it_detaches() {
        let pool = pool_of(8);
        let sub = second(&pool);
        sub.batch_hints(HintBatching::Defer(3));
        let frames: Vec<BufferMut> = (0..8).map(|_| pool.try_acquire().unwrap()).collect();
        let mut freed = 0u64;
        for (n, frame) in frames.into_iter().enumerate() {
            freed |= 1 << free_through(&pool, &sub, frame);
            // The third free of a batch publishes all three; the fourth starts a new batch.
            let expect = if n < 2 {
                0
            } else if n < 5 {
                freed & 0b111
            } else {
                freed & 0b11_1111
            };
            assert_eq!(hint_bits(&pool), expect, "after free {n}");
        }
        drop(sub);
        assert_eq!(hint_bits(&pool), 0xff, "detaching publishes what was kept");
        assert_eq!(pool.inner().map.wake().keep_back.load(SeqCst), 0);
    }

    #[test]
    fn hints_one_attachment_claimed_do_not_hide_free_buffers_from_another() {
        let pool = pool_of(3);
        pool.batch_hints(HintBatching::Claim);
        let mine = pool.try_acquire().unwrap();
        assert_eq!(hint_bits(&pool), 0, "one swap claimed every hint");
        // A second attachment that writes (a subscriber's, from `second`, only reads).
        let other = pool.attach_private(pool.identity(), false).unwrap();
        let a = other
            .try_acquire()
            .expect("a free buffer claimed by another attachment");
        let b = other.try_acquire().expect("the last free buffer");
        let mut taken = [mine.index(), a.index(), b.index()];
        taken.sort();
        assert_eq!(taken, [0, 1, 2], "no buffer was handed out twice");
        assert!(matches!(other.try_acquire(), Err(Error::PoolExhausted { .. })));
        drop((a, b, mine));
        // The claiming attachment's cache names buffers taken meanwhile: stale, and dropped.
        let all: Vec<BufferMut> = (0..3).map(|_| pool.try_acquire().unwrap()).collect();
        assert!(matches!(pool.try_acquire(), Err(Error::PoolExhausted { .. })));
        drop((all, other));
    }
}
