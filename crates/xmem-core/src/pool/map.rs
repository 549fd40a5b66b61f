//! A pool's mapping, validated once: every table resolved to a slice, so the hot paths index
//! slices instead of recomputing offsets and re-checking bounds.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

use super::layout::{
    BufferMeta, BufferState, DeviceKind, DeviceRecord, PoolConfig, PoolHeader, PoolLayout, ProcessSlot,
    Storage, WakeWords, LAYOUT_HASH, LAYOUT_VERSION, MAX_PROCESSES,
};
use super::protocol::SharedCells;
use crate::error::{Error, Result};
use crate::object::{ObjectKind, OpenObject, OpenSpec};
use crate::os::futex;

/// The open spec for pools.
pub(crate) fn open_spec(writable: bool, populate: bool, timeout: std::time::Duration) -> OpenSpec {
    OpenSpec {
        kind: ObjectKind::Pool,
        layout_version: LAYOUT_VERSION,
        header_size: std::mem::size_of::<PoolHeader>() as u32,
        timeout,
        writable,
        populate,
    }
}

/// A mapped, validated pool. Attaching (see `registry`) is separate, so inspection and cleanup
/// can use a pool without joining it.
#[derive(Debug)]
pub(crate) struct PoolMap {
    /// The pool's name, or `anonymous`.
    pub label: String,
    pub object: OpenObject,
    pub layout: PoolLayout,
    pub pool_id: u64,
    pub storage: Storage,
    /// The device allocation, for device storage (validated: it holds every buffer).
    pub device: Option<DeviceRecord>,
    header: *const PoolHeader,
    slots: *const [ProcessSlot],
    wake: *const WakeWords,
    hints: *const [AtomicU64],
    states: *const [BufferState],
    metas: *const [BufferMeta],
    arena: *mut u8,
}

// SAFETY: the raw pointers point into `object.map`, which this struct owns and which is Send +
// Sync; they are only ever turned into shared references to atomics, or into byte pointers whose
// use is governed by the holder-word protocol.
unsafe impl Send for PoolMap {}
// SAFETY: as above.
unsafe impl Sync for PoolMap {}

impl PoolMap {
    /// Validates the pool header of an opened object and resolves its tables.
    pub(super) fn new(label: String, object: OpenObject) -> Result<PoolMap> {
        let path = object.map.path().to_path_buf();
        let corrupt = |detail: String| Error::Corrupt {
            path: path.clone(),
            detail,
        };
        let h = object.map.at::<PoolHeader>(0)?;
        let hash = h.layout_hash.load(Relaxed);
        if hash != LAYOUT_HASH {
            return Err(Error::VersionMismatch {
                path: path.clone(),
                found: (hash >> 32) as u32,
                supported: (LAYOUT_HASH >> 32) as u32,
            });
        }
        let config = PoolConfig {
            count: h.buffer_count.load(Relaxed),
            size: h.buffer_size.load(Relaxed),
            alignment: h.alignment.load(Relaxed),
        };
        let storage = Storage::from_code(h.storage.load(Relaxed))
            .ok_or_else(|| corrupt(format!("storage code {}", h.storage.load(Relaxed))))?;
        let layout = PoolLayout::compute_for(config, storage)
            .map_err(|e| corrupt(format!("its configuration is impossible: {e}")))?;
        if layout.total != h.object.total_size.load(Relaxed) {
            return Err(corrupt(format!(
                "{} bytes, but {config:?} needs {}",
                h.object.total_size.load(Relaxed),
                layout.total
            )));
        }
        let max = h.max_processes.load(Relaxed);
        if max as usize != MAX_PROCESSES {
            return Err(corrupt(format!(
                "process table of {max}, expected {MAX_PROCESSES}"
            )));
        }
        let device = match storage {
            Storage::Host => None,
            Storage::Device => {
                let code = h.device_kind.load(Relaxed);
                let kind =
                    DeviceKind::from_code(code).ok_or_else(|| corrupt(format!("device kind code {code}")))?;
                let bytes = h.device_bytes.load(Relaxed);
                if bytes < layout.arena_bytes {
                    return Err(corrupt(format!(
                        "device allocation of {bytes} bytes, but its buffers need {}",
                        layout.arena_bytes
                    )));
                }
                let mut uuid = [0u8; 16];
                for (d, s) in uuid.iter_mut().zip(&h.device_uuid) {
                    *d = s.load(Relaxed);
                }
                Some(DeviceRecord { kind, uuid, bytes })
            }
        };
        let map = &object.map;
        let n = config.count as usize;
        let slots: *const [ProcessSlot] = map.slice_at::<ProcessSlot>(layout.processes, MAX_PROCESSES)?;
        let wake: *const WakeWords = map.at::<WakeWords>(layout.free_set)?;
        let hints: *const [AtomicU64] = map.slice_at::<AtomicU64>(layout.hints, layout.hint_words)?;
        let states: *const [BufferState] = map.slice_at::<BufferState>(layout.states, n)?;
        let metas: *const [BufferMeta] = map.slice_at::<BufferMeta>(layout.metas, n)?;
        // SAFETY: arena <= total == mapping length (checked by compute + the total comparison).
        let arena = unsafe { map.base().add(layout.arena) };
        Ok(PoolMap {
            label,
            pool_id: h.pool_id.load(Relaxed),
            storage,
            device,
            header: h,
            slots,
            wake,
            hints,
            states,
            metas,
            arena,
            layout,
            object,
        })
    }

    pub(super) fn path(&self) -> &Path {
        self.object.map.path()
    }

    pub(super) fn path_buf(&self) -> PathBuf {
        self.path().to_path_buf()
    }

    pub(super) fn header(&self) -> &PoolHeader {
        // SAFETY: points into the mapping owned by self (validated in `new`).
        unsafe { &*self.header }
    }

    pub(super) fn slots(&self) -> &[ProcessSlot] {
        // SAFETY: as in `header`.
        unsafe { &*self.slots }
    }

    pub(super) fn wake(&self) -> &WakeWords {
        // SAFETY: as in `header`.
        unsafe { &*self.wake }
    }

    pub(super) fn hint_words(&self) -> &[AtomicU64] {
        // SAFETY: as in `header`.
        unsafe { &*self.hints }
    }

    pub(super) fn states(&self) -> &[BufferState] {
        // SAFETY: as in `header`.
        unsafe { &*self.states }
    }

    /// Buffer `index`'s state, without a bounds check on the hot path.
    ///
    /// Callers pass only validated indices: hints are checked against the count, tokens by
    /// `check_token`, guards carry their own; debug builds assert it.
    #[inline(always)]
    pub(super) fn state(&self, index: u32) -> &BufferState {
        debug_assert!(index < self.layout.config.count);
        // SAFETY: index < count == states().len() (see above); the table lives in our mapping.
        unsafe { self.states().get_unchecked(index as usize) }
    }

    /// Buffer `index`'s metadata (index validated as for [`Self::state`]).
    #[inline(always)]
    pub(super) fn meta(&self, index: u32) -> &BufferMeta {
        debug_assert!(index < self.layout.config.count);
        // SAFETY: as in `state`: metas() has `count` entries.
        unsafe { self.metas().get_unchecked(index as usize) }
    }

    pub(super) fn metas(&self) -> &[BufferMeta] {
        // SAFETY: as in `header`.
        unsafe { &*self.metas }
    }

    /// The first byte of buffer `index` (which must be < count) in a host pool's arena.
    pub(super) fn buffer_ptr(&self, index: u32) -> *mut u8 {
        assert!(index < self.layout.config.count);
        assert_eq!(self.storage, Storage::Host, "a device pool has no host arena");
        // SAFETY: index < count, so the offset lies inside the arena, inside the mapping.
        unsafe { self.arena.add((u64::from(index) * self.layout.stride) as usize) }
    }

    /// Counts buffers whose holder word is 0.
    pub(super) fn free_count(&self) -> u32 {
        self.states()
            .iter()
            .filter(|s| s.holders.load(Relaxed) == 0)
            .count() as u32
    }
}

impl SharedCells for PoolMap {
    type W64 = AtomicU64;
    type W32 = AtomicU32;

    #[inline(always)]
    fn count(&self) -> u32 {
        self.layout.config.count
    }
    #[inline(always)]
    fn holders(&self, index: u32) -> &AtomicU64 {
        &self.state(index).holders
    }
    #[inline(always)]
    fn generation(&self, index: u32) -> &AtomicU64 {
        &self.state(index).generation
    }
    #[inline(always)]
    fn hints(&self) -> &[AtomicU64] {
        self.hint_words()
    }
    #[inline(always)]
    fn parked(&self) -> &AtomicU64 {
        &self.wake().parked
    }
    #[inline(always)]
    fn keep_back(&self) -> &AtomicU64 {
        &self.wake().keep_back
    }
    #[inline(always)]
    fn wake_seq(&self) -> &AtomicU32 {
        &self.wake().wake_seq
    }
    fn wake_one(&self) {
        futex::wake(&self.wake().wake_seq, 1);
    }
}
