//! The shared-memory layout of a segment.
//!
//! ```text
//! 0            SegmentHeader (256 B): object header, sizes, type, placement, version line
//! page_size    the data, `data_size` bytes (the file is rounded up to whole pages)
//! ```

use std::sync::atomic::{AtomicU32, AtomicU64};

use crate::error::{Error, Result};
use crate::object::ObjectHeader;
use crate::os::map::SharedLayout;
use xmem_os::assert_layout;

/// Version of this layout.
pub(super) const LAYOUT_VERSION: u32 = 1;

/// Smallest segment.
pub const MIN_SIZE: u64 = 4096;
/// Largest segment.
pub const MAX_SIZE: u64 = 1 << 30;
/// Segments are sized in whole pages.
pub(super) const PAGE: u64 = 4096;

/// [`SegmentHeader::placement`] bit: the data is on huge pages.
pub(super) const PLACED_HUGE: u32 = 1;
/// [`SegmentHeader::placement`] bit: the pages are locked in RAM.
pub(super) const PLACED_LOCKED: u32 = 1 << 1;
/// [`SegmentHeader::placement`] bit: the pages are bound to `numa_node`.
pub(super) const PLACED_NUMA: u32 = 1 << 2;

/// A segment's header.
#[repr(C, align(64))]
#[derive(Debug)]
pub(super) struct SegmentHeader {
    /// The common object header; its owner is the writer.
    pub object: ObjectHeader,
    /// Offset of the data (the page size: 4 KiB, or the huge page size).
    pub data_offset: AtomicU64,
    /// Usable bytes of data.
    pub data_size: AtomicU64,
    /// Hash of the element type of a typed segment ([`crate::segment::Segment`]); 0 for bytes.
    pub type_hash: AtomicU64,
    /// Size of that type.
    pub type_size: AtomicU64,
    /// Page size of the mapping.
    pub page_size: AtomicU64,
    /// `PLACED_*` bits.
    pub placement: AtomicU32,
    /// NUMA node, if `PLACED_NUMA`.
    pub numa_node: AtomicU32,
    /// [`LAYOUT_HASH`] of the creating build.
    pub layout_hash: AtomicU64,
    _reserved: AtomicU64,
    /// The seqlock version: even when the data is complete, odd while the writer writes.
    pub version: AtomicU64,
    /// `CLOCK_MONOTONIC_COARSE` ns of the writer's last heartbeat: explicit ones, and at least
    /// one write in 32.
    pub heartbeat_ns: AtomicU64,
    _pad: [AtomicU64; 6],
}

assert_layout!(SegmentHeader, size 256, align 64, {
    object: 0, data_offset: 128, data_size: 136, type_hash: 144, type_size: 152, page_size: 160,
    placement: 168, numa_node: 172, layout_hash: 176, version: 192, heartbeat_ns: 200,
});
// SAFETY: repr(C), only atomics, layout asserted above.
unsafe impl SharedLayout for SegmentHeader {}

/// Hash of the header's shape, refused if another build's differs.
pub(super) const LAYOUT_HASH: u64 = {
    use std::mem::{offset_of, size_of};
    let parts = [
        size_of::<SegmentHeader>(),
        offset_of!(SegmentHeader, data_offset),
        offset_of!(SegmentHeader, type_hash),
        offset_of!(SegmentHeader, placement),
        offset_of!(SegmentHeader, version),
        offset_of!(SegmentHeader, heartbeat_ns),
    ];
    let mut h: u64 = 0xcbf29ce484222325;
    let mut i = 0;
    while i < parts.len() {
        h = (h ^ parts[i] as u64).wrapping_mul(0x100000001b3);
        i += 1;
    }
    h
};

/// Checks a requested data size.
pub(super) fn validate_size(size: u64) -> Result<()> {
    let reason = if size < MIN_SIZE {
        "smaller than 4 KiB"
    } else if size > MAX_SIZE {
        "larger than 1 GiB"
    } else if size % PAGE != 0 {
        "not a multiple of the 4 KiB page size"
    } else {
        return Ok(());
    };
    Err(Error::InvalidSize {
        size,
        reason: format!("{reason}; segment sizes are 4 KiB to 1 GiB in whole 4 KiB pages"),
    })
}

/// Total file size for `data_size` bytes on pages of `page_size`.
pub(super) fn total_size(data_size: u64, page_size: u64) -> u64 {
    page_size + data_size.div_ceil(page_size) * page_size
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked_with_a_reason() {
        for ok in [4096, 8192, 1 << 30] {
            validate_size(ok).unwrap();
        }
        for (bad, why) in [
            (0, "smaller"),
            (4095, "smaller"),
            (5000, "multiple"),
            ((1 << 30) + 4096, "larger"),
        ] {
            let e = validate_size(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(total_size(4096, 4096), 8192);
        assert_eq!(total_size(4096, 2 << 20), 4 << 20);
    }
}
