//! The atomic operations the lock-free protocols use, as traits.
//!
//! Protocol code is generic over these, so the very same functions run on `std` atomics inside
//! shared memory and on `loom` atomics inside the model checker (`RUSTFLAGS="--cfg loom"`).
//! Monomorphisation makes the indirection free.

use std::sync::atomic::Ordering;

/// A 64-bit atomic word.
pub trait Word64: Sync {
    /// `load`.
    fn load(&self, order: Ordering) -> u64;
    /// `store`.
    fn store(&self, value: u64, order: Ordering);
    /// Strong `compare_exchange`.
    fn cas(&self, current: u64, new: u64, success: Ordering, failure: Ordering) -> Result<u64, u64>;
    /// `fetch_or`.
    fn fetch_or(&self, value: u64, order: Ordering) -> u64;
    /// `fetch_and`.
    fn fetch_and(&self, value: u64, order: Ordering) -> u64;
    /// `swap`.
    fn swap(&self, value: u64, order: Ordering) -> u64;
}

/// A 32-bit atomic word.
pub(crate) trait Word32: Sync {
    /// `load`.
    fn load(&self, order: Ordering) -> u32;
    /// `store`.
    fn store(&self, value: u32, order: Ordering);
    /// `fetch_add` (wrapping).
    fn fetch_add(&self, value: u32, order: Ordering) -> u32;
    /// `swap`.
    fn swap(&self, value: u32, order: Ordering) -> u32;
}

macro_rules! word64 {
    ($t:ty, $store:ident) => {
        impl Word64 for $t {
            #[inline(always)]
            fn load(&self, o: Ordering) -> u64 {
                <$t>::load(self, o)
            }
            #[inline(always)]
            fn store(&self, v: u64, o: Ordering) {
                store!($t, $store, self, v, o)
            }
            #[inline(always)]
            fn cas(&self, c: u64, n: u64, s: Ordering, f: Ordering) -> Result<u64, u64> {
                <$t>::compare_exchange(self, c, n, s, f)
            }
            #[inline(always)]
            fn fetch_or(&self, v: u64, o: Ordering) -> u64 {
                <$t>::fetch_or(self, v, o)
            }
            #[inline(always)]
            fn fetch_and(&self, v: u64, o: Ordering) -> u64 {
                <$t>::fetch_and(self, v, o)
            }
            #[inline(always)]
            fn swap(&self, v: u64, o: Ordering) -> u64 {
                <$t>::swap(self, v, o)
            }
        }
    };
}

macro_rules! word32 {
    ($t:ty, $store:ident) => {
        impl Word32 for $t {
            #[inline(always)]
            fn load(&self, o: Ordering) -> u32 {
                <$t>::load(self, o)
            }
            #[inline(always)]
            fn store(&self, v: u32, o: Ordering) {
                store!($t, $store, self, v, o)
            }
            #[inline(always)]
            fn fetch_add(&self, v: u32, o: Ordering) -> u32 {
                <$t>::fetch_add(self, v, o)
            }
            #[inline(always)]
            fn swap(&self, v: u32, o: Ordering) -> u32 {
                <$t>::swap(self, v, o)
            }
        }
    };
}

/// A store. Under loom it is a `swap` with the same ordering: what other threads can observe is
/// identical, but loom 0.7 lets a compare-exchange succeed against a value that a plain store
/// has already replaced (an execution no C++ ordering allows; reproduced in a two-thread model),
/// which would make the model report impossible failures.
macro_rules! store {
    ($t:ty, plain, $s:expr, $v:expr, $o:expr) => {
        <$t>::store($s, $v, $o)
    };
    ($t:ty, swap, $s:expr, $v:expr, $o:expr) => {{
        let _ = <$t>::swap($s, $v, $o);
    }};
}

word64!(std::sync::atomic::AtomicU64, plain);
word32!(std::sync::atomic::AtomicU32, plain);
#[cfg(loom)]
word64!(loom::sync::atomic::AtomicU64, swap);
#[cfg(loom)]
word32!(loom::sync::atomic::AtomicU32, swap);

/// A memory fence (loom's under `cfg(loom)`, so models see it).
#[inline(always)]
pub(crate) fn fence(order: Ordering) {
    #[cfg(loom)]
    loom::sync::atomic::fence(order);
    #[cfg(not(loom))]
    std::sync::atomic::fence(order);
}

/// Orders a preceding `SeqCst` read-modify-write before a following `SeqCst` load of another
/// word (the store→load order of a Dekker handshake).
///
/// `SeqCst` operations already give that order (they lie in one total order, C++20 [atomics.order];
/// a locked instruction on x86, `stlxr`/`ldar` on ARM), so in real builds this is nothing. Loom,
/// however, treats `SeqCst` accesses as `AcqRel` (tokio-rs/loom#180) and would report lost
/// wake-ups that cannot happen; under `cfg(loom)` this is the fence that models the real order.
#[inline(always)]
pub(crate) fn seqcst_store_load() {
    #[cfg(loom)]
    loom::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
}

/// A small non-zero number naming the calling thread, unique among live threads (for ownership
/// tags in process-local words).
#[inline]
pub(crate) fn thread_token() -> u32 {
    use std::cell::Cell;
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(1);
    #[cfg(not(loom))]
    std::thread_local!(static TOKEN: Cell<u32> = const { Cell::new(0) });
    #[cfg(loom)]
    loom::thread_local!(static TOKEN: Cell<u32> = Cell::new(0));
    TOKEN.with(|t| {
        if t.get() == 0 {
            let mut n = NEXT.fetch_add(1, Ordering::Relaxed);
            if n == 0 {
                n = NEXT.fetch_add(1, Ordering::Relaxed); // skip 0 on wrap-around
            }
            t.set(n);
        }
        t.get()
    })
}

/// Backs off inside a short spin-wait (another thread is mid-transition).
#[inline]
pub(crate) fn backoff(spins: &mut u32) {
    #[cfg(loom)]
    {
        *spins += 1;
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    {
        *spins += 1;
        if *spins < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
}
