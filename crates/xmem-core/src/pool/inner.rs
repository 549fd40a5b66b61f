//! One attachment's private state ([`PoolInner`]): its slot, its per-buffer local words, the
//! hints it keeps back, and detaching when its last handle goes.

use super::*;

/// A process's private words for one buffer (see [`protocol`]).
#[derive(Debug, Default)]
pub(crate) struct LocalEntry {
    pub(super) state: AtomicU64,
    pub(super) generation: AtomicU64,
}

/// One process's attachment to one pool; shared by every handle and guard in the process.
#[derive(Debug)]
pub(crate) struct PoolInner {
    pub(super) map: PoolMap,
    pub(super) path: Option<PathBuf>,
    pub(super) slot: usize,
    pub(super) me: u64,
    pub(super) identity: ProcessIdentity,
    pub(super) local: Box<[LocalEntry]>,
    /// Number of this process's threads parked on this pool.
    pub(super) parking: Mutex<u32>,
    pub(super) spin: Duration,
    pub(super) cursor: AtomicUsize,
    /// Live [`BufferPool`] handles on this attachment (see [`lifetime`]).
    pub(super) handles: AtomicUsize,
    /// A stream subscriber's own attachment: never re-used by `open`, so that only its stream
    /// delivers to its slot.
    pub(super) private: bool,
    /// Buffers mapped read-only, write access refused (a stream subscriber's attachment).
    pub(super) read_only: bool,
    /// (device, inode) of the pool's file.
    pub(super) key: (u64, u64),
    /// Free hints this process keeps back (see [`HintBatching`]).
    pub(super) kept: KeptHints,
}

/// How a process batches its work on the shared free hints (the protocol's "Hints kept back"):
/// a stream's subscriber defers the hints of the buffers it frees, its publisher claims them a
/// word at a time. Both save a locked instruction per frame on a line the other core wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HintBatching {
    /// Frees publish their hints in batches of this many (at least 2).
    Defer(u32),
    /// Acquires claim a whole word of hints at once.
    Claim,
}

/// The process-local side of [`HintBatching`], per hint word.
#[derive(Debug)]
pub(super) struct KeptHints {
    /// Deferred hints: buffers this process freed that no hint names yet.
    pub(super) deferred: Box<[AtomicU64]>,
    /// How many are deferred (approximately: it only decides when to publish).
    pub(super) deferred_count: AtomicU32,
    /// Publish deferred hints once this many are kept; 0 while not deferring.
    pub(super) defer_batch: AtomicU32,
    /// Hints claimed a word at a time and not used yet.
    pub(super) claimed: Box<[AtomicU64]>,
    /// Whether acquires claim a word of hints at a time.
    pub(super) claiming: std::sync::atomic::AtomicBool,
}

impl KeptHints {
    pub(super) fn new(words: usize) -> Self {
        KeptHints {
            deferred: (0..words).map(|_| AtomicU64::new(0)).collect(),
            deferred_count: AtomicU32::new(0),
            defer_batch: AtomicU32::new(0),
            claimed: (0..words).map(|_| AtomicU64::new(0)).collect(),
            claiming: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl LocalCells for PoolInner {
    type W64 = AtomicU64;
    type W32 = AtomicU32;
    #[inline(always)]
    fn state(&self, index: u32) -> &AtomicU64 {
        &self.entry(index).state
    }
    #[inline(always)]
    fn generation(&self, index: u32) -> &AtomicU64 {
        &self.entry(index).generation
    }
    #[inline]
    fn defer_hint(&self, index: u32) -> Deferred {
        let batch = self.kept.defer_batch.load(Relaxed);
        if batch == 0 {
            return Deferred::No;
        }
        let word = (index / 64) as usize;
        // Process-local words: no other core writes them while this process works.
        self.kept.deferred[word].fetch_or(1 << (index % 64), Relaxed);
        if self.kept.deferred_count.fetch_add(1, Relaxed) + 1 >= batch {
            Deferred::Full
        } else {
            Deferred::Kept
        }
    }
    #[inline]
    fn take_deferred(&self, word: usize) -> u64 {
        let cell = &self.kept.deferred[word];
        if cell.load(Relaxed) == 0 {
            return 0;
        }
        let bits = cell.swap(0, Relaxed);
        let _ = self
            .kept
            .deferred_count
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(bits.count_ones())));
        bits
    }
    #[inline(always)]
    fn claimed(&self, word: usize) -> Option<&AtomicU64> {
        if self.kept.claiming.load(Relaxed) {
            self.kept.claimed.get(word)
        } else {
            None
        }
    }
}

impl PoolInner {
    /// This process's words for buffer `index` (validated as for `PoolMap::state`).
    #[inline(always)]
    pub(super) fn entry(&self, index: u32) -> &LocalEntry {
        debug_assert!((index as usize) < self.local.len());
        // SAFETY: `local` has one entry per buffer and callers pass only validated indices.
        unsafe { self.local.get_unchecked(index as usize) }
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        self.publish_kept_hints();
        // Dead processes would keep the registry non-empty and the pool's name alive.
        registry::sweep(&self.map, self.identity, false);
        let named = self.path.is_some();
        let last = registry::detach(&self.map, self.slot, named);
        if let (true, Some(path)) = (last, &self.path) {
            if let Err(e) = unlink_if_same(path, &self.map) {
                tracing::warn!(pool = %self.map.label, error = %e, "could not remove the pool's file");
            }
        }
    }
}

impl PoolInner {
    /// Publishes every hint this process keeps back and stops keeping any (it detaches).
    pub(super) fn publish_kept_hints(&self) {
        if self.kept.defer_batch.swap(0, Relaxed) != 0 {
            protocol::flush_deferred(&self.map, self);
        }
        if self.kept.claiming.load(Relaxed) {
            protocol::give_back_claimed(&self.map, self);
            self.kept.claiming.store(false, Relaxed);
        }
        protocol::clear_keep_back(&self.map, self.me);
    }

    pub(super) fn sweep(&self) -> ReclaimReport {
        let report = registry::sweep(&self.map, self.identity, false);
        if report.references > 0 {
            self.map.slots()[self.slot]
                .reclaimed_refs
                .fetch_add(report.references, Relaxed);
        }
        report
    }
}

/// This thread is parked on the pool: keeps the process's `parked` bit set meanwhile.
pub(super) struct Parked<'a>(pub(super) &'a PoolInner);

impl<'a> Parked<'a> {
    pub(super) fn enter(inner: &'a PoolInner) -> Self {
        let mut n = inner.parking.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        if *n == 1 {
            protocol::set_parked(&inner.map, inner.me);
        }
        inner.map.slots()[inner.slot].waits.fetch_add(1, Relaxed);
        Parked(inner)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        let mut n = self.0.parking.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        if *n == 0 {
            protocol::clear_parked(&self.0.map, self.0.me);
        }
    }
}
