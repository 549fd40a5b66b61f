//! Random numbers from the kernel (ids and socket keys: unique, not secret).

/// 64 random bits (mixed with the monotonic clock should the kernel not answer).
pub fn u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = rustix::rand::getrandom(&mut b, rustix::rand::GetRandomFlags::empty());
    u64::from_le_bytes(b) ^ super::time::monotonic_ns().rotate_left(32)
}
