//! The pool's process table: attaching, detaching, and reclaiming the references of processes
//! that died.
//!
//! Each slot's owner word is `state:2 | pid:22 | start_ticks:40`, changed only by CAS:
//!
//! ```text
//! FREE ──attach──▶ ACTIVE(p) ──detach──▶ FREE
//!                      │ p is dead
//!                      ▼
//!              RECLAIMING(r) ──done──▶ FREE        (r dead too: another reclaimer takes over)
//! ```
//!
//! Claiming a dead slot with one CAS makes reclaimers exclude each other, and since every step of
//! a reclaim is idempotent (clearing bits that may already be clear), a reclaimer killed halfway
//! is simply redone by the next one. The registry word (one bit per attached slot, plus CLOSED)
//! lets the last process out remove the pool without racing a late opener.

use std::sync::atomic::Ordering::*;

use super::layout::{MAX_PROCESSES, REGISTRY_CLOSED};
use super::map::PoolMap;
use super::protocol::{self, slot_bit};
use crate::os::{time, Liveness, ProcessIdentity};

const STATE_SHIFT: u32 = 62;
const PID_SHIFT: u32 = 40;
const PID_MASK: u64 = (1 << 22) - 1;
const START_MASK: u64 = (1 << 40) - 1;

/// State of a process slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// Unused.
    Free,
    /// A process is attached.
    Active,
    /// A reclaimer is returning a dead process's references.
    Reclaiming,
}

/// A decoded owner word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    pub state: SlotState,
    pub pid: u32,
    /// Low 40 bits of the start time.
    pub start: u64,
}

impl Owner {
    pub fn decode(word: u64) -> Owner {
        let state = match word >> STATE_SHIFT {
            1 => SlotState::Active,
            2 => SlotState::Reclaiming,
            _ => SlotState::Free,
        };
        Owner {
            state,
            pid: ((word >> PID_SHIFT) & PID_MASK) as u32,
            start: word & START_MASK,
        }
    }

    pub fn encode(state: SlotState, id: ProcessIdentity) -> u64 {
        let s: u64 = match state {
            SlotState::Free => return 0,
            SlotState::Active => 1,
            SlotState::Reclaiming => 2,
        };
        (s << STATE_SHIFT) | ((u64::from(id.pid) & PID_MASK) << PID_SHIFT) | (id.start_ticks & START_MASK)
    }

    /// Whether this owner is the process `id`.
    pub fn is(&self, id: ProcessIdentity) -> bool {
        self.pid == id.pid && self.start == id.start_ticks & START_MASK
    }

    /// Whether the owning process lives (the word holds the low 40 bits of its start time).
    pub fn liveness(&self) -> Liveness {
        let start = self.start;
        crate::os::process::liveness_of(self.pid, |ticks| ticks & START_MASK == start)
    }
}

/// Why attaching failed.
#[derive(Debug)]
pub(crate) enum AttachError {
    /// Every slot is taken by a live process.
    Full,
    /// The pool is being removed; open again.
    Closing,
}

/// Claims a free slot for `me` and publishes it in the registry. Returns the slot.
pub(crate) fn attach(map: &PoolMap, me: ProcessIdentity, pidns: u64) -> Result<usize, AttachError> {
    let slots = map.slots();
    let mut claimed = None;
    for pass in 0..2 {
        claimed = slots.iter().position(|slot| {
            slot.owner
                .compare_exchange(0, Owner::encode(SlotState::Active, me), AcqRel, Relaxed)
                .is_ok()
        });
        if claimed.is_some() || pass == 1 {
            break;
        }
        // Full: free the slots of dead processes, then look again.
        sweep(map, me, false);
    }
    let slot = claimed.ok_or(AttachError::Full)?;
    crate::crash_point!("attach.after_claim");
    let s = &slots[slot];
    s.pidns.store(pidns, Relaxed);
    s.start_ticks.store(me.start_ticks, Relaxed);
    s.attached_unix_ns.store(time::unix_now_ns(), Relaxed);
    s.waits.store(0, Relaxed);
    s.timeouts.store(0, Relaxed);
    s.reclaimed_refs.store(0, Relaxed);
    // A hand-off aimed at this slot's previous process may have landed after its reclaim: such
    // bits are not ours. Clearing them here means no attach ever inherits a reference.
    let bit = slot_bit(slot);
    protocol::reclaim_holder(map, bit);
    let registry = &map.header().registry;
    let mut r = registry.load(Acquire);
    loop {
        if r & REGISTRY_CLOSED != 0 {
            s.owner.store(0, Release);
            return Err(AttachError::Closing);
        }
        match registry.compare_exchange(r, r | bit, AcqRel, Acquire) {
            Ok(_) => {
                // Used again: whatever grace period a cleaner started is void.
                map.header().object.orphan_since_unix_ns.store(0, Relaxed);
                return Ok(slot);
            }
            Err(now) => r = now,
        }
    }
}

/// Detaches `slot`: returns whatever it still holds, and reports whether it was the last
/// attached process (the registry is then CLOSED and the caller removes the pool's name).
pub(crate) fn detach(map: &PoolMap, slot: usize, close_if_last: bool) -> bool {
    let bit = slot_bit(slot);
    protocol::reclaim_holder(map, bit);
    let registry = &map.header().registry;
    let mut r = registry.load(Acquire);
    let closed = loop {
        let rest = r & !bit;
        let last = close_if_last && rest & !REGISTRY_CLOSED == 0 && r & REGISTRY_CLOSED == 0;
        let new = if last { REGISTRY_CLOSED } else { rest };
        match registry.compare_exchange(r, new, AcqRel, Acquire) {
            Ok(_) => break last,
            Err(now) => r = now,
        }
    };
    map.slots()[slot].owner.store(0, Release);
    closed
}

/// What a sweep found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReclaimReport {
    /// Pids of the dead processes whose references were returned.
    pub dead_processes: Vec<u32>,
    /// References returned.
    pub references: u64,
    /// Buffers that became free.
    pub buffers_freed: u64,
    /// Free hints restored (buffers a dead process left free but unlisted).
    pub hints_restored: u32,
}

impl ReclaimReport {
    /// Whether anything was reclaimed.
    pub fn is_empty(&self) -> bool {
        self.dead_processes.is_empty()
    }
}

/// Reclaims every dead process's references. With `dry_run`, only reports.
pub(crate) fn sweep(map: &PoolMap, me: ProcessIdentity, dry_run: bool) -> ReclaimReport {
    let mut report = ReclaimReport::default();
    for (slot, s) in map.slots().iter().enumerate().take(MAX_PROCESSES) {
        let word = s.owner.load(Acquire);
        let owner = Owner::decode(word);
        if owner.state == SlotState::Free || owner.is(me) || owner.liveness() != Liveness::Dead {
            continue;
        }
        let bit = slot_bit(slot);
        if dry_run {
            report.dead_processes.push(owner.pid);
            report.references += map
                .states()
                .iter()
                .filter(|st| st.holders.load(Relaxed) & bit != 0)
                .count() as u64;
            continue;
        }
        // One CAS makes us the only reclaimer of this slot.
        let mine = Owner::encode(SlotState::Reclaiming, me);
        if s.owner.compare_exchange(word, mine, AcqRel, Relaxed).is_err() {
            continue;
        }
        crate::crash_point!("reclaim.after_claim");
        let counts = protocol::reclaim_holder(map, bit);
        crate::crash_point!("reclaim.after_clear");
        report.hints_restored += protocol::rebuild_hints(map);
        map.header().registry.fetch_and(!bit, AcqRel);
        let _ = s.owner.compare_exchange(mine, 0, AcqRel, Relaxed);
        tracing::info!(
            pool = %map.label,
            pid = owner.pid,
            references = counts.references,
            freed = counts.freed,
            "reclaimed the references of a dead process"
        );
        report.dead_processes.push(owner.pid);
        report.references += counts.references;
        report.buffers_freed += counts.freed;
    }
    report
}

/// Whether any slot is attached or being reclaimed.
pub(crate) fn anyone_attached(map: &PoolMap) -> bool {
    map.slots()
        .iter()
        .any(|s| Owner::decode(s.owner.load(Acquire)).state != SlotState::Free)
}

/// Live attached processes, for error messages.
pub(crate) fn live_pids(map: &PoolMap) -> Vec<u32> {
    map.slots()
        .iter()
        .map(|s| Owner::decode(s.owner.load(Acquire)))
        .filter(|o| o.state == SlotState::Active && o.liveness() != Liveness::Dead)
        .map(|o| o.pid)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_words_round_trip() {
        let id = ProcessIdentity {
            pid: 4_194_303,
            start_ticks: (1 << 45) + 12345,
        };
        for state in [SlotState::Active, SlotState::Reclaiming] {
            let o = Owner::decode(Owner::encode(state, id));
            assert_eq!(o.state, state);
            assert_eq!(o.pid, id.pid);
            assert!(o.is(id));
        }
        assert_eq!(Owner::encode(SlotState::Free, id), 0);
        assert_eq!(Owner::decode(0).state, SlotState::Free);
    }

    #[test]
    fn own_process_is_alive_and_a_different_start_is_dead() {
        let me = ProcessIdentity::current();
        let o = Owner::decode(Owner::encode(SlotState::Active, me));
        assert_eq!(o.liveness(), Liveness::Alive);
        let other = ProcessIdentity {
            start_ticks: me.start_ticks + 1,
            ..me
        };
        assert_eq!(
            Owner::decode(Owner::encode(SlotState::Active, other)).liveness(),
            Liveness::Dead
        );
    }
}
