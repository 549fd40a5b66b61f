//! The shared-memory layout of a buffer pool.
//!
//! ```text
//! 0            PoolHeader (384 B): object header, configuration, registry
//! 384          ProcessSlot × 63 (64 B each): who is attached
//! …            free set: `WakeWords` (parked, wake_seq), then the free hints, one bit per
//!              buffer, 64 per word, starting in the same cache line
//! …            BufferState × N (64 B each, one cache line): holder word + generation
//! …            BufferMeta × N (512 B each): tensor description and metadata
//! arena_offset the data arena, N × stride bytes, page-aligned, each buffer `alignment`-aligned
//! ```
//!
//! Everything is computed from three numbers (count, size, alignment), so an opener recomputes
//! the layout and compares instead of trusting stored offsets.

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicU8};

use crate::error::{Error, Result};
use crate::object::ObjectHeader;
use crate::os::map::SharedLayout;
use crate::tensor::MAX_DIMS;
use xmem_os::assert_layout;

/// Version of this layout; bumped on any incompatible change.
pub(crate) const LAYOUT_VERSION: u32 = 4;

/// Most processes attached to one pool at a time: one bit each in a 64-bit holder word, whose
/// top bit is the writer flag.
pub const MAX_PROCESSES: usize = 63;

/// Most buffers in one pool.
pub const MAX_BUFFERS: u32 = 1 << 16;

/// Most bytes of user metadata per buffer.
pub const MAX_USER_METADATA: usize = 192;

/// Most bytes of a content type string.
pub(crate) const MAX_CONTENT_TYPE: usize = 32;

/// Most bytes of a producer name.
pub(crate) const MAX_PRODUCER: usize = 32;

/// Bytes reserved per buffer for a device-memory handle (a CUDA IPC handle is 64).
pub(crate) const DEVICE_HANDLE_SIZE: usize = 64;

/// A hash of every shared struct's size and field offsets, stored in each pool and compared on
/// open: two builds whose layouts differ refuse each other's pools even if someone forgot to
/// bump [`LAYOUT_VERSION`].
pub(crate) const LAYOUT_HASH: u64 = {
    use std::mem::{offset_of, size_of};
    let parts = [
        size_of::<PoolHeader>(),
        offset_of!(PoolHeader, registry),
        offset_of!(PoolHeader, layout_hash),
        offset_of!(PoolHeader, device_kind),
        offset_of!(PoolHeader, device_uuid),
        offset_of!(PoolHeader, device_bytes),
        size_of::<ProcessSlot>(),
        offset_of!(ProcessSlot, owner),
        offset_of!(ProcessSlot, reclaimed_refs),
        offset_of!(ProcessSlot, manager),
        size_of::<WakeWords>(),
        offset_of!(WakeWords, keep_back),
        offset_of!(WakeWords, wake_seq),
        size_of::<BufferState>(),
        offset_of!(BufferState, generation),
        size_of::<BufferMeta>(),
        offset_of!(BufferMeta, flags),
        offset_of!(BufferMeta, shape),
        offset_of!(BufferMeta, strides),
        offset_of!(BufferMeta, content_type),
        offset_of!(BufferMeta, producer),
        offset_of!(BufferMeta, device_handle),
        offset_of!(BufferMeta, user),
        MAX_PROCESSES,
        crate::tensor::MAX_DIMS,
    ];
    // FNV-1a over the numbers.
    let mut h: u64 = 0xcbf29ce484222325;
    let mut i = 0;
    while i < parts.len() {
        h = (h ^ parts[i] as u64).wrapping_mul(0x100000001b3);
        i += 1;
    }
    h
};

/// Where the buffers' bytes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Host memory, in the pool's own arena.
    Host,
    /// One device allocation outside the pool's file (see [`DeviceRecord`]); buffer `i` is at
    /// offset `i × stride` in it. The pool's file holds only the bookkeeping.
    Device,
}

/// What kind of memory a device pool's allocation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceKind {
    /// A memfd standing in for device memory: the same hand-over and lifetime, testable
    /// without a GPU.
    HostStandIn,
    /// A CUDA virtual-memory allocation (`cuMemCreate`), exported as a POSIX descriptor.
    Cuda,
}

impl DeviceKind {
    pub(crate) fn code(self) -> u32 {
        match self {
            DeviceKind::HostStandIn => 1,
            DeviceKind::Cuda => 2,
        }
    }

    pub(crate) fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(DeviceKind::HostStandIn),
            2 => Some(DeviceKind::Cuda),
            _ => None,
        }
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceKind::HostStandIn => "host stand-in",
            DeviceKind::Cuda => "CUDA",
        })
    }
}

/// A device pool's allocation, as its header records it: enough for an opener to find the
/// device (by UUID, since ordinals differ between processes) and to check what it imports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRecord {
    /// What the memory is.
    pub kind: DeviceKind,
    /// The device's UUID (zero for the host stand-in).
    pub uuid: [u8; 16],
    /// Bytes of the allocation: at least count × stride, rounded up to the device's granularity.
    pub bytes: u64,
}

impl DeviceRecord {
    /// The device's UUID as CUDA and nvidia-smi print it (without nvidia-smi's `GPU-`):
    /// 8-4-4-4-12 hex digits.
    pub fn uuid_text(&self) -> String {
        let h: String = self.uuid.iter().map(|b| format!("{b:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }
}

impl Storage {
    pub(crate) fn code(self) -> u32 {
        match self {
            Storage::Host => 0,
            Storage::Device => 1,
        }
    }

    pub(crate) fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(Storage::Host),
            1 => Some(Storage::Device),
            _ => None,
        }
    }
}

/// The pool's header.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct PoolHeader {
    /// The common object header.
    pub object: ObjectHeader,
    /// Number of buffers.
    pub buffer_count: AtomicU32,
    /// Alignment of each buffer in the arena.
    pub alignment: AtomicU32,
    /// Usable bytes per buffer.
    pub buffer_size: AtomicU64,
    /// Random identity of this pool instance (tokens carry it).
    pub pool_id: AtomicU64,
    /// [`Storage`] code.
    pub storage: AtomicU32,
    /// [`MAX_PROCESSES`], recorded so a reader can check it.
    pub max_processes: AtomicU32,
    /// [`LAYOUT_HASH`] of the build that created the pool.
    pub layout_hash: AtomicU64,
    /// [`DeviceKind`] code of a device pool's allocation; 0 for host storage.
    pub device_kind: AtomicU32,
    _device_reserved: AtomicU32,
    /// The device's UUID.
    pub device_uuid: [AtomicU8; 16],
    /// Bytes of the device allocation.
    pub device_bytes: AtomicU64,
    _config_reserved: [AtomicU64; 7],
    /// Bit `s` set: process slot `s` is attached. Bit 63: the pool is closing (no new attach).
    pub registry: AtomicU64,
    _pad_registry: [AtomicU64; 15],
}

assert_layout!(PoolHeader, size 384, align 64, {
    object: 0, buffer_count: 128, alignment: 132, buffer_size: 136, pool_id: 144, storage: 152,
    max_processes: 156, layout_hash: 160, device_kind: 168, device_uuid: 176, device_bytes: 192,
    registry: 256,
});

/// The parking words, at the start of the free set: every release that frees a buffer sets a
/// free hint and reads `parked`, so keeping them in the hints' first cache line makes that one
/// line, which also halves what a waker must pull from a sleeping waiter's cache.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct WakeWords {
    /// Bit `s` set: some thread of process slot `s` is parked waiting for a free buffer.
    pub parked: AtomicU64,
    /// Bit `s` set: process slot `s` may keep free hints back, so an acquirer that finds no hint
    /// must look at the holder words before it gives up (see the protocol's "Hints kept back").
    pub keep_back: AtomicU64,
    /// Futex word: bumped by a release that frees a buffer while someone is parked.
    pub wake_seq: AtomicU32,
    _pad: AtomicU32,
}

assert_layout!(WakeWords, size 24, align 8, { parked: 0, keep_back: 8, wake_seq: 16 });
// SAFETY: repr(C), only atomics, layout asserted above.
unsafe impl SharedLayout for WakeWords {}
// SAFETY: repr(C), only atomics, layout asserted above.
unsafe impl SharedLayout for PoolHeader {}

/// [`PoolHeader::registry`] bit saying the pool is being removed.
pub(crate) const REGISTRY_CLOSED: u64 = 1 << 63;

/// One attached process.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct ProcessSlot {
    /// `state:2 | pid:22 | start_ticks:40`: free, attached, or being reclaimed (see `registry`).
    pub owner: AtomicU64,
    /// Inode of the process's pid namespace.
    pub pidns: AtomicU64,
    /// When it attached, ns since the epoch.
    pub attached_unix_ns: AtomicU64,
    /// Its full start time in clock ticks.
    pub start_ticks: AtomicU64,
    /// How often it parked waiting for a buffer.
    pub waits: AtomicU64,
    /// How often such a wait timed out.
    pub timeouts: AtomicU64,
    /// References of dead processes it returned to the pool.
    pub reclaimed_refs: AtomicU64,
    /// For a slot managed by a stream's publisher (a subscriber's): that publisher, encoded like
    /// `owner` (state bits `ACTIVE`); 0 for an ordinary slot. See `registry`.
    pub manager: AtomicU64,
}

assert_layout!(ProcessSlot, size 64, align 64, {
    owner: 0, pidns: 8, attached_unix_ns: 16, start_ticks: 24, waits: 32, timeouts: 40, reclaimed_refs: 48,
    manager: 56,
});
// SAFETY: repr(C), only atomics, layout asserted above.
unsafe impl SharedLayout for ProcessSlot {}

/// The state of one buffer: the truth about who holds it. One cache line, so that buffers
/// used by different processes never share one.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct BufferState {
    /// Bit 63: a writer holds it exclusively. Bits 0..63: which process slots hold it.
    /// 0 means free.
    pub holders: AtomicU64,
    /// The buffer's life: incremented each time it is acquired. Tokens carry it.
    pub generation: AtomicU64,
    _pad: [AtomicU64; 6],
}

assert_layout!(BufferState, size 64, align 64, { holders: 0, generation: 8 });
// SAFETY: repr(C), only atomics, layout asserted above.
unsafe impl SharedLayout for BufferState {}

/// [`BufferMeta::flags`] bit: a tensor description is set (else the buffer is raw bytes).
pub(crate) const META_TENSOR: u32 = 1;
/// [`BufferMeta::flags`] bit: `timestamp_ns` is set.
pub(crate) const META_TIMESTAMP: u32 = 1 << 1;
/// [`BufferMeta::flags`] bit: `sequence` is set.
pub(crate) const META_SEQUENCE: u32 = 1 << 2;
/// [`BufferMeta::flags`] bit: `content_type` is set.
pub(crate) const META_CONTENT_TYPE: u32 = 1 << 3;
/// [`BufferMeta::flags`] bit: `producer` is set.
pub(crate) const META_PRODUCER: u32 = 1 << 4;
/// [`BufferMeta::flags`] bit: `user` is set.
pub(crate) const META_USER: u32 = 1 << 5;

/// A buffer's description. Written only by the buffer's exclusive writer, read by holders.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct BufferMeta {
    /// Which fields are set in this life (`META_*` bits); a fresh buffer clears them all with
    /// one store, whatever the previous life left in the fields.
    pub flags: AtomicU32,
    /// [`DType`](crate::tensor::DType) code.
    pub dtype: AtomicU32,
    /// Number of dimensions.
    pub ndim: AtomicU32,
    /// Bytes used in `content_type`.
    pub content_type_len: AtomicU32,
    /// Byte offset of the first element.
    pub byte_offset: AtomicU64,
    /// Producer's timestamp, ns (meaning is the producer's).
    pub timestamp_ns: AtomicU64,
    /// Producer's sequence number.
    pub sequence: AtomicU64,
    /// Bytes used in `producer`.
    pub producer_len: AtomicU32,
    /// Bytes used in `user`.
    pub user_len: AtomicU32,
    /// Bytes used in `device_handle`.
    pub device_handle_len: AtomicU32,
    /// Device ordinal, for device storage.
    pub device_id: AtomicU32,
    _reserved: AtomicU64,
    /// Extent of each dimension.
    pub shape: [AtomicU64; MAX_DIMS],
    /// Stride of each dimension, in elements.
    pub strides: [AtomicI64; MAX_DIMS],
    /// MIME-like content type, e.g. `image/rgb`.
    pub content_type: [AtomicU8; MAX_CONTENT_TYPE],
    /// Name of the producer.
    pub producer: [AtomicU8; MAX_PRODUCER],
    /// Device-memory handle (CUDA IPC), for device storage.
    pub device_handle: [AtomicU8; DEVICE_HANDLE_SIZE],
    /// Free-form user metadata.
    pub user: [AtomicU8; MAX_USER_METADATA],
}

assert_layout!(BufferMeta, size 512, align 64, {
    flags: 0, dtype: 4, ndim: 8, content_type_len: 12, byte_offset: 16, timestamp_ns: 24,
    sequence: 32, producer_len: 40, user_len: 44, device_handle_len: 48, device_id: 52,
    shape: 64, strides: 128, content_type: 192, producer: 224, device_handle: 256, user: 320,
});
// SAFETY: repr(C), only atomics, layout asserted above.
unsafe impl SharedLayout for BufferMeta {}

/// The pool's fixed configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolConfig {
    /// Number of buffers.
    pub count: u32,
    /// Usable bytes per buffer.
    pub size: u64,
    /// Alignment of each buffer.
    pub alignment: u32,
}

/// Where everything lies, computed from a [`PoolConfig`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PoolLayout {
    /// The configuration it was computed from.
    pub config: PoolConfig,
    /// Distance between consecutive buffers in the arena.
    pub stride: u64,
    /// Offset of the process table.
    pub processes: usize,
    /// Offset of the free set (64-aligned): [`WakeWords`], then the free-hint words.
    pub free_set: usize,
    /// Offset of the free-hint words (`free_set + 24`).
    pub hints: usize,
    /// Number of free-hint words.
    pub hint_words: usize,
    /// Offset of the buffer states.
    pub states: usize,
    /// Offset of the buffer metadata.
    pub metas: usize,
    /// Offset of the arena (for device storage: where the file ends).
    pub arena: usize,
    /// Bytes of all buffers, `count × stride`: the arena, or the least device allocation.
    pub arena_bytes: u64,
    /// Total size of the object.
    pub total: u64,
}

const PAGE: u64 = crate::os::map::PAGE_SIZE as u64;

fn round_up(v: u64, to: u64) -> Option<u64> {
    v.checked_add(to - 1).map(|x| x / to * to)
}

impl PoolLayout {
    /// Computes the layout of a host pool, validating the configuration.
    #[cfg(test)]
    pub(crate) fn compute(config: PoolConfig) -> Result<PoolLayout> {
        Self::compute_for(config, Storage::Host)
    }

    /// Computes the layout for `storage`: a device pool's file ends after the metadata, its
    /// buffers being in the device allocation at the same offsets (`index × stride`).
    pub(crate) fn compute_for(config: PoolConfig, storage: Storage) -> Result<PoolLayout> {
        let PoolConfig {
            count,
            size,
            alignment,
        } = config;
        if count == 0 || count > MAX_BUFFERS {
            return Err(Error::InvalidConfig(format!(
                "buffer count {count}: must be 1 to {MAX_BUFFERS}"
            )));
        }
        if size == 0 {
            return Err(Error::InvalidConfig(
                "buffer size 0: must be at least 1 byte".into(),
            ));
        }
        if !alignment.is_power_of_two() || !(8..=1 << 21).contains(&alignment) {
            return Err(Error::InvalidConfig(format!(
                "alignment {alignment}: must be a power of two from 8 to 2 MiB"
            )));
        }
        let too_big =
            || Error::InvalidConfig(format!("{count} buffers of {size} bytes do not fit in memory"));
        let stride = round_up(size, u64::from(alignment)).ok_or_else(too_big)?;
        let n = u64::from(count);
        let processes = std::mem::size_of::<PoolHeader>() as u64;
        let free_set = processes + (MAX_PROCESSES * std::mem::size_of::<ProcessSlot>()) as u64;
        let hints = free_set + std::mem::size_of::<WakeWords>() as u64;
        let hint_words = n.div_ceil(64);
        let states = round_up(hints + hint_words * 8, 64).ok_or_else(too_big)?;
        let metas = states + n * std::mem::size_of::<BufferState>() as u64;
        let meta_end = metas + n * std::mem::size_of::<BufferMeta>() as u64;
        let arena = round_up(meta_end, PAGE.max(u64::from(alignment))).ok_or_else(too_big)?;
        let arena_bytes = stride
            .checked_mul(n)
            .filter(|b| *b < 1 << 47)
            .ok_or_else(too_big)?;
        let in_file = if storage == Storage::Device {
            0
        } else {
            arena_bytes
        };
        let total = in_file
            .checked_add(arena)
            .and_then(|t| round_up(t, PAGE))
            .filter(|t| usize::try_from(*t).is_ok() && *t < (1 << 47))
            .ok_or_else(too_big)?;
        Ok(PoolLayout {
            config,
            stride,
            processes: processes as usize,
            free_set: free_set as usize,
            hints: hints as usize,
            hint_words: hint_words as usize,
            states: states as usize,
            metas: metas as usize,
            arena: arena as usize,
            arena_bytes,
            total,
        })
    }

    /// Offset of buffer `index`'s first byte (the mapping computes it itself; the tests check it).
    #[cfg(test)]
    pub(crate) fn buffer_offset(&self, index: u32) -> usize {
        self.arena + (u64::from(index) * self.stride) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_uuid_reads_as_nvidia_smi_prints_it() {
        let mut uuid = [0u8; 16];
        uuid.iter_mut().enumerate().for_each(|(i, b)| *b = 0x10 + i as u8);
        let r = DeviceRecord {
            kind: DeviceKind::Cuda,
            uuid,
            bytes: 0,
        };
        assert_eq!(r.uuid_text(), "10111213-1415-1617-1819-1a1b1c1d1e1f");
    }

    #[test]
    fn layout_is_aligned_and_fits() {
        let l = PoolLayout::compute(PoolConfig {
            count: 100,
            size: 1920 * 1080 * 3,
            alignment: 4096,
        })
        .unwrap();
        assert_eq!(l.free_set % 64, 0);
        assert_eq!(l.hints, l.free_set + 24);
        assert_eq!(l.states % 64, 0);
        assert_eq!(l.metas % 64, 0);
        assert_eq!(l.arena % 4096, 0);
        assert_eq!(l.stride % 4096, 0);
        assert!(l.stride >= 1920 * 1080 * 3);
        assert_eq!(l.hint_words, 2);
        assert!(l.total >= l.arena as u64 + 100 * l.stride);
        assert_eq!(l.buffer_offset(1) - l.buffer_offset(0), l.stride as usize);
    }

    #[test]
    fn rejects_impossible_configs() {
        let bad = [
            (0, 1, 64),
            (MAX_BUFFERS + 1, 1, 64),
            (1, 0, 64),
            (1, 1, 3),
            (1, 1, 4),
            (1, 1, 1 << 22),
            (MAX_BUFFERS, u64::MAX / 2, 64),
        ];
        for (count, size, alignment) in bad {
            assert!(
                PoolLayout::compute(PoolConfig {
                    count,
                    size,
                    alignment
                })
                .is_err(),
                "{count} {size} {alignment}"
            );
        }
    }
}
