//! The seqlock commit protocol (§3) over mapped regions, in its exact step order (W-15.18-1).
//!
//! Producer: mark the slot in progress (`seq<<1`, release), write the payload, rewrite the whole
//! header, fence, commit (`seq<<1|1`, release). Consumer: load the commit word (acquire), drop if
//! not committed, decode and validate the slot, copy the payload, load the word again (acquire)
//! and accept only if it is unchanged and names the sequence asked for; every drop is counted
//! with its reason. Nothing ever blocks or spins.
//!
//! Payload and header bytes move with relaxed atomic copies (`xmem_core::segment::seqlock`), so
//! a consumer racing the producer's next lap copies garbage it then discards, never undefined
//! behaviour.

use std::sync::atomic::Ordering;

use xmem_core::segment::seqlock;

use crate::error::Result;
use crate::layout::{commit_word, SlotHeader, Tensor, TensorHeader, TensorMemo, SLOT_SIZE};
use crate::region::Region;

/// The producer side: one header ring and its payload pools, all with the ring's slot count.
#[derive(Debug)]
pub struct Producer {
    ring: Region,
    pools: Vec<Region>,
    next_seq: u64,
    valid: TensorMemo,
}

/// What one frame is.
#[derive(Debug, Clone, Copy)]
pub struct FrameSpec {
    /// Its tensor description.
    pub tensor: TensorHeader,
    /// Payload bytes.
    pub values_len: u32,
    /// Capture time (slot `timestampNs`).
    pub timestamp_ns: u64,
    /// Metadata version.
    pub meta_version: u32,
}

impl Producer {
    /// A producer over `ring` and `pools` (each pool with the ring's `nslots`), starting at
    /// sequence 0 (a new epoch starts at 0).
    pub fn new(ring: Region, pools: Vec<Region>) -> Producer {
        Producer {
            ring,
            pools,
            next_seq: 0,
            valid: TensorMemo::default(),
        }
    }

    /// The next sequence number.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The header ring.
    pub fn ring(&self) -> &Region {
        &self.ring
    }

    /// The payload pools.
    pub fn pools(&self) -> &[Region] {
        &self.pools
    }

    /// Moves the next sequence number up to `seq` (a bridge republishing frames under their
    /// source's numbers; skipped numbers are gaps to consumers). `false`, and nothing changes,
    /// for a number already used.
    pub fn skip_to(&mut self, seq: u64) -> bool {
        if seq < self.next_seq {
            return false;
        }
        self.next_seq = seq;
        true
    }

    /// Publishes one frame: picks the smallest pool whose stride holds `spec.values_len` (none:
    /// `Ok(None)`, the frame is dropped without blocking), lets `fill` write the payload in
    /// place, and commits. Returns the frame's sequence number.
    pub fn publish(&mut self, spec: &FrameSpec, fill: impl FnOnce(&mut [u8])) -> Result<Option<u64>> {
        self.valid.validate(&spec.tensor)?;
        let Some(pool) = self
            .pools
            .iter()
            .filter(|p| p.superblock().stride_bytes >= spec.values_len)
            .min_by_key(|p| p.superblock().stride_bytes)
        else {
            return Ok(None);
        };
        let seq = self.next_seq;
        let nslots = self.ring.superblock().nslots;
        let index = (seq & u64::from(nslots - 1)) as u32;
        let word = self.ring.commit_word(index);
        // 1. In progress.
        steps::begin(word, seq);
        // 2. The payload, in place.
        let payload = pool.slot_ptr(index);
        // SAFETY: payload slot `index` is `stride ≥ values_len` bytes of our writable mapping.
        // Consumers only read it with atomic copies and discard what they read unless the commit
        // word is unchanged around the read, which it is not while we write (step 1).
        let bytes = unsafe { std::slice::from_raw_parts_mut(payload, spec.values_len as usize) };
        fill(bytes);
        // 3. The whole header.
        let slot = SlotHeader {
            seq_commit: commit_word(seq, false),
            values_len_bytes: spec.values_len,
            payload_slot: index,
            pool_id: pool.superblock().pool_id,
            payload_offset: 0,
            timestamp_ns: spec.timestamp_ns,
            meta_version: spec.meta_version,
            header_bytes_len: crate::layout::HEADER_BYTES_LEN,
            tensor: spec.tensor,
        };
        let image = slot.encode();
        // SAFETY: bytes 8..256 of header slot `index` of our mapping (the commit word is apart).
        unsafe { seqlock::store_bytes(self.ring.slot_ptr(index).add(8), &image[8..SLOT_SIZE]) };
        // 4–5. Payload and header visible before the commit, then committed.
        steps::commit(word, seq);
        self.next_seq += 1;
        Ok(Some(seq))
    }
}

/// Why a consumer dropped a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drop {
    /// Not committed, overwritten, or torn (`drops_late`).
    Late,
    /// The slot failed validation (the reason).
    Invalid(crate::Error),
    /// Not published yet.
    NotYet,
    /// A descriptor of another epoch (or stream) than the one mapped: the next announce remaps.
    Epoch {
        /// The descriptor's epoch.
        got: u64,
        /// The epoch mapped.
        mapped: u64,
    },
    /// Nothing is mapped yet (no valid announce taken).
    Unmapped,
}

/// Counters of a consumer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames accepted.
    pub accepted: u64,
    /// Frames skipped over (sequence jumps).
    pub drops_gap: u64,
    /// Frames caught being written or overwritten.
    pub drops_late: u64,
    /// Frames whose slot broke a rule.
    pub drops_invalid: u64,
}

impl std::ops::AddAssign for Counters {
    fn add_assign(&mut self, o: Counters) {
        self.accepted += o.accepted;
        self.drops_gap += o.drops_gap;
        self.drops_late += o.drops_late;
        self.drops_invalid += o.drops_invalid;
    }
}

/// A frame a consumer accepted.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// Its sequence number.
    pub seq: u64,
    /// Its slot header.
    pub slot: SlotHeader,
    /// Its validated tensor.
    pub tensor: Tensor,
}

/// The consumer side: the ring and pools mapped read-only.
#[derive(Debug)]
pub struct Consumer {
    ring: Region,
    pools: Vec<Region>,
    pool_strides: Vec<(u16, u32)>,
    last_seq: Option<u64>,
    /// The last sequence counted late, so that retrying one frame counts it once.
    late_seq: Option<u64>,
    valid: TensorMemo,
    counters: Counters,
}

impl Consumer {
    /// A consumer of `ring` and its `pools`.
    pub fn new(ring: Region, pools: Vec<Region>) -> Consumer {
        let pool_strides = pools
            .iter()
            .map(|p| (p.superblock().pool_id, p.superblock().stride_bytes))
            .collect();
        Consumer {
            ring,
            pools,
            pool_strides,
            last_seq: None,
            late_seq: None,
            valid: TensorMemo::default(),
            counters: Counters::default(),
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The header ring.
    pub fn ring(&self) -> &Region {
        &self.ring
    }

    /// Reads frame `seq` (from a descriptor, or the next one when following the ring), copying
    /// its payload into `out` (resized to its length). Steps 2–5 of §3.
    pub fn read(&mut self, seq: u64, out: &mut Vec<u8>) -> std::result::Result<Accepted, Drop> {
        let r = self.read_inner(seq, |pool, index, len| {
            out.resize(len, 0);
            // 4. The payload (never touched when empty).
            if !out.is_empty() {
                // SAFETY: payload slot `index` holds `stride ≥ values_len` mapped bytes
                // (validated before this step).
                unsafe { seqlock::load_bytes(pool.slot_ptr(index), out) };
            }
        });
        self.count(seq, r).map(|(a, ())| a)
    }

    /// Reads frame `seq` without copying it: `f` gets the payload where it lies, as atomic bytes
    /// (the producer may overwrite it meanwhile), and its result is returned only if the frame
    /// was still the same after `f` (step 5); otherwise the frame is [`Drop::Late`] and whatever
    /// `f` computed must be thrown away, as the caller's `R` is.
    pub fn read_in_place<R>(
        &mut self,
        seq: u64,
        f: impl FnOnce(&[std::sync::atomic::AtomicU8]) -> R,
    ) -> std::result::Result<(Accepted, R), Drop> {
        let r = self.read_inner(seq, |pool, index, len| f(pool.payload_view(index, len)));
        self.count(seq, r)
    }

    /// Counts what a read gave.
    fn count<R>(
        &mut self,
        seq: u64,
        r: std::result::Result<(Accepted, R), Drop>,
    ) -> std::result::Result<(Accepted, R), Drop> {
        match &r {
            Ok((a, _)) => {
                if let Some(last) = self.last_seq {
                    if a.seq > last + 1 {
                        self.counters.drops_gap += a.seq - last - 1;
                    }
                }
                self.last_seq = Some(self.last_seq.map_or(a.seq, |l| l.max(a.seq)));
                self.counters.accepted += 1;
            }
            Err(Drop::Late) => {
                if self.late_seq != Some(seq) {
                    self.late_seq = Some(seq);
                    self.counters.drops_late += 1;
                }
            }
            Err(Drop::Invalid(_)) => self.counters.drops_invalid += 1,
            Err(Drop::NotYet | Drop::Epoch { .. } | Drop::Unmapped) => {}
        }
        r
    }

    fn read_inner<R>(
        &mut self,
        seq: u64,
        payload: impl FnOnce(&Region, u32, usize) -> R,
    ) -> std::result::Result<(Accepted, R), Drop> {
        let nslots = self.ring.superblock().nslots;
        let index = (seq & u64::from(nslots - 1)) as u32;
        let word = self.ring.commit_word(index);
        // 2. Committed?
        let first = steps::committed(word, seq)?;
        // 3. The slot, copied and validated.
        let mut image = [0u8; SLOT_SIZE];
        // SAFETY: header slot `index` lies in the ring's mapping (checked when mapped).
        unsafe { seqlock::load_bytes(self.ring.slot_ptr(index), &mut image) };
        image[..8].copy_from_slice(&first.to_le_bytes());
        let slot = SlotHeader::decode(&image).map_err(|e| self.late_or(word, first, e))?;
        let tensor = slot
            .validate_with(index, &self.pool_strides, &mut self.valid)
            .map_err(|e| self.late_or(word, first, e))?;
        let pool = self
            .pools
            .iter()
            .find(|p| p.superblock().pool_id == slot.pool_id)
            .expect("validate checked the pool is mapped");
        // 4. The payload: copied out, or looked at in place.
        let r = payload(pool, index, slot.values_len_bytes as usize);
        // 5. Unchanged since step 2?
        if !steps::unchanged(word, first) {
            return Err(Drop::Late);
        }
        Ok((Accepted { seq, slot, tensor }, r))
    }

    /// A slot that failed to decode or validate while being rewritten is late, not invalid.
    fn late_or(&self, word: &std::sync::atomic::AtomicU64, first: u64, e: crate::Error) -> Drop {
        if steps::unchanged(word, first) {
            Drop::Invalid(e)
        } else {
            Drop::Late
        }
    }

    /// Follows the ring without a control plane: the next frame after the last one accepted
    /// (or `from` at first), skipping ahead to the oldest frame still in the ring when the
    /// producer lapped this consumer.
    pub fn next(&mut self, from: u64, out: &mut Vec<u8>) -> std::result::Result<Accepted, Drop> {
        let nslots = u64::from(self.ring.superblock().nslots);
        let mut want = self.last_seq.map_or(from, |l| l + 1);
        let word = self
            .ring
            .commit_word((want & (nslots - 1)) as u32)
            .load(Ordering::Acquire);
        if word >> 1 > want {
            // Lapped: this slot holds a later frame. The newest frame is the highest sequence
            // in any slot; everything older than `newest - nslots + 1` is gone.
            let newest = (0..nslots as u32)
                .map(|i| self.ring.commit_word(i).load(Ordering::Acquire) >> 1)
                .max()
                .unwrap_or(0);
            want = newest.saturating_sub(nslots - 1).max(want);
        }
        self.read(want, out)
    }
}

/// The commit word's steps (§3) and their memory orderings, generic over the word so that the
/// loom model (`model.rs`) checks these very functions.
///
/// This is the seqlock of Boehm ("Can seqlocks get along with programming language memory
/// models?", MSPC 2012), as xmem's segments use it:
///
/// ```text
/// producer                                 consumer
///   word.store(seq<<1, Release)              first = word.load(Acquire)  — not seq<<1|1: drop
///   fence(Release)                           copy out (relaxed atomic loads)
///   write payload and header                 fence(Acquire)
///   fence(Release)                           word.load(Acquire) == first — else drop (late)
///   word.store(seq<<1|1, Release)
/// ```
///
/// If the consumer's copy saw any byte of a later lap, its acquire fence synchronises with the
/// release fence after that lap's in-progress store, so the re-read sees that store (or later)
/// and differs from `first`. The fence after the in-progress store is what the protocol text
/// leaves implicit: a release *store* orders what comes before it, not the payload writes after.
pub(crate) mod steps {
    use std::sync::atomic::Ordering::{self, Acquire, Release};

    use super::Drop;
    use crate::layout::commit_word;

    /// A 64-bit commit word: the real one in a mapping, or loom's in the model.
    pub(crate) trait Word {
        /// `AtomicU64::load`.
        fn load(&self, order: Ordering) -> u64;
        /// `AtomicU64::store`.
        fn store(&self, value: u64, order: Ordering);
    }

    impl Word for std::sync::atomic::AtomicU64 {
        #[inline(always)]
        fn load(&self, order: Ordering) -> u64 {
            std::sync::atomic::AtomicU64::load(self, order)
        }
        #[inline(always)]
        fn store(&self, value: u64, order: Ordering) {
            std::sync::atomic::AtomicU64::store(self, value, order)
        }
    }

    #[cfg(loom)]
    impl Word for loom::sync::atomic::AtomicU64 {
        fn load(&self, order: Ordering) -> u64 {
            loom::sync::atomic::AtomicU64::load(self, order)
        }
        fn store(&self, value: u64, order: Ordering) {
            loom::sync::atomic::AtomicU64::store(self, value, order)
        }
    }

    /// A fence (loom's in the model, so that it sees it).
    #[inline(always)]
    pub(crate) fn fence(order: Ordering) {
        #[cfg(loom)]
        loom::sync::atomic::fence(order);
        #[cfg(not(loom))]
        std::sync::atomic::fence(order);
    }

    /// Producer, step 1: the slot is being rewritten for frame `seq`.
    #[inline(always)]
    pub(crate) fn begin<W: Word>(word: &W, seq: u64) {
        word.store(commit_word(seq, false), Release);
        fence(Release);
    }

    /// Producer, steps 4–5: what was written is visible, then frame `seq` is committed.
    #[inline(always)]
    pub(crate) fn commit<W: Word>(word: &W, seq: u64) {
        fence(Release);
        word.store(commit_word(seq, true), Release);
    }

    /// Consumer, step 2: the word to validate against if frame `seq` is committed in it.
    #[inline(always)]
    pub(crate) fn committed<W: Word>(word: &W, seq: u64) -> Result<u64, Drop> {
        let first = word.load(Acquire);
        // Older, or this very frame still being written (a descriptor never announces that).
        if first >> 1 < seq || first == commit_word(seq, false) {
            return Err(Drop::NotYet);
        }
        if first & 1 == 0 || first >> 1 != seq {
            return Err(Drop::Late);
        }
        Ok(first)
    }

    /// Consumer, step 5: whether nothing was rewritten since `first` was read.
    #[inline(always)]
    pub(crate) fn unchanged<W: Word>(word: &W, first: u64) -> bool {
        fence(Acquire);
        word.load(Acquire) == first
    }
}
