//! The pool's lock-free reference protocol, free of system calls and of the memory layout.
//!
//! # The truth word
//!
//! Each buffer has one 64-bit *holder word*: bit `s` (0..63) says that the process in slot `s`
//! holds at least one reference; bit 63 ([`WRITER`]) says that the one holder has exclusive write
//! access. `0` means free. A separate 64-bit *generation* counts the buffer's lives; tokens carry
//! it, so a token outliving its buffer's life is detected.
//!
//! How *many* references a process holds is private to that process (its local state word per
//! buffer: the count, WRITE while the one reference is a write guard, BUSY plus the moving
//! thread's token while a thread moves the count between 0 and 1). Only the 0↔1 transitions of
//! that count touch the shared word, each with one atomic operation.
//!
//! # Why this survives `kill -9` at any instruction
//!
//! Every change of the shared truth is one atomic operation on one holder word, and a holder
//! word alone tells a reclaimer what a dead process held: its bit. Clearing that bit (one CAS)
//! returns exactly the dead process's reference, whether it died before, during or after
//! updating its private count, which dies with it. A reclaimer and a live holder contend on the
//! same CAS, so the last reference is dropped exactly once and the buffer freed exactly once.
//!
//! # The free list
//!
//! Free buffers are found through a bitmap of *free hints*. A hint is advisory: whoever claims
//! one must still win the CAS `0 → WRITER|me` on the holder word, so a stale hint is harmless,
//! a buffer can never be handed out twice (no ABA: the holder word, not a list link, is what is
//! compared), and a hint lost by a process that died between two steps is rebuilt from the holder
//! words by [`rebuild_hints`]. A double release cannot corrupt anything: releasing requires the
//! caller's bit to be set, and is reported when it is not.
//!
//! # Single-writer words
//!
//! While WRITER is set the holder word has exactly one writer, its holder: getters fail without
//! writing, acquirers need it to be 0, reclaimers only clear bits of dead processes (the writer
//! lives), and hand-offs need a holder. The local state word of a write guard (`1|WRITE`) is not
//! changed by any other thread either: getters see WRITE and fail, acquirers need it to be 0. So
//! freezing, a writer's release and a writer's hand-off are plain stores.
//!
//! An acquirer sets its local word with a plain store too, after waiting until it reads 0. The
//! one thread that could write that word meanwhile is one of ours trying a stale token, which
//! takes BUSY from 0 and would be overwritten; its BUSY carries its thread token and it leaves
//! only by `CAS(its BUSY → 0)`, which then fails harmlessly and can never clear another thread's
//! BUSY. So acquire plus drop cost three locked instructions: claim a hint, take the holder word,
//! publish the hint.
//!
//! # Hints kept back
//!
//! The hint bitmap is one line that every acquire and every freeing release writes: between a
//! publisher and a subscriber on two cores, two locked instructions per frame on a line the other
//! core wrote last. A process may therefore keep hints back for a while: a subscriber *defers*
//! the hints of the buffers it frees and publishes them in batches ([`flush_deferred`]); a
//! publisher *claims* a whole word of hints with one swap and uses them one by one from a
//! process-local cache. Meanwhile a free buffer has no visible hint, which a hint, being advisory,
//! was always allowed to lack. What keeps such a buffer from being lost:
//!
//! - a process that may keep hints back sets its bit in `keep_back` first (its detach or its
//!   reclaim clears it); while `keep_back` is not 0, an acquirer that finds no hint looks at the
//!   holder words themselves ([`find_unhinted`]) before it reports exhaustion or sleeps;
//! - a deferring release empties the holder word and then reads `parked` (both `SeqCst`): either
//!   a parking waiter's look at the holder words sees the free buffer, or the release sees the
//!   waiter and publishes all it kept back, and wakes it (Dekker, as below);
//! - a process that dies loses only hints, which the reclaim rebuilds ([`rebuild_hints`]); a
//!   buffer is still handed out only by the CAS on its holder word, so a hint published twice is
//!   a stale hint, dropped by whoever claims it.
//!
//! # Waiting
//!
//! A thread that must park sets its process's bit in `parked` and sleeps on the futex word
//! `wake_seq`. A release that frees a buffer bumps `wake_seq` and wakes one waiter only if
//! `parked` is non-zero; all four operations are `SeqCst`, so either the waiter sees the free
//! buffer before sleeping or the releaser sees the waiter (Dekker).

use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release, SeqCst};

use crate::sync::{backoff, seqcst_store_load, thread_token, Word32, Word64};

/// Holder-word bit: the single holder has exclusive write access.
pub(crate) const WRITER: u64 = 1 << 63;
/// Holder-word bits naming process slots.
pub(crate) const HOLDERS: u64 = !WRITER;

/// Local state: number of references this process holds.
pub(crate) const LOCAL_COUNT: u64 = (1 << 30) - 1;
/// Local state: the one reference is the exclusive writer.
pub(crate) const LOCAL_WRITE: u64 = 1 << 30;
/// Local state: a thread is moving the count between 0 and 1 (others wait); bits 32.. name it.
pub(crate) const LOCAL_BUSY: u64 = 1 << 31;

/// This thread's BUSY value: the flag plus its token, so only it can clear it.
#[inline]
fn busy() -> u64 {
    LOCAL_BUSY | (u64::from(thread_token()) << 32)
}

/// The holder-word bit of process slot `slot`.
pub(crate) fn slot_bit(slot: usize) -> u64 {
    debug_assert!(slot < 63);
    1 << slot
}

/// The shared words the protocol works on.
pub(crate) trait SharedCells {
    /// 64-bit word type.
    type W64: Word64;
    /// 32-bit word type.
    type W32: Word32;
    /// Number of buffers.
    fn count(&self) -> u32;
    /// Buffer `index`'s holder word.
    fn holders(&self, index: u32) -> &Self::W64;
    /// Buffer `index`'s generation.
    fn generation(&self, index: u32) -> &Self::W64;
    /// The free-hint bitmap.
    fn hints(&self) -> &[Self::W64];
    /// Bitmask of process slots with parked threads.
    fn parked(&self) -> &Self::W64;
    /// Bitmask of process slots that may keep free hints back (see "Hints kept back").
    fn keep_back(&self) -> &Self::W64;
    /// The futex word waiters sleep on.
    fn wake_seq(&self) -> &Self::W32;
    /// Wakes one parked thread (a futex wake; nothing in the model).
    fn wake_one(&self);
}

/// The calling process's private words, per buffer.
pub(crate) trait LocalCells {
    /// 64-bit word type.
    type W64: Word64;
    /// 32-bit word type.
    type W32: Word32;
    /// `count | LOCAL_WRITE | LOCAL_BUSY | token << 32`.
    fn state(&self, index: u32) -> &Self::W64;
    /// The generation of the life this process holds (valid while it holds it).
    fn generation(&self, index: u32) -> &Self::W64;
    /// Keeps back the hint of buffer `index`, which this process just freed (see "Hints kept
    /// back"). The default publishes every hint at once.
    #[inline(always)]
    fn defer_hint(&self, _index: u32) -> Deferred {
        Deferred::No
    }
    /// Takes the hints kept back in hint word `word`.
    #[inline(always)]
    fn take_deferred(&self, _word: usize) -> u64 {
        0
    }
    /// This process's cache of hints claimed a word at a time, for hint word `word`; `None`:
    /// hints are claimed one by one.
    #[inline(always)]
    fn claimed(&self, _word: usize) -> Option<&Self::W64> {
        None
    }
}

/// What [`LocalCells::defer_hint`] did with a hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deferred {
    /// Nothing: publish it now.
    No,
    /// Kept back with others.
    Kept,
    /// Kept back, and the batch is full: publish them all now.
    Full,
}

/// Read or write access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Shared, read-only.
    Read,
    /// Exclusive, read-write.
    Write,
}

/// Why a `get` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GetError {
    /// The buffer is free: the token's life ended.
    Free,
    /// The buffer lives another life now.
    Stale {
        /// Its current generation.
        current: u64,
    },
    /// The access cannot be granted now.
    Busy(&'static str),
    /// This process holds 2^30 - 1 references already.
    TooManyRefs,
}

/// Outcome of dropping one reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Released {
    /// Other references remain.
    Kept,
    /// That was the last reference anywhere; the buffer is free again.
    Freed,
}

/// The caller holds no reference to release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotHeld;

/// Why a hand-off failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TransferError {
    /// The caller holds no reference.
    NotHeld,
    /// A recipient already holds (or was already handed) this buffer.
    RecipientHolds(u64),
}

fn hint_of(index: u32) -> (usize, u64) {
    ((index / 64) as usize, 1u64 << (index % 64))
}

/// Takes a free buffer for exclusive writing. Returns its index and new generation.
///
/// `start` picks the first hint word to look at, to spread contending acquirers.
#[inline]
pub(crate) fn try_acquire<C: SharedCells, L: LocalCells>(
    c: &C,
    l: &L,
    me: u64,
    start: usize,
) -> Option<(u32, u64)> {
    let hints = c.hints();
    let words = hints.len();
    // No division on the hot path: `start` is almost always 0 (pools of up to 64 buffers).
    let mut w = if start < words { start } else { start % words };
    for _ in 0..words {
        let word = w;
        w = if w + 1 == words { 0 } else { w + 1 };
        let cell = &hints[word];
        if let Some(cache) = l.claimed(word) {
            if let Some(taken) = take_claimed(c, l, me, word, cell, cache) {
                return Some(taken);
            }
            continue;
        }
        // SeqCst: pairs with a parking waiter's SeqCst `parked` update (see module docs).
        let mut bits = cell.load(SeqCst);
        while bits != 0 {
            let mask = 1u64 << bits.trailing_zeros();
            // Only this bit of the old value is used, so this is one `lock btr` on x86.
            let claimed = cell.fetch_and(!mask, AcqRel) & mask != 0;
            if !claimed {
                bits = cell.load(Relaxed); // another acquirer claimed this hint first
                continue;
            }
            if let Some(taken) = take_hinted(c, l, me, word, mask) {
                return Some(taken);
            }
            bits = cell.load(Relaxed); // a stale hint: dropped
        }
    }
    None
}

/// [`try_acquire`] for a process that claims hint word `word` a whole word at a time into its
/// `cache` (see "Hints kept back"): one locked instruction on the shared line per batch, and no
/// look at that line (which the other core writes) while the cache lasts.
#[inline]
fn take_claimed<C: SharedCells, L: LocalCells>(
    c: &C,
    l: &L,
    me: u64,
    word: usize,
    cell: &C::W64,
    cache: &L::W64,
) -> Option<(u32, u64)> {
    loop {
        let mut bits = cache.load(Relaxed);
        if bits == 0 {
            // SeqCst: as in `try_acquire`.
            let all = cell.swap(0, SeqCst);
            if all == 0 {
                return None;
            }
            bits = cache.fetch_or(all, Relaxed) | all;
        }
        let mask = 1u64 << bits.trailing_zeros();
        // The cache is shared by this process's threads: the bit is ours only if we clear it.
        if cache.fetch_and(!mask, Relaxed) & mask == 0 {
            continue;
        }
        if let Some(taken) = take_hinted(c, l, me, word, mask) {
            return Some(taken);
        }
    }
}

/// Back-offs (most of them yields) after which a local word still set is not a release in
/// progress but a buffer this process holds: tens of milliseconds, far beyond a preempted
/// release.
const STUCK_SPINS: u32 = 1 << 16;

/// Takes the buffer a claimed hint names, if it is free: the CAS `0 → WRITER|me` on its holder
/// word is what hands it out, so a stale hint (beyond the last buffer, or a buffer in use) is
/// refused here and dropped.
#[inline]
fn take_hinted<C: SharedCells, L: LocalCells>(
    c: &C,
    l: &L,
    me: u64,
    word: usize,
    mask: u64,
) -> Option<(u32, u64)> {
    let index = (word as u32) * 64 + mask.trailing_zeros();
    if index >= c.count() {
        return None;
    }
    crate::crash_point!("acquire.after_hint");
    if c.holders(index).cas(0, WRITER | me, AcqRel, Relaxed).is_err() {
        return None;
    }
    crate::crash_point!("acquire.after_take");
    // This process holds no reference to a free buffer, so its local word is 0, or not yet 0
    // while a thread of ours finishes releasing the buffer's previous life (a few instructions):
    // wait that out. A word that stays set means this process holds the buffer, so the shared
    // word that read free was written by another process: leave the word as found and the
    // buffer alone, rather than wait on ourselves forever.
    let state = l.state(index);
    let mut spins = 0;
    while state.load(Acquire) != 0 {
        if spins >= STUCK_SPINS {
            let _ = c.holders(index).cas(WRITER | me, 0, Release, Relaxed);
            return None;
        }
        backoff(&mut spins);
    }
    // Exclusive now: nobody else writes the generation while WRITER is set.
    let generation = c.generation(index).load(Relaxed).wrapping_add(1);
    c.generation(index).store(generation, Relaxed);
    // See "Single-writer words" for why a store is enough.
    l.generation(index).store(generation, Relaxed);
    state.store(1 | LOCAL_WRITE, Release);
    Some((index, generation))
}

/// Publishes the hints this process claimed in batches and has not used (before it sleeps, or
/// detaches). Returns how many.
pub(crate) fn give_back_claimed<C: SharedCells, L: LocalCells>(c: &C, l: &L) -> u32 {
    let mut n = 0;
    for (word, cell) in c.hints().iter().enumerate() {
        let Some(cache) = l.claimed(word) else {
            return 0; // this process claims one by one
        };
        let bits = cache.swap(0, Relaxed);
        if bits != 0 {
            cell.fetch_or(bits, SeqCst);
            n += bits.count_ones();
        }
    }
    n
}

/// Ends exclusive writing: the buffer becomes shared and readable by token, and the write guard
/// becomes this process's one read reference. Plain stores: see "Single-writer words".
#[inline]
pub(crate) fn freeze<C: SharedCells, L: LocalCells>(c: &C, l: &L, me: u64, index: u32) {
    // Release: the data and metadata written so far happen-before any later `get`.
    c.holders(index).store(me, Release);
    l.state(index).store(1, Release);
}

/// Takes another reference to the buffer `(index, generation)` for this process.
#[inline]
pub(crate) fn get<C: SharedCells, L: LocalCells>(
    c: &C,
    l: &L,
    me: u64,
    index: u32,
    generation: u64,
    access: Access,
) -> Result<(), GetError> {
    let state = l.state(index);
    let mut spins = 0;
    let mine = loop {
        let s = state.load(Acquire);
        if s & LOCAL_BUSY != 0 {
            backoff(&mut spins);
            continue;
        }
        if s == 0 {
            let mine = busy();
            if state.cas(0, mine, Acquire, Relaxed).is_ok() {
                break mine; // this thread makes the 0 → 1 transition
            }
            continue;
        }
        // This process holds the buffer already, which pins its life: a local increment does.
        if s & LOCAL_WRITE != 0 {
            return Err(GetError::Busy("this process is writing it"));
        }
        if access == Access::Write {
            return Err(GetError::Busy(
                "it is shared; write access needs the only reference",
            ));
        }
        if s == LOCAL_COUNT {
            return Err(GetError::TooManyRefs);
        }
        if state.cas(s, s + 1, Acquire, Relaxed).is_err() {
            continue;
        }
        let held = l.generation(index).load(Relaxed);
        if held != generation {
            let _ = release(c, l, me, index);
            return Err(GetError::Stale { current: held });
        }
        return Ok(());
    };
    match take_shared(c, me, index, generation, access) {
        Ok(write) => {
            l.generation(index).store(generation, Relaxed);
            state.store(if write { 1 | LOCAL_WRITE } else { 1 }, Release);
            Ok(())
        }
        Err(e) => {
            // Only if it is still our BUSY: for a free buffer an acquirer of ours may have
            // stored its own state over it (see the module docs).
            let _ = state.cas(mine, 0, Release, Relaxed);
            Err(e)
        }
    }
}

/// The shared half of a first `get`: set (or adopt) this process's holder bit. Returns whether
/// write access was granted.
fn take_shared<C: SharedCells>(
    c: &C,
    me: u64,
    index: u32,
    generation: u64,
    access: Access,
) -> Result<bool, GetError> {
    let cell = c.holders(index);
    let mut h = cell.load(Acquire);
    let adopted = loop {
        if h & HOLDERS == 0 {
            return Err(GetError::Free);
        }
        if h & WRITER != 0 {
            // Being written: by the life the token names (not frozen yet), or by a newer one.
            let current = c.generation(index).load(Acquire);
            return Err(if current == generation {
                GetError::Busy("its writer has not frozen it yet")
            } else {
                GetError::Stale { current }
            });
        }
        if h & me != 0 {
            break true; // handed to this process by a peer: adopt that reference
        }
        if access == Access::Write {
            return Err(GetError::Busy(
                "other processes hold it; write access needs the only reference",
            ));
        }
        match cell.cas(h, h | me, Acquire, Acquire) {
            Ok(_) => break false,
            Err(now) => h = now,
        }
    };
    crate::crash_point!("get.after_take");
    // Our bit pins the life we joined; is it the token's?
    let current = c.generation(index).load(Acquire);
    if current != generation {
        if !adopted {
            let _ = remove_holder(c, me, index);
        }
        return Err(GetError::Stale { current });
    }
    if access == Access::Write {
        // Exclusive only if this process is the only holder.
        if cell.cas(me, WRITER | me, Acquire, Relaxed).is_err() {
            return Err(GetError::Busy(
                "other processes hold it; write access needs the only reference",
            ));
        }
        return Ok(true);
    }
    Ok(false)
}

/// Drops one of this process's read references (write guards use [`release_writer`]).
#[inline]
pub(crate) fn release<C: SharedCells, L: LocalCells>(
    c: &C,
    l: &L,
    me: u64,
    index: u32,
) -> Result<Released, NotHeld> {
    let state = l.state(index);
    let mut spins = 0;
    loop {
        let s = state.load(Acquire);
        if s & LOCAL_BUSY != 0 {
            backoff(&mut spins);
            continue;
        }
        if s == 0 {
            // Not held locally; a reference handed to us but never adopted is still ours.
            return release_pending(c, l, me, index);
        }
        if s & LOCAL_WRITE != 0 {
            return Err(NotHeld); // a write guard, not a read reference: see `release_writer`
        }
        if s > 1 {
            if state.cas(s, s - 1, Release, Relaxed).is_ok() {
                return Ok(Released::Kept);
            }
            continue;
        }
        if state.cas(1, busy(), Acquire, Relaxed).is_ok() {
            break; // this thread makes the 1 → 0 transition
        }
    }
    crate::crash_point!("release.after_local");
    let result = clear_holder(c, me, index);
    if result == Ok(Released::Freed) {
        freed(c, l, index);
    }
    state.store(0, Release);
    result
}

/// A buffer this process's release just freed: publish its hint, or keep it back.
#[inline]
fn freed<C: SharedCells, L: LocalCells>(c: &C, l: &L, index: u32) {
    match l.defer_hint(index) {
        Deferred::No => publish_free(c, index),
        Deferred::Kept => {
            // The holder word was emptied by a SeqCst RMW; a waiter that marked itself parked
            // before it must not sleep on a hint we keep (see "Hints kept back").
            seqcst_store_load();
            if c.parked().load(SeqCst) != 0 {
                flush_deferred(c, l);
            }
        }
        Deferred::Full => flush_deferred(c, l),
    }
}

/// Publishes every hint this process kept back, and wakes a parked acquirer if there is one.
pub(crate) fn flush_deferred<C: SharedCells, L: LocalCells>(c: &C, l: &L) {
    let mut any = false;
    for (word, cell) in c.hints().iter().enumerate() {
        let bits = l.take_deferred(word);
        if bits != 0 {
            cell.fetch_or(bits, SeqCst);
            any = true;
        }
    }
    if any {
        seqcst_store_load();
        if c.parked().load(SeqCst) != 0 {
            c.wake_seq().fetch_add(1, SeqCst);
            c.wake_one();
        }
    }
}

/// Gives up a write guard, freeing the buffer (the writer is its only holder). Plain stores: see
/// "Single-writer words". The local word stays `1|WRITE` until the end, which keeps our own
/// acquirers (they CAS from 0) off the buffer until this thread is done with it.
#[inline]
pub(crate) fn release_writer<C: SharedCells, L: LocalCells>(c: &C, l: &L, index: u32) -> Released {
    crate::crash_point!("release.after_local");
    c.holders(index).store(0, Release);
    crate::crash_point!("release.after_empty");
    publish_free(c, index);
    l.state(index).store(0, Release);
    Released::Freed
}

/// Drops a reference handed to this process that it never adopted.
fn release_pending<C: SharedCells, L: LocalCells>(
    c: &C,
    l: &L,
    me: u64,
    index: u32,
) -> Result<Released, NotHeld> {
    let state = l.state(index);
    let mine = busy();
    if state.cas(0, mine, Acquire, Relaxed).is_err() {
        return Err(NotHeld); // a thread is taking it right now; it was not ours to drop
    }
    let result = match c.holders(index).load(Acquire) {
        h if h & me != 0 && h & WRITER == 0 => remove_holder(c, me, index),
        _ => Err(NotHeld),
    };
    let _ = state.cas(mine, 0, Release, Relaxed); // as in `get`: it may have been overwritten
    result
}

/// Clears `bit` from buffer `index`'s holder word; frees the buffer if that was the last holder.
///
/// This is the single step both a live release and a reclaimer take, so whichever of them clears
/// the last bit frees the buffer, exactly once.
#[inline]
pub(crate) fn remove_holder<C: SharedCells>(c: &C, bit: u64, index: u32) -> Result<Released, NotHeld> {
    let result = clear_holder(c, bit, index);
    if result == Ok(Released::Freed) {
        publish_free(c, index);
    }
    result
}

/// [`remove_holder`] without publishing the freed buffer's hint: the caller does that.
#[inline]
fn clear_holder<C: SharedCells>(c: &C, bit: u64, index: u32) -> Result<Released, NotHeld> {
    let cell = c.holders(index);
    let mut h = cell.load(Relaxed);
    let new = loop {
        if h & bit == 0 {
            return Err(NotHeld);
        }
        let rest = h & !bit;
        let new = if rest & HOLDERS == 0 { 0 } else { rest };
        // SeqCst: a release that keeps the hint back pairs this with its read of `parked`.
        match cell.cas(h, new, SeqCst, Relaxed) {
            Ok(_) => break new,
            Err(now) => h = now,
        }
    };
    if new != 0 {
        return Ok(Released::Kept);
    }
    crate::crash_point!("release.after_empty");
    Ok(Released::Freed)
}

/// Makes a freed buffer findable again and wakes a parked acquirer if there is one.
#[inline]
pub(crate) fn publish_free<C: SharedCells>(c: &C, index: u32) {
    let (word, mask) = hint_of(index);
    c.hints()[word].fetch_or(mask, SeqCst);
    seqcst_store_load();
    if c.parked().load(SeqCst) != 0 {
        c.wake_seq().fetch_add(1, SeqCst);
        c.wake_one();
    }
}

/// Turns this process's only reference into exclusive write access, if nobody else holds it.
pub(crate) fn try_upgrade<C: SharedCells, L: LocalCells>(c: &C, l: &L, me: u64, index: u32) -> bool {
    let state = l.state(index);
    // Only the sole local reference may upgrade; BUSY keeps other threads out meanwhile.
    if state.cas(1, 1 | busy(), Acquire, Relaxed).is_err() {
        return false;
    }
    let ok = c.holders(index).cas(me, WRITER | me, Acquire, Relaxed).is_ok();
    state.store(if ok { 1 | LOCAL_WRITE } else { 1 }, Release);
    ok
}

/// Hands references to the processes in `to` (a mask of slot bits). With `consume`, one of the
/// caller's read references goes with it (a move); without, the caller keeps all of its own.
///
/// Each recipient gets its bit set: a reference it owns from this moment, adopted by its first
/// `get` and returned by its exit or death like any other.
pub(crate) fn transfer<C: SharedCells, L: LocalCells>(
    c: &C,
    l: &L,
    me: u64,
    index: u32,
    to: u64,
    consume: bool,
) -> Result<(), TransferError> {
    debug_assert!(to != 0 && to & (me | WRITER) == 0);
    let state = l.state(index);
    let mut spins = 0;
    // Decide whether this moves the process's last reference (then its bit goes too).
    let last = loop {
        let s = state.load(Acquire);
        if s & LOCAL_BUSY != 0 {
            backoff(&mut spins);
            continue;
        }
        if s & LOCAL_COUNT == 0 || s & LOCAL_WRITE != 0 {
            return Err(TransferError::NotHeld); // write guards move with `transfer_writer`
        }
        if consume && s == 1 {
            if state.cas(1, busy(), Acquire, Relaxed).is_ok() {
                break true;
            }
            continue;
        }
        break false;
    };
    let cell = c.holders(index);
    let mut h = cell.load(Relaxed);
    let result = loop {
        if h & me == 0 {
            break Err(TransferError::NotHeld);
        }
        if h & to != 0 {
            break Err(TransferError::RecipientHolds(h & to));
        }
        let new = if last { (h & !me) | to } else { h | to };
        match cell.cas(h, new, AcqRel, Relaxed) {
            Ok(_) => break Ok(()),
            Err(now) => h = now,
        }
    };
    if last {
        state.store(if result.is_ok() { 0 } else { 1 }, Release);
    } else if consume && result.is_ok() {
        // More than one local reference: drop one locally; the bit stays.
        let _ = release(c, l, me, index);
    }
    result
}

/// Publishes a write guard to the processes in `to` (a stream's delivery): each holds a
/// reference from this moment, taken up by [`adopt_delivered`]; with `keep`, this process keeps
/// one as well (its write guard becomes a read reference). One plain store each: see
/// "Single-writer words".
#[inline]
pub(crate) fn share_written<C: SharedCells, L: LocalCells>(
    c: &C,
    l: &L,
    me: u64,
    index: u32,
    to: u64,
    keep: bool,
) {
    debug_assert!(to & (me | WRITER) == 0 && (to != 0 || keep));
    // Release: what was written happens-before the recipients' reads.
    c.holders(index).store(if keep { to | me } else { to }, Release);
    l.state(index).store(u64::from(keep), Release);
}

/// Takes up in this process's count a reference a publisher delivered with [`share_written`].
///
/// The delivery set this process's bit, which pins the life `generation`, and the caller learnt
/// of it through an acquire that synchronises with the delivery; so no shared word needs to be
/// read or written: one CAS on a process-local word.
#[inline]
pub(crate) fn adopt_delivered<C: SharedCells, L: LocalCells>(
    c: &C,
    l: &L,
    me: u64,
    index: u32,
    generation: u64,
) -> Result<(), GetError> {
    let state = l.state(index);
    let mine = busy();
    if state.cas(0, mine, Acquire, Relaxed).is_ok() {
        l.generation(index).store(generation, Relaxed);
        state.store(1, Release);
        return Ok(());
    }
    // This process holds the life already (a `get` took up the delivered reference): the
    // general path adds one.
    get(c, l, me, index, generation, Access::Read)
}

/// Drops a delivered reference that was never taken up (a subscriber leaving with frames still
/// queued). Does nothing, and reports `NotHeld`, if this process took it up meanwhile.
pub(crate) fn drop_delivered<C: SharedCells, L: LocalCells>(
    c: &C,
    l: &L,
    me: u64,
    index: u32,
) -> Result<Released, NotHeld> {
    release_pending(c, l, me, index)
}

/// Moves a write guard to the processes in `to`: the buffer is theirs (each holds a reference,
/// write access is no one's), and this process holds nothing of it any more.
pub(crate) fn transfer_writer<C: SharedCells, L: LocalCells>(c: &C, l: &L, index: u32, to: u64) {
    debug_assert!(to != 0 && to & WRITER == 0);
    // Release: what was written happens-before the recipients' `get`.
    c.holders(index).store(to, Release);
    l.state(index).store(0, Release);
}

/// What reclaiming a dead process returned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ReclaimCounts {
    /// References (holder bits) returned.
    pub references: u64,
    /// Buffers that became free as a result.
    pub freed: u64,
}

/// Returns every reference the process in slot bit `bit` held, and clears its parked bit.
/// Idempotent: running it twice, or after the process's own partial cleanup, is harmless.
pub(crate) fn reclaim_holder<C: SharedCells>(c: &C, bit: u64) -> ReclaimCounts {
    let mut counts = ReclaimCounts::default();
    for index in 0..c.count() {
        match remove_holder(c, bit, index) {
            Ok(Released::Kept) => counts.references += 1,
            Ok(Released::Freed) => {
                counts.references += 1;
                counts.freed += 1;
            }
            Err(NotHeld) => {}
        }
    }
    c.parked().fetch_and(!bit, SeqCst);
    c.keep_back().fetch_and(!bit, SeqCst);
    counts
}

/// Sets the free hint of every free buffer whose hint is missing (lost by a process that died
/// between emptying a holder word and setting the hint, or between claiming a hint and taking
/// the buffer), and wakes as many parked acquirers. Returns how many were set. Safe to run while
/// others work: a hint is advisory.
pub(crate) fn rebuild_hints<C: SharedCells>(c: &C) -> u32 {
    let set = set_missing_hints(c);
    if set > 0 {
        seqcst_store_load();
        if c.parked().load(SeqCst) != 0 {
            c.wake_seq().fetch_add(1, SeqCst);
            for _ in 0..set {
                c.wake_one();
            }
        }
    }
    set
}

/// An acquirer that found no hint: if some process may keep hints back, sets the hint of every
/// free buffer that lacks one, so that the next [`try_acquire`] finds it (see "Hints kept back").
/// Returns how many were set; wakes nobody (the caller is the one looking). Costs one load per
/// buffer, so it runs only before giving up or sleeping.
pub(crate) fn find_unhinted<C: SharedCells>(c: &C) -> u32 {
    if c.keep_back().load(SeqCst) == 0 {
        return 0;
    }
    set_missing_hints(c)
}

/// The scan [`rebuild_hints`] and [`find_unhinted`] share: one load per buffer.
fn set_missing_hints<C: SharedCells>(c: &C) -> u32 {
    let mut set = 0;
    for index in 0..c.count() {
        let (word, mask) = hint_of(index);
        // SeqCst: pairs with a deferring release's emptying CAS (see "Hints kept back").
        if c.holders(index).load(SeqCst) == 0 && c.hints()[word].load(Relaxed) & mask == 0 {
            c.hints()[word].fetch_or(mask, SeqCst);
            set += 1;
        }
    }
    set
}

/// Marks process slot bit `bit` as one that may keep hints back. Must precede its first kept
/// hint.
pub(crate) fn set_keep_back<C: SharedCells>(c: &C, bit: u64) {
    c.keep_back().fetch_or(bit, SeqCst);
}

/// Clears process slot bit `bit`'s keep-back mark, after it published everything it kept.
pub(crate) fn clear_keep_back<C: SharedCells>(c: &C, bit: u64) {
    c.keep_back().fetch_and(!bit, SeqCst);
}

/// Marks process slot bit `bit` as having a parked thread.
/// Must precede the waiter's last look at the free hints before it sleeps.
pub(crate) fn set_parked<C: SharedCells>(c: &C, bit: u64) {
    c.parked().fetch_or(bit, SeqCst);
    seqcst_store_load();
}

/// Clears process slot bit `bit`'s parked mark.
pub(crate) fn clear_parked<C: SharedCells>(c: &C, bit: u64) {
    c.parked().fetch_and(!bit, SeqCst);
}
