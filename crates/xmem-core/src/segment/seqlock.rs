//! The even/odd version protocol of a segment, and the racing copies it brackets.
//!
//! This is the seqlock of Boehm, "Can seqlocks get along with programming language memory
//! models?" (MSPC 2012), with every access to the payload atomic, so that a read racing the
//! writer is a data race in no language model (a plain `memcpy` would be one, whatever the
//! hardware does):
//!
//! ```text
//! writer                                   reader
//!   v = version (even)                       s1 = version.load(Acquire)   — odd: retry
//!   version.store(v + 1, Relaxed)            copy out (relaxed atomic loads)
//!   fence(Release)                           fence(Acquire)
//!   copy in (relaxed atomic stores)          s2 = version.load(Relaxed)   — s1 ≠ s2: retry
//!   version.store(v + 2, Release)
//! ```
//!
//! If the reader's copy saw any store of a write, its acquire fence synchronises with that
//! write's release fence, so the odd store happens-before `s2`, and `s2 ≠ s1`. If `s1` is the
//! even store of write k, everything of write k happens-before the copy. So an accepted copy is
//! exactly one write. Versions wrap (only parity and equality matter).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering::*};

use crate::sync::{fence, Word64};

/// Starts a write: makes the version odd. Returns the even version the write started from.
#[inline]
pub fn write_begin<W: Word64>(version: &W) -> u64 {
    // A version left odd (only a damaged segment has one) counts as the next even one.
    let v = (version.load(Relaxed).wrapping_add(1)) & !1;
    version.store(v.wrapping_add(1), Relaxed);
    fence(Release);
    v
}

/// Ends a write started at `v`: publishes it with the next even version.
#[inline]
pub fn write_end<W: Word64>(version: &W, v: u64) {
    version.store(v.wrapping_add(2), Release);
}

/// Starts a read: the even version to validate against, or `None` while a write is in progress.
#[inline]
pub fn read_begin<W: Word64>(version: &W) -> Option<u64> {
    let s = version.load(Acquire);
    (s & 1 == 0).then_some(s)
}

/// Ends a read started at `s`: whether what was read is one complete write.
#[inline]
pub fn read_validate<W: Word64>(version: &W, s: u64) -> bool {
    fence(Acquire);
    version.load(Relaxed) == s
}

/// Copies `src` to `dst` with relaxed atomic stores: single bytes up to 8-byte alignment, then
/// 16-byte aligned stores where the CPU makes them atomic (see [`wide`]), then words and bytes.
///
/// # Safety
///
/// `dst .. dst + src.len()` must lie in a mapping that stays mapped during the call.
#[inline]
pub unsafe fn store_bytes(dst: *mut u8, src: &[u8]) {
    // SAFETY: every access below is inside dst .. dst + len (the caller's range)
    // and aligned for its width, which the loop conditions establish.
    unsafe { store_bytes_with(dst, src, wide::available()) }
}

/// Copies `dst.len()` bytes from `src` into `dst` with relaxed atomic loads (as `store_bytes`).
///
/// # Safety
///
/// `src .. src + dst.len()` must lie in a mapping that stays mapped during the call.
#[inline]
pub unsafe fn load_bytes(src: *const u8, dst: &mut [u8]) {
    // SAFETY: as in `store_bytes`.
    unsafe { load_bytes_with(src, dst, wide::available()) }
}

/// [`store_bytes`], choosing whether to use 16-byte stores (tests try both ways).
///
/// # Safety
///
/// As [`store_bytes`]; `wide` only if [`wide::available`].
#[inline(always)]
unsafe fn store_bytes_with(dst: *mut u8, src: &[u8], wide: bool) {
    let (n, s) = (src.len(), src.as_ptr());
    let mut i = 0;
    let aligned = |i: usize, to: usize| (dst as usize + i) % to == 0;
    while i < n && !aligned(i, 8) {
        // SAFETY: i < n, in range; a byte is always aligned.
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(src[i], Relaxed);
        i += 1;
    }
    if wide {
        if i + 8 <= n && !aligned(i, 16) {
            // SAFETY: 8 bytes in range, 8-aligned.
            unsafe { store_word(dst.add(i), s.add(i)) };
            i += 8;
        }
        while i + 64 <= n {
            // SAFETY: 64 bytes in range, 16-aligned; AVX present (caller).
            unsafe { self::wide::store64(dst.add(i), s.add(i)) };
            i += 64;
        }
    }
    while i + 8 <= n {
        // SAFETY: 8 bytes in range, 8-aligned.
        unsafe { store_word(dst.add(i), s.add(i)) };
        i += 8;
    }
    while i < n {
        // SAFETY: in range.
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(src[i], Relaxed);
        i += 1;
    }
}

/// [`load_bytes`], choosing whether to use 16-byte loads.
///
/// # Safety
///
/// As [`load_bytes`]; `wide` only if [`wide::available`].
#[inline(always)]
unsafe fn load_bytes_with(src: *const u8, dst: &mut [u8], wide: bool) {
    let (n, d) = (dst.len(), dst.as_mut_ptr());
    let mut i = 0;
    let aligned = |i: usize, to: usize| (src as usize + i) % to == 0;
    while i < n && !aligned(i, 8) {
        // SAFETY: in range; atomics are only read here.
        dst[i] = unsafe { AtomicU8::from_ptr(src.add(i).cast_mut()) }.load(Relaxed);
        i += 1;
    }
    if wide {
        if i + 8 <= n && !aligned(i, 16) {
            // SAFETY: 8 bytes in range, 8-aligned.
            unsafe { load_word(src.add(i), d.add(i)) };
            i += 8;
        }
        while i + 64 <= n {
            // SAFETY: 64 bytes in range, 16-aligned; AVX present (caller).
            unsafe { self::wide::load64(src.add(i), d.add(i)) };
            i += 64;
        }
    }
    while i + 8 <= n {
        // SAFETY: 8 bytes in range, 8-aligned.
        unsafe { load_word(src.add(i), d.add(i)) };
        i += 8;
    }
    while i < n {
        // SAFETY: in range.
        dst[i] = unsafe { AtomicU8::from_ptr(src.add(i).cast_mut()) }.load(Relaxed);
        i += 1;
    }
}

/// One relaxed 8-byte atomic store of the 8 bytes at `src` (any alignment) to `dst`.
///
/// # Safety
///
/// `dst` 8-aligned and writable, `src` readable for 8 bytes.
#[inline(always)]
unsafe fn store_word(dst: *mut u8, src: *const u8) {
    // SAFETY: caller's contract.
    unsafe { AtomicU64::from_ptr(dst.cast::<u64>()).store(src.cast::<u64>().read_unaligned(), Relaxed) }
}

/// One relaxed 8-byte atomic load from `src` into the 8 bytes at `dst` (any alignment).
///
/// # Safety
///
/// `src` 8-aligned and readable, `dst` writable for 8 bytes.
#[inline(always)]
unsafe fn load_word(src: *const u8, dst: *mut u8) {
    // SAFETY: caller's contract.
    unsafe {
        dst.cast::<u64>()
            .write_unaligned(AtomicU64::from_ptr(src.cast::<u64>().cast_mut()).load(Relaxed))
    }
}

/// 16-byte atomic accesses on x86-64.
///
/// Intel SDM vol. 3A §9.1.1: processors that enumerate AVX carry out the 16-byte accesses of
/// `MOVDQA` atomically (AMD documents the same for AVX processors). A `MOVDQA` store is then at
/// least as strong as the two relaxed 8-byte atomic stores the seqlock asks for, at half the
/// instruction count, which is what bounds a copy on this hardware (one store per cycle). The
/// `asm!` blocks below are exactly such accesses; without AVX the 8-byte atomics are used.
pub mod wide {
    /// Whether 16-byte `MOVDQA` accesses are atomic here (checked once).
    #[inline]
    pub fn available() -> bool {
        #[cfg(all(target_arch = "x86_64", not(loom)))]
        {
            use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
            static STATE: AtomicU8 = AtomicU8::new(0); // 0: unknown, 1: no, 2: yes
            match STATE.load(Relaxed) {
                0 => {
                    let yes = std::is_x86_feature_detected!("avx");
                    STATE.store(if yes { 2 } else { 1 }, Relaxed);
                    yes
                }
                s => s == 2,
            }
        }
        #[cfg(not(all(target_arch = "x86_64", not(loom))))]
        {
            false
        }
    }

    /// Stores 64 bytes from `src` (any alignment) to `dst` as four 16-byte atomic stores.
    ///
    /// # Safety
    ///
    /// `dst` 16-aligned and writable for 64 bytes, `src` readable for 64 bytes, [`available`].
    #[inline(always)]
    pub unsafe fn store64(dst: *mut u8, src: *const u8) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: caller's contract; the block only reads src, writes dst, touches no stack.
        unsafe {
            core::arch::asm!(
                "movdqu {a}, [{s}]",
                "movdqu {b}, [{s} + 16]",
                "movdqu {c}, [{s} + 32]",
                "movdqu {e}, [{s} + 48]",
                "movdqa [{d}], {a}",
                "movdqa [{d} + 16], {b}",
                "movdqa [{d} + 32], {c}",
                "movdqa [{d} + 48], {e}",
                d = in(reg) dst,
                s = in(reg) src,
                a = out(xmm_reg) _,
                b = out(xmm_reg) _,
                c = out(xmm_reg) _,
                e = out(xmm_reg) _,
                options(nostack, preserves_flags),
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("wide::available() is false here: {dst:?} {src:?}");
    }

    /// Loads 64 bytes from `src` as four 16-byte atomic loads into `dst` (any alignment).
    ///
    /// # Safety
    ///
    /// `src` 16-aligned and readable for 64 bytes, `dst` writable for 64 bytes, [`available`].
    #[inline(always)]
    pub unsafe fn load64(src: *const u8, dst: *mut u8) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: caller's contract; the block only reads src, writes dst, touches no stack.
        unsafe {
            core::arch::asm!(
                "movdqa {a}, [{s}]",
                "movdqa {b}, [{s} + 16]",
                "movdqa {c}, [{s} + 32]",
                "movdqa {e}, [{s} + 48]",
                "movdqu [{d}], {a}",
                "movdqu [{d} + 16], {b}",
                "movdqu [{d} + 32], {c}",
                "movdqu [{d} + 48], {e}",
                d = in(reg) dst,
                s = in(reg) src,
                a = out(xmm_reg) _,
                b = out(xmm_reg) _,
                c = out(xmm_reg) _,
                e = out(xmm_reg) _,
                options(nostack, preserves_flags),
            );
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("wide::available() is false here: {dst:?} {src:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn copies_round_trip_at_any_offset_and_length(
            data in prop::collection::vec(any::<u8>(), 0..300),
            offset in 0usize..40,
            wide_stores in any::<bool>(),
            wide_loads in any::<bool>(),
        ) {
            let mut area = vec![0u128; 24]; // 384 bytes, 16-aligned
            let base = area.as_mut_ptr().cast::<u8>();
            let (ws, wl) = (wide_stores && wide::available(), wide_loads && wide::available());
            // SAFETY: offset + data.len() < 40 + 300 < 384, inside `area`.
            unsafe { store_bytes_with(base.add(offset), &data, ws) };
            let mut out = vec![0u8; data.len()];
            // SAFETY: same range.
            unsafe { load_bytes_with(base.add(offset), &mut out, wl) };
            prop_assert_eq!(&out, &data);
            // Nothing outside the range was touched.
            let bytes: Vec<u8> = area.iter().flat_map(|w| w.to_ne_bytes()).collect();
            prop_assert!(bytes[..offset].iter().all(|&b| b == 0));
            prop_assert!(bytes[offset + data.len()..].iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn versions_go_odd_then_even_and_wrap() {
        let v = AtomicU64::new(u64::MAX - 1);
        let s = write_begin(&v);
        assert_eq!(s, u64::MAX - 1);
        assert_eq!(v.load(Relaxed), u64::MAX);
        assert_eq!(read_begin(&v), None);
        write_end(&v, s);
        assert_eq!(v.load(Relaxed), 0);
        let r = read_begin(&v).unwrap();
        assert!(read_validate(&v, r));
        // A version left odd by a damaged segment is moved past, not reused.
        let odd = AtomicU64::new(7);
        assert_eq!(write_begin(&odd), 8);
    }
}
