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
//!
//! A *managed* slot belongs to a stream subscriber; its manager is the stream's publisher, which
//! sets the slot's holder bits when it delivers. Such a slot must not go to another process while
//! the publisher may still deliver to it, so its detach and its reclaim end in RETIRED instead of
//! FREE while the manager lives:
//!
//! ```text
//! ACTIVE(p) ──detach / reclaim──▶ RETIRED ──manager releases it, or any sweeper once the
//!                                            manager is dead──▶ FREE
//! ```

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
    /// Done with, but kept from reuse until its manager (a stream's publisher) releases it.
    Retired,
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
    pub(super) fn decode(word: u64) -> Owner {
        let state = match word >> STATE_SHIFT {
            1 => SlotState::Active,
            2 => SlotState::Reclaiming,
            3 => SlotState::Retired,
            _ => SlotState::Free,
        };
        Owner {
            state,
            pid: ((word >> PID_SHIFT) & PID_MASK) as u32,
            start: word & START_MASK,
        }
    }

    pub(super) fn encode(state: SlotState, id: ProcessIdentity) -> u64 {
        let s: u64 = match state {
            SlotState::Free => return 0,
            SlotState::Active => 1,
            SlotState::Reclaiming => 2,
            SlotState::Retired => 3,
        };
        (s << STATE_SHIFT) | ((u64::from(id.pid) & PID_MASK) << PID_SHIFT) | (id.start_ticks & START_MASK)
    }

    /// Whether this owner is the process `id`.
    pub(super) fn is(&self, id: ProcessIdentity) -> bool {
        self.pid == id.pid && self.start == id.start_ticks & START_MASK
    }

    /// Whether the owning process lives (the word holds the low 40 bits of its start time).
    pub(super) fn liveness(&self) -> Liveness {
        let start = self.start;
        crate::os::process::liveness_of(self.pid, |ticks| ticks & START_MASK == start)
    }

    /// The same identity in another (non-free) state.
    fn with_state(word: u64, state: SlotState) -> u64 {
        let identity = word & ((1 << STATE_SHIFT) - 1);
        identity | (Owner::encode(state, ProcessIdentity::current()) & !((1 << STATE_SHIFT) - 1))
    }
}

/// The manager word for `manager` (0: not managed).
pub(crate) fn manager_word(manager: Option<ProcessIdentity>) -> u64 {
    manager.map_or(0, |m| Owner::encode(SlotState::Active, m))
}

/// Whether slot `s` is managed by a process that is still alive.
fn managed_by_live(s: &super::layout::ProcessSlot) -> bool {
    let m = s.manager.load(Acquire);
    m != 0 && Owner::decode(m).liveness() != Liveness::Dead
}

/// Ends a slot's use: RETIRED (keeping `word`'s identity) while a live manager may still deliver
/// to it, else FREE. The caller holds the slot (ACTIVE as its owner, or RECLAIMING).
fn finish_slot(s: &super::layout::ProcessSlot, word: u64) {
    if managed_by_live(s) {
        s.owner
            .store(Owner::with_state(word, SlotState::Retired), Release);
    } else {
        s.manager.store(0, Relaxed);
        s.owner.store(0, Release);
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

/// Claims a free slot for `me` and publishes it in the registry. Returns the slot. A slot with a
/// `manager` word (see the module docs) is a stream subscriber's.
pub(crate) fn attach(
    map: &PoolMap,
    me: ProcessIdentity,
    pidns: u64,
    manager: u64,
) -> Result<usize, AttachError> {
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
    // A FREE slot's manager word is 0, so a process killed before this store leaves an
    // ordinary slot behind.
    s.manager.store(manager, Release);
    // A hand-off aimed at this slot's previous process may have landed after its reclaim: such
    // bits are not ours. Clearing them here means no attach ever inherits a reference.
    let bit = slot_bit(slot);
    protocol::reclaim_holder(map, bit);
    let registry = &map.header().registry;
    let mut r = registry.load(Acquire);
    loop {
        if r & REGISTRY_CLOSED != 0 {
            s.manager.store(0, Relaxed);
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
    let s = &map.slots()[slot];
    finish_slot(s, s.owner.load(Relaxed));
    closed
}

/// Frees `slot` if it is RETIRED and managed by `me` (a publisher done delivering to it).
/// Returns whether it did.
pub(crate) fn release_retired(map: &PoolMap, slot: usize, me: ProcessIdentity) -> bool {
    let s = &map.slots()[slot];
    let word = s.owner.load(Acquire);
    if Owner::decode(word).state != SlotState::Retired || s.manager.load(Acquire) != manager_word(Some(me)) {
        return false;
    }
    let mine = Owner::encode(SlotState::Reclaiming, me);
    if s.owner.compare_exchange(word, mine, AcqRel, Relaxed).is_err() {
        return false;
    }
    // Deliveries made after the slot's reclaim left bits that nobody holds.
    protocol::reclaim_holder(map, slot_bit(slot));
    s.manager.store(0, Relaxed);
    s.owner.store(0, Release);
    true
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
        if owner.state == SlotState::Retired {
            if !dry_run && !managed_by_live(s) {
                // Its manager died or gave it up: nobody else will free it.
                free_abandoned_retired(map, slot, word, me);
            }
            continue;
        }
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
        if s.owner.load(Acquire) == mine {
            finish_slot(s, word);
        }
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

/// Ends `me`'s management of every slot it manages: a retired one is freed now, an active one
/// is freed by its own detach or reclaim.
pub(crate) fn unmanage(map: &PoolMap, me: ProcessIdentity) {
    let mine = manager_word(Some(me));
    for slot in 0..MAX_PROCESSES {
        let s = &map.slots()[slot];
        if s.manager.compare_exchange(mine, 0, AcqRel, Relaxed).is_err() {
            continue;
        }
        let word = s.owner.load(Acquire);
        if Owner::decode(word).state == SlotState::Retired {
            free_abandoned_retired(map, slot, word, me);
        }
    }
}

/// Frees a RETIRED slot whose manager died: nobody will release it otherwise.
fn free_abandoned_retired(map: &PoolMap, slot: usize, word: u64, me: ProcessIdentity) {
    let s = &map.slots()[slot];
    let mine = Owner::encode(SlotState::Reclaiming, me);
    if s.owner.compare_exchange(word, mine, AcqRel, Relaxed).is_ok() {
        protocol::reclaim_holder(map, slot_bit(slot));
        s.manager.store(0, Relaxed);
        s.owner.store(0, Release);
    }
}

/// Whether any slot is attached or being reclaimed (RETIRED slots hold nothing).
pub(crate) fn anyone_attached(map: &PoolMap) -> bool {
    map.slots().iter().any(|s| {
        !matches!(
            Owner::decode(s.owner.load(Acquire)).state,
            SlotState::Free | SlotState::Retired
        )
    })
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
