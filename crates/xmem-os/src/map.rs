//! Memory mappings of shared-memory files, and typed access into them.

use std::ffi::c_void;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::ptr::NonNull;

use rustix::mm::{self, MapFlags, ProtFlags};

use super::error::{OsError as Error, Result};

/// The page size mappings are made of (x86-64 and aarch64 Linux with 4 KiB pages; hugetlbfs
/// is refused). Layouts align to it, and protection and prefaulting work in it.
pub const PAGE_SIZE: usize = 4096;

/// A type that may be viewed in place over shared memory that other processes write.
///
/// # Safety
///
/// Implementors promise that (1) every bit pattern is a valid value, (2) every field that can
/// change after the object is published is an atomic (so that concurrent access from other
/// processes is never a data race), and (3) the type is `#[repr(C)]` with a layout asserted at
/// compile time. Structs made only of `std::sync::atomic` integers and arrays of them qualify.
pub unsafe trait SharedLayout: Sync {}

// SAFETY: atomics are valid for any bits and are made for concurrent access.
unsafe impl SharedLayout for std::sync::atomic::AtomicU64 {}
// SAFETY: as above.
unsafe impl SharedLayout for std::sync::atomic::AtomicU32 {}
// SAFETY: as above.
unsafe impl SharedLayout for std::sync::atomic::AtomicU8 {}

/// A `MAP_SHARED` mapping, unmapped on drop.
///
/// All access to its contents goes through [`Mapping::at`] and [`Mapping::slice_at`] (atomics),
/// or through raw byte pointers whose exclusive or shared use is decided by a protocol above
/// (the buffer pool's holder words).
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    writable: bool,
    path: PathBuf,
}

// SAFETY: the mapping is plain memory; what is shared between threads is the pointer, and every
// access through it is either atomic or governed by the pool's ownership protocol.
unsafe impl Send for Mapping {}
// SAFETY: as above; `&Mapping` only hands out `&T` for `T: SharedLayout` (atomics) or raw pointers.
unsafe impl Sync for Mapping {}

/// How to map.
#[derive(Debug, Clone, Copy, Default)]
pub struct MapOptions {
    /// Map read-write (else read-only).
    pub writable: bool,
    /// Fault every page in now (`MAP_POPULATE`), so first touches cost nothing later.
    pub populate: bool,
}

impl Mapping {
    /// Maps `len` bytes of `fd` from offset 0.
    pub fn map(fd: impl AsFd, len: usize, options: MapOptions, path: impl Into<PathBuf>) -> Result<Mapping> {
        let path = path.into();
        if len == 0 {
            return Err(Error::Corrupt {
                path,
                detail: "zero-length object".into(),
            });
        }
        let prot = if options.writable {
            ProtFlags::READ | ProtFlags::WRITE
        } else {
            ProtFlags::READ
        };
        let mut flags = MapFlags::SHARED;
        if options.populate {
            flags |= MapFlags::POPULATE;
        }
        // SAFETY: a fresh mapping at an address the kernel chooses aliases no Rust object; the
        // file outlives the call, and the mapping keeps the pages alive after the fd closes.
        let ptr = unsafe { mm::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) }
            .map_err(|e| Error::os("map", &path, e))?;
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| Error::Corrupt {
            path: path.clone(),
            detail: "mmap returned null".into(),
        })?;
        Ok(Mapping {
            ptr,
            len,
            writable: options.writable,
            path,
        })
    }

    /// The mapped length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: mappings are never empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the mapping is writable.
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// The first byte of the mapping.
    pub fn base(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The path the mapping came from (for error messages).
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// A shared reference to the `T` at `offset`, after bounds and alignment checks.
    pub fn at<T: SharedLayout>(&self, offset: usize) -> Result<&T> {
        Ok(&self.slice_at::<T>(offset, 1)?[0])
    }

    /// A shared slice of `count` `T`s at `offset`, after bounds and alignment checks.
    pub fn slice_at<T: SharedLayout>(&self, offset: usize, count: usize) -> Result<&[T]> {
        let size = std::mem::size_of::<T>()
            .checked_mul(count)
            .and_then(|n| n.checked_add(offset));
        let in_bounds = matches!(size, Some(end) if end <= self.len);
        let aligned = (self.ptr.as_ptr() as usize + offset) % std::mem::align_of::<T>() == 0;
        if !in_bounds || !aligned {
            return Err(Error::Corrupt {
                path: self.path.clone(),
                detail: format!(
                    "table of {count} × {} bytes at offset {offset} does not fit a {}-byte mapping",
                    std::mem::size_of::<T>(),
                    self.len
                ),
            });
        }
        // SAFETY: the range is inside the mapping (checked above) and aligned for T; T is
        // SharedLayout, so any bytes are a valid T and concurrent writers only touch atomics;
        // the slice borrows `self`, so it cannot outlive the mapping.
        Ok(unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(offset).cast::<T>(), count) })
    }

    /// Makes `len` bytes from `offset` (page-aligned, inside the mapping) read-only for this
    /// process: a write there faults (SIGSEGV) instead of changing what other processes read.
    pub fn protect_read_only(&self, offset: usize, len: usize) -> Result<()> {
        let inside = offset.checked_add(len).is_some_and(|end| end <= self.len);
        if offset % PAGE_SIZE != 0 || !inside {
            return Err(Error::Corrupt {
                path: self.path.clone(),
                detail: format!(
                    "cannot protect {len} bytes at {offset} of a {}-byte mapping",
                    self.len
                ),
            });
        }
        if len == 0 {
            return Ok(());
        }
        // SAFETY: the range is page-aligned and inside our own mapping (checked above), so no
        // other memory changes; reads stay valid, and a later write there faults (a signal,
        // not a silent change). Callers protect only ranges they never write through atomics
        // (the pool protects the arena of an attachment that refuses write guards).
        unsafe {
            mm::mprotect(
                self.ptr.as_ptr().add(offset).cast::<c_void>(),
                len,
                mm::MprotectFlags::READ,
            )
        }
        .map_err(|e| Error::os("protect", &self.path, e))
    }

    /// Faults every page in now, so that no later access pays for it (`MADV_POPULATE_WRITE`,
    /// or touching each page where the kernel is older than 5.14).
    pub fn prefault(&self) {
        if self.writable {
            // SAFETY: the range is our own mapping; MADV_POPULATE_WRITE changes no contents.
            let done = unsafe {
                mm::madvise(
                    self.ptr.as_ptr().cast::<c_void>(),
                    self.len,
                    mm::Advice::LinuxPopulateWrite,
                )
            };
            if done.is_ok() {
                return;
            }
        }
        for offset in (0..self.len).step_by(PAGE_SIZE) {
            // SAFETY: offset < len, inside our mapping; a volatile read faults the page in and
            // changes nothing.
            unsafe { std::ptr::read_volatile(self.ptr.as_ptr().add(offset)) };
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned, and every borrow of the mapping's
        // contents is tied to `&self`, so none survives this point.
        let _ = unsafe { mm::munmap(self.ptr.as_ptr().cast::<c_void>(), self.len) };
    }
}

/// Asserts a shared layout's size and field offsets at compile time.
///
/// ```ignore
/// assert_layout!(Header, size 128, align 64, { magic: 0, ready: 8 });
/// ```
#[macro_export]
#[doc(hidden)]
macro_rules! assert_layout {
    ($ty:ty, size $size:expr, align $align:expr, { $($field:ident : $off:expr),* $(,)? }) => {
        const _: () = {
            assert!(::std::mem::size_of::<$ty>() == $size, concat!("size of ", stringify!($ty)));
            assert!(::std::mem::align_of::<$ty>() == $align, concat!("alignment of ", stringify!($ty)));
            $( assert!(::std::mem::offset_of!($ty, $field) == $off,
                concat!("offset of ", stringify!($ty), "::", stringify!($field))); )*
        };
    };
}
