//! A pool described for people: `xmem inspect`, error messages, tests.

use std::path::PathBuf;
use std::sync::atomic::Ordering::*;

use super::guard::read_tensor;
use super::layout::{DeviceRecord, PoolConfig, Storage};
use super::map::PoolMap;
use super::protocol::{HOLDERS, WRITER};
use super::registry::{Owner, SlotState};
use crate::os::{Liveness, ProcessIdentity};
use crate::tensor::TensorDesc;

/// Everything `xmem inspect` shows about a pool. Read without locks while the pool runs, so
/// each field is current but the whole is not one instant.
#[derive(Debug, Clone)]
pub struct PoolSnapshot {
    /// The pool's name.
    pub name: String,
    /// Its file.
    pub path: PathBuf,
    /// Count, size, alignment.
    pub config: PoolConfig,
    /// Distance between buffers in the arena.
    pub stride: u64,
    /// Size of the whole object.
    pub total_size: u64,
    /// Random identity of the pool instance.
    pub pool_id: u64,
    /// Where the bytes live.
    pub storage: Storage,
    /// A device pool's allocation.
    pub device: Option<DeviceRecord>,
    /// The creator.
    pub owner: ProcessIdentity,
    /// Whether the creator lives.
    pub owner_liveness: Liveness,
    /// Creation time, ns since the epoch.
    pub created_unix_ns: u64,
    /// Attached processes (and processes being reclaimed).
    pub processes: Vec<ProcessInfo>,
    /// Every buffer.
    pub buffers: Vec<BufferInfo>,
    /// Number of free-hint bits set. Below the number of free buffers while a process keeps
    /// hints back ([`ProcessInfo::keeps_hints_back`]: a stream batching its small frames); that
    /// is normal, not damage.
    pub free_hints: u32,
    /// Whether the pool is being removed.
    pub closing: bool,
}

/// One attached process.
#[derive(Debug, Clone)]
pub struct ProcessInfo {
    /// Its slot in the process table.
    pub slot: usize,
    /// Its pid.
    pub pid: u32,
    /// Attached, or being reclaimed.
    pub state: SlotState,
    /// Whether it lives.
    pub liveness: Liveness,
    /// Its command name, if visible.
    pub command: Option<String>,
    /// When it attached, ns since the epoch.
    pub attached_unix_ns: u64,
    /// Times it parked waiting for a buffer.
    pub waits: u64,
    /// Waits that timed out.
    pub timeouts: u64,
    /// Dead processes' references it returned.
    pub reclaimed_refs: u64,
    /// Buffers it holds.
    pub holds: usize,
    /// Whether it may keep free hints back (see [`PoolSnapshot::free_hints`]).
    pub keeps_hints_back: bool,
}

/// Whether a buffer is free, being written, or shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferStatus {
    /// Nobody holds it.
    Free,
    /// One holder writes it exclusively.
    Writing,
    /// One or more holders read it.
    Shared,
}

/// One buffer.
#[derive(Debug, Clone)]
pub struct BufferInfo {
    /// Its index.
    pub index: u32,
    /// Its current life.
    pub generation: u64,
    /// Free, writing, shared.
    pub status: BufferStatus,
    /// Slots of the processes holding it.
    pub holder_slots: Vec<usize>,
    /// Pids of the processes holding it.
    pub holder_pids: Vec<u32>,
    /// Its tensor description, or why it is invalid (only for buffers in use).
    pub tensor: Option<Result<TensorDesc, String>>,
    /// Producer's sequence number.
    pub sequence: u64,
    /// Producer's timestamp.
    pub timestamp_ns: u64,
}

pub(crate) fn snapshot(map: &PoolMap) -> PoolSnapshot {
    let h = map.header();
    let owner = h.object.owner();
    let slot_owners: Vec<Owner> = map
        .slots()
        .iter()
        .map(|s| Owner::decode(s.owner.load(Acquire)))
        .collect();
    let buffers: Vec<BufferInfo> = map
        .states()
        .iter()
        .zip(map.metas())
        .enumerate()
        .map(|(i, (st, meta))| {
            let holders = st.holders.load(Acquire);
            let slots: Vec<usize> = (0..63).filter(|s| holders & HOLDERS & (1 << s) != 0).collect();
            let status = if holders == 0 {
                BufferStatus::Free
            } else if holders & WRITER != 0 {
                BufferStatus::Writing
            } else {
                BufferStatus::Shared
            };
            BufferInfo {
                index: i as u32,
                generation: st.generation.load(Relaxed),
                status,
                holder_pids: slots.iter().map(|&s| slot_owners[s].pid).collect(),
                holder_slots: slots,
                tensor: (status == BufferStatus::Shared).then(|| read_tensor(meta, map.layout.config.size)),
                sequence: meta.sequence.load(Relaxed),
                timestamp_ns: meta.timestamp_ns.load(Relaxed),
            }
        })
        .collect();
    let processes = map
        .slots()
        .iter()
        .enumerate()
        .filter(|(slot, _)| slot_owners[*slot].state != SlotState::Free)
        .map(|(slot, s)| {
            let o = slot_owners[slot];
            let id = ProcessIdentity {
                pid: o.pid,
                start_ticks: s.start_ticks.load(Relaxed),
            };
            let liveness = o.liveness();
            ProcessInfo {
                slot,
                pid: o.pid,
                state: o.state,
                liveness,
                command: (liveness == Liveness::Alive).then(|| id.command()).flatten(),
                attached_unix_ns: s.attached_unix_ns.load(Relaxed),
                waits: s.waits.load(Relaxed),
                timeouts: s.timeouts.load(Relaxed),
                reclaimed_refs: s.reclaimed_refs.load(Relaxed),
                holds: buffers.iter().filter(|b| b.holder_slots.contains(&slot)).count(),
                keeps_hints_back: map.wake().keep_back.load(Relaxed) & (1 << slot) != 0,
            }
        })
        .collect();
    PoolSnapshot {
        name: map.label.clone(),
        path: map.path_buf(),
        config: map.layout.config,
        stride: map.layout.stride,
        total_size: map.layout.total,
        pool_id: map.pool_id,
        storage: map.storage,
        device: map.device,
        owner,
        owner_liveness: owner.liveness(),
        created_unix_ns: h.object.created_unix_ns.load(Relaxed),
        processes,
        free_hints: map
            .hint_words()
            .iter()
            .map(|w| w.load(Relaxed).count_ones())
            .sum(),
        closing: h.registry.load(Relaxed) & super::layout::REGISTRY_CLOSED != 0,
        buffers,
    }
}
