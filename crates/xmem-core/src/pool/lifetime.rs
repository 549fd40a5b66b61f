//! How long a process's attachment to a pool ([`PoolInner`]) lives, without costing the hot
//! paths a reference-count update.
//!
//! An attachment lives while a [`BufferPool`](super::BufferPool) handle exists (counted in
//! `handles`; cloning handles is rare) *or* while the process holds a reference to any of its
//! buffers (its local counts, which the protocol keeps anyway). Guards therefore carry a plain
//! pointer and touch no shared counter: an `Arc` in every guard would add two locked
//! instructions (≈ 20 ns here) to every acquire or get.
//!
//! When the last handle goes and no buffer is held, the attachment is finalised at once. If
//! guards remain, it moves to the process's orphan list; the release that makes its last local
//! count zero sees [`ORPHANS_PENDING`] and finalises it. A release touches its attachment for
//! the last time when it stores the local count 0, so once every count reads 0 nobody is inside
//! the attachment any more and freeing it is safe.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering::*};
use std::sync::Mutex;

use super::PoolInner;

/// A pointer to a live attachment; shared between threads like `&PoolInner`.
#[derive(Clone, Copy)]
pub(crate) struct InnerPtr(pub NonNull<PoolInner>);

// SAFETY: PoolInner is Send + Sync; the pointer is only dereferenced while the attachment is
// alive (see the module docs), exactly like a shared reference.
unsafe impl Send for InnerPtr {}
// SAFETY: as above.
unsafe impl Sync for InnerPtr {}

/// Attachments that can be re-used by `open` in this process, keyed by the object's
/// (device, inode) and the pid that attached (a forked child must attach anew).
static OPEN: Mutex<Vec<OpenEntry>> = Mutex::new(Vec::new());

/// An entry of [`OPEN`]: the object's (device, inode), the attaching pid, the attachment.
type OpenEntry = ((u64, u64), u32, InnerPtr);

/// Attachments without handles whose buffers are still held by guards.
static ORPHANS: Mutex<Vec<InnerPtr>> = Mutex::new(Vec::new());

/// Set while [`ORPHANS`] is not empty: the one word a release reads to know it may have to
/// finalise an attachment.
pub(crate) static ORPHANS_PENDING: AtomicBool = AtomicBool::new(false);

/// Moves a new attachment to the heap, with one handle; a `reusable` one is registered for
/// re-use by later opens in this process (a stream subscriber's private one is not).
pub(crate) fn register(inner: PoolInner, key: (u64, u64), reusable: bool) -> InnerPtr {
    inner.handles.store(1, Relaxed);
    let pid = inner.identity.pid;
    let ptr = InnerPtr(NonNull::from(Box::leak(Box::new(inner))));
    if reusable {
        OPEN.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((key, pid, ptr));
    }
    ptr
}

/// A new handle on this process's live attachment to the object `key`, if there is one.
pub(crate) fn reuse(key: (u64, u64), pid: u32) -> Option<InnerPtr> {
    let open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    open.iter().find_map(|(k, p, ptr)| {
        if *k != key || *p != pid {
            return None;
        }
        // SAFETY: entries of OPEN have handles, so they are alive while we hold the lock (the
        // last handle removes its entry under this lock before anything is freed).
        let inner = unsafe { ptr.0.as_ref() };
        // Only from a live count: a handle count that reached 0 is being retired right now.
        inner
            .handles
            .fetch_update(AcqRel, Acquire, |n| (n > 0).then_some(n + 1))
            .ok()
            .map(|_| *ptr)
    })
}

/// A new handle from a guard (the attachment is alive: the guard holds a reference).
pub(crate) fn handle_from_guard(ptr: InnerPtr) {
    let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: the calling guard keeps the attachment alive.
    let inner = unsafe { ptr.0.as_ref() };
    if inner.handles.fetch_add(1, AcqRel) == 0 {
        // It was an orphan: adopt it again.
        let mut orphans = ORPHANS.lock().unwrap_or_else(|e| e.into_inner());
        orphans.retain(|o| o.0 != ptr.0);
        ORPHANS_PENDING.store(!orphans.is_empty(), Release);
        if !inner.private {
            open.push((inner.key, inner.identity.pid, ptr));
        }
    }
}

/// Another handle on an attachment that already has one.
pub(crate) fn clone_handle(ptr: InnerPtr) {
    // SAFETY: the caller owns a handle, which keeps the attachment alive.
    unsafe { ptr.0.as_ref() }.handles.fetch_add(1, Relaxed);
}

/// Drops a handle; the last one retires the attachment (at once, or when its guards are gone).
pub(crate) fn drop_handle(ptr: InnerPtr) {
    // SAFETY: the caller owns a handle, which keeps the attachment alive until here.
    let inner = unsafe { ptr.0.as_ref() };
    if inner.handles.fetch_sub(1, AcqRel) != 1 {
        return;
    }
    let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    if inner.handles.load(Acquire) != 0 {
        return; // a guard made a new handle meanwhile
    }
    open.retain(|e| e.2 .0 != ptr.0);
    drop(open);
    if all_released(inner) {
        // SAFETY: no handle, no reference: nobody else can reach the attachment.
        unsafe { finalise(ptr) };
    } else {
        ORPHANS.lock().unwrap_or_else(|e| e.into_inner()).push(ptr);
        ORPHANS_PENDING.store(true, Release);
        // A guard may have let go between the check and the push without seeing the flag.
        sweep_orphans();
    }
}

/// Finalises every orphan whose references are all gone. Called by releases when
/// [`ORPHANS_PENDING`] is set.
pub(crate) fn sweep_orphans() {
    let mut orphans = ORPHANS.lock().unwrap_or_else(|e| e.into_inner());
    let mut i = 0;
    while i < orphans.len() {
        let ptr = orphans[i];
        // SAFETY: orphans are alive until finalised here, under this lock.
        if all_released(unsafe { ptr.0.as_ref() }) {
            orphans.swap_remove(i);
            // SAFETY: no handle (it is an orphan) and no reference (all counts 0 and no
            // transition in progress): nobody else can reach it.
            unsafe { finalise(ptr) };
        } else {
            i += 1;
        }
    }
    ORPHANS_PENDING.store(!orphans.is_empty(), Release);
}

/// Whether the process holds no reference through this attachment: every local word is 0 (no
/// reference, no write guard, no thread moving a count).
///
/// Sound without fences: the word of a live guard only ever changes from non-zero to non-zero;
/// it becomes non-zero from 0 only under a handle (acquire, get), which synchronises with the
/// retiring thread through the handle count; and the 0 a release stores is its last write to the
/// attachment, so reading it means that release is done.
fn all_released(inner: &PoolInner) -> bool {
    inner.local.iter().all(|e| e.state.load(Acquire) == 0)
}

/// Detaches and frees the attachment.
///
/// # Safety
///
/// No handle and no guard may refer to it any more.
unsafe fn finalise(ptr: InnerPtr) {
    // SAFETY: allocated by Box::leak in `register`; the caller guarantees exclusivity.
    drop(unsafe { Box::from_raw(ptr.0.as_ptr()) });
}
