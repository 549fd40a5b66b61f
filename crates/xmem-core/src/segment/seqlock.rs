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

/// Copies `src` to `dst` with relaxed atomic stores: bytes up to 8-byte alignment, then words.
///
/// # Safety
///
/// `dst .. dst + src.len()` must lie in a mapping that stays mapped during the call.
#[inline]
pub unsafe fn store_bytes(dst: *mut u8, src: &[u8]) {
    let head = dst.align_offset(8).min(src.len());
    for (i, &b) in src[..head].iter().enumerate() {
        // SAFETY: dst + i is in range (caller), and any address is aligned for a u8.
        unsafe { AtomicU8::from_ptr(dst.add(i)) }.store(b, Relaxed);
    }
    let words = src[head..].chunks_exact(8);
    let tail = words.remainder();
    let mut at = head;
    for w in words {
        let v = u64::from_ne_bytes(w.try_into().expect("chunks of 8"));
        // SAFETY: dst + at is 8-aligned (after the head) and the 8 bytes are in range.
        unsafe { AtomicU64::from_ptr(dst.add(at).cast::<u64>()) }.store(v, Relaxed);
        at += 8;
    }
    for (i, &b) in tail.iter().enumerate() {
        // SAFETY: as for the head.
        unsafe { AtomicU8::from_ptr(dst.add(at + i)) }.store(b, Relaxed);
    }
}

/// Copies `dst.len()` bytes from `src` into `dst` with relaxed atomic loads.
///
/// # Safety
///
/// `src .. src + dst.len()` must lie in a mapping that stays mapped during the call.
#[inline]
pub unsafe fn load_bytes(src: *const u8, dst: &mut [u8]) {
    let len = dst.len();
    let head = src.align_offset(8).min(len);
    for (i, b) in dst[..head].iter_mut().enumerate() {
        // SAFETY: src + i is in range (caller); atomics are only read here.
        *b = unsafe { AtomicU8::from_ptr(src.add(i).cast_mut()) }.load(Relaxed);
    }
    let (_, rest) = dst.split_at_mut(head);
    let mut words = rest.chunks_exact_mut(8);
    let mut at = head;
    for w in &mut words {
        // SAFETY: src + at is 8-aligned and the 8 bytes are in range.
        let v = unsafe { AtomicU64::from_ptr(src.add(at).cast::<u64>().cast_mut()) }.load(Relaxed);
        w.copy_from_slice(&v.to_ne_bytes());
        at += 8;
    }
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        // SAFETY: as for the head.
        *b = unsafe { AtomicU8::from_ptr(src.add(at + i).cast_mut()) }.load(Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn copies_round_trip_at_any_offset_and_length(
            data in prop::collection::vec(any::<u8>(), 0..200),
            offset in 0usize..16,
        ) {
            let mut area = vec![0u64; 40]; // 320 bytes, 8-aligned
            let base = area.as_mut_ptr().cast::<u8>();
            // SAFETY: offset + data.len() ≤ 16 + 200 < 320, inside `area`.
            unsafe { store_bytes(base.add(offset), &data) };
            let mut out = vec![0u8; data.len()];
            // SAFETY: same range.
            unsafe { load_bytes(base.add(offset), &mut out) };
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
