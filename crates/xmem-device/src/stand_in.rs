//! A memfd standing in for device memory: allocated, exported, handed over, imported and freed
//! exactly as a CUDA allocation is, so that the pool's descriptor hand-over and lifetime run in
//! CI without a GPU. Its "device address" is the host mapping's.

use std::os::fd::{AsFd, OwnedFd};

use xmem_core::os::map::MapOptions;
use xmem_core::os::{Mapping, ShmFile};
use xmem_core::DeviceKind;

use crate::backend::{DeviceBackend, DeviceMapping};
use crate::error::{DeviceError, Result};

/// The host stand-in for device memory.
#[derive(Debug, Clone, Default)]
pub struct HostStandIn {
    label: String,
}

impl HostStandIn {
    /// A stand-in whose memfds are named `xmem-device:<label>` (what `/proc/PID/fd` shows).
    pub fn new(label: &str) -> Self {
        HostStandIn {
            label: label.to_string(),
        }
    }

    /// The name its memfds carry.
    pub fn memfd_name(&self) -> String {
        format!("xmem-device:{}", self.label)
    }
}

fn os(op: &'static str) -> impl FnOnce(xmem_core::os::OsError) -> DeviceError {
    move |e| DeviceError::Backend {
        op,
        detail: e.to_string(),
    }
}

impl DeviceBackend for HostStandIn {
    fn kind(&self) -> DeviceKind {
        DeviceKind::HostStandIn
    }

    fn uuid(&self) -> [u8; 16] {
        [0; 16]
    }

    fn granularity(&self) -> u64 {
        xmem_core::os::map::PAGE_SIZE as u64
    }

    fn min_alignment(&self) -> u32 {
        256
    }

    fn allocate(&self, bytes: u64) -> Result<OwnedFd> {
        let file = ShmFile::anonymous(&self.memfd_name()).map_err(os("memfd_create"))?;
        file.set_size(bytes).map_err(os("size the allocation"))?;
        file.reserve(bytes).map_err(os("allocate"))?;
        // No holder may shrink it under the others' mappings (SIGBUS): sealed, as a device
        // allocation's size is fixed.
        file.seal_size().map_err(os("seal"))?;
        file.try_clone_fd().map_err(os("dup"))
    }

    fn import(&self, fd: &OwnedFd, bytes: u64, read_only: bool) -> Result<Box<dyn DeviceMapping>> {
        let dup = fd.try_clone().map_err(|e| DeviceError::Backend {
            op: "dup",
            detail: e.to_string(),
        })?;
        let file = ShmFile::from_fd(dup).map_err(os("import"))?;
        let size = file.size().map_err(os("stat"))?;
        if size != bytes {
            return Err(DeviceError::Backend {
                op: "import",
                detail: format!("the descriptor is {size} bytes, the pool records {bytes}"),
            });
        }
        let len = usize::try_from(bytes).map_err(|_| DeviceError::Backend {
            op: "import",
            detail: format!("{bytes} bytes do not fit the address space"),
        })?;
        let options = MapOptions {
            writable: !read_only,
            populate: false,
        };
        let map = Mapping::map(file.as_fd(), len, options, self.memfd_name()).map_err(os("map"))?;
        Ok(Box::new(StandInMapping { map }))
    }

    fn describe(&self) -> String {
        "the host stand-in".into()
    }

    fn dlpack_device(&self) -> (i32, i32) {
        (1, 0)
    }
}

struct StandInMapping {
    map: Mapping,
}

impl StandInMapping {
    fn range(&self, offset: u64, len: usize) -> Result<*mut u8> {
        let end = offset.checked_add(len as u64);
        match end {
            Some(end) if end <= self.map.len() as u64 => {
                // SAFETY: offset + len ≤ the mapping's length, so the pointer stays inside it.
                Ok(unsafe { self.map.base().add(offset as usize) })
            }
            _ => Err(DeviceError::OutOfRange {
                offset,
                len: len as u64,
                size: self.map.len() as u64,
            }),
        }
    }
}

impl DeviceMapping for StandInMapping {
    fn base(&self) -> u64 {
        self.map.base() as u64
    }

    fn len(&self) -> u64 {
        self.map.len() as u64
    }

    fn copy_from_host(&self, offset: u64, src: &[u8]) -> Result<()> {
        if !self.map.is_writable() {
            return Err(DeviceError::Backend {
                op: "write",
                detail: "the allocation is mapped read-only here".into(),
            });
        }
        let dst = self.range(offset, src.len())?;
        // SAFETY: `dst..dst+len` lies in the writable mapping (checked by `range`); who may
        // write which buffer is decided by the pool's holder words, as for host pools.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst, src.len()) };
        Ok(())
    }

    fn copy_to_host(&self, offset: u64, dst: &mut [u8]) -> Result<()> {
        let src = self.range(offset, dst.len())?;
        // SAFETY: `src..src+len` lies in the mapping (checked by `range`) and `dst` is ours.
        unsafe { std::ptr::copy_nonoverlapping(src, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    fn fill(&self, offset: u64, len: u64, byte: u8) -> Result<()> {
        if !self.map.is_writable() {
            return Err(DeviceError::Backend {
                op: "fill",
                detail: "the allocation is mapped read-only here".into(),
            });
        }
        let n = usize::try_from(len).unwrap_or(usize::MAX);
        let dst = self.range(offset, n)?;
        // SAFETY: as in `copy_from_host`.
        unsafe { std::ptr::write_bytes(dst, byte, n) };
        Ok(())
    }

    fn synchronize(&self) -> Result<()> {
        // Host stores are visible to other processes once the release that publishes the
        // frame is (the pool's holder words and the stream's queue order them).
        Ok(())
    }
}
