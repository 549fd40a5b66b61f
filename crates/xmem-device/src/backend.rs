//! What a kind of device memory must do for a pool: allocate one exportable block, import a
//! block from its descriptor, and copy to and from it. The pool's logic (who holds what, who
//! hands the descriptor to whom) is the same for every kind.

use std::os::fd::OwnedFd;

use xmem_core::DeviceKind;

use crate::error::Result;

/// A kind of device memory whose allocations are shared as file descriptors.
pub trait DeviceBackend: Send + Sync {
    /// What the memory is.
    fn kind(&self) -> DeviceKind;
    /// The device's UUID (recorded in the pool, since ordinals differ between processes).
    fn uuid(&self) -> [u8; 16];
    /// Allocations are whole multiples of this many bytes.
    fn granularity(&self) -> u64;
    /// The least alignment of a buffer in the allocation.
    fn min_alignment(&self) -> u32;
    /// Allocates `bytes` (a multiple of the granularity) and exports it as a descriptor.
    fn allocate(&self, bytes: u64) -> Result<OwnedFd>;
    /// Imports the allocation `fd` (checked to be `bytes` long where the kind can tell) and maps
    /// it into this process.
    fn import(&self, fd: &OwnedFd, bytes: u64, read_only: bool) -> Result<Box<dyn DeviceMapping>>;
    /// How to name the device in messages ("cuda GPU-…", "host stand-in").
    fn describe(&self) -> String;
    /// DLPack's `(device_type, device_id)` of this memory in this process: `(2, ordinal)` for
    /// CUDA, `(1, 0)` (kDLCPU) for the host stand-in.
    fn dlpack_device(&self) -> (i32, i32);
}

/// One process's mapping of an allocation, unmapped on drop. Offsets are from its start.
pub trait DeviceMapping: Send + Sync {
    /// The mapping's address in this process (a device pointer for CUDA).
    fn base(&self) -> u64;
    /// Its length.
    fn len(&self) -> u64;
    /// Never true: an allocation has at least one granule.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies `src` to `offset`.
    fn copy_from_host(&self, offset: u64, src: &[u8]) -> Result<()>;
    /// Copies from `offset` into `dst`.
    fn copy_to_host(&self, offset: u64, dst: &mut [u8]) -> Result<()>;
    /// Sets `len` bytes at `offset` to `byte`.
    fn fill(&self, offset: u64, len: u64, byte: u8) -> Result<()>;
    /// Waits until every write this process queued on the allocation is complete: what a
    /// publisher does before its frame becomes visible.
    fn synchronize(&self) -> Result<()>;
    /// Waits until the work queued on a consumer's `stream` is complete (a `CUstream` as an
    /// integer; 1 and 2 are CUDA's legacy and per-thread default streams, as DLPack passes
    /// them): what a consumer does before its reference to a frame goes back.
    fn wait_stream(&self, stream: usize) -> Result<()> {
        let _ = stream;
        self.synchronize()
    }
}

/// A backend chosen at run time (`Box<dyn DeviceBackend>`) is a backend.
impl<B: DeviceBackend + ?Sized> DeviceBackend for Box<B> {
    fn kind(&self) -> DeviceKind {
        (**self).kind()
    }
    fn uuid(&self) -> [u8; 16] {
        (**self).uuid()
    }
    fn granularity(&self) -> u64 {
        (**self).granularity()
    }
    fn min_alignment(&self) -> u32 {
        (**self).min_alignment()
    }
    fn allocate(&self, bytes: u64) -> Result<OwnedFd> {
        (**self).allocate(bytes)
    }
    fn import(&self, fd: &OwnedFd, bytes: u64, read_only: bool) -> Result<Box<dyn DeviceMapping>> {
        (**self).import(fd, bytes, read_only)
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn dlpack_device(&self) -> (i32, i32) {
        (**self).dlpack_device()
    }
}
