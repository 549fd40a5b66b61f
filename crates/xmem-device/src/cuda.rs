//! CUDA device memory for pools: one `cuMemCreate` allocation exported as a POSIX descriptor.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use xmem_core::DeviceKind;
use xmem_cuda::{CudaError, Device, DeviceMap};

use crate::backend::{DeviceBackend, DeviceMapping};
use crate::error::{DeviceError, Result};

/// A CUDA device as a pool backend.
#[derive(Debug, Clone)]
pub struct CudaDevice {
    device: Arc<Device>,
}

fn cuda(e: CudaError) -> DeviceError {
    match e {
        CudaError::Unavailable(reason) => DeviceError::Unavailable {
            kind: DeviceKind::Cuda,
            reason,
        },
        other => DeviceError::Backend {
            op: "CUDA",
            detail: other.to_string(),
        },
    }
}

impl CudaDevice {
    /// Device `ordinal` of this process.
    pub fn new(ordinal: i32) -> Result<CudaDevice> {
        Ok(CudaDevice {
            device: Arc::new(Device::open(ordinal).map_err(cuda)?),
        })
    }

    /// The device with this UUID, whatever its ordinal here.
    pub fn by_uuid(uuid: [u8; 16]) -> Result<CudaDevice> {
        Ok(CudaDevice {
            device: Arc::new(Device::by_uuid(uuid).map_err(cuda)?),
        })
    }

    /// The device, for calls this crate does not wrap.
    pub fn device(&self) -> &Arc<Device> {
        &self.device
    }
}

impl DeviceBackend for CudaDevice {
    fn kind(&self) -> DeviceKind {
        DeviceKind::Cuda
    }

    fn uuid(&self) -> [u8; 16] {
        self.device.uuid()
    }

    fn granularity(&self) -> u64 {
        self.device.granularity().unwrap_or(2 << 20)
    }

    fn min_alignment(&self) -> u32 {
        // What torch and cuBLAS assume of an allocation's start.
        256
    }

    fn allocate(&self, bytes: u64) -> Result<OwnedFd> {
        self.device.allocate_exportable(bytes).map_err(cuda)
    }

    fn import(&self, fd: &OwnedFd, bytes: u64, read_only: bool) -> Result<Box<dyn DeviceMapping>> {
        Ok(Box::new(CudaMapping {
            map: self.device.import(fd, bytes, read_only).map_err(cuda)?,
            device: self.device.clone(),
            writable: !read_only,
        }))
    }

    fn dlpack_device(&self) -> (i32, i32) {
        (2, self.device.ordinal())
    }

    fn describe(&self) -> String {
        format!(
            "cuda:{} (GPU-{})",
            self.device.ordinal(),
            xmem_cuda::uuid_text(&self.device.uuid())
        )
    }
}

struct CudaMapping {
    map: DeviceMap,
    device: Arc<Device>,
    /// False for a reader: its own copies and fills are refused even where the driver mapped
    /// the memory read-write (a kernel's writes are then not stopped).
    writable: bool,
}

impl CudaMapping {
    fn check_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(DeviceError::Backend {
                op: "write",
                detail: "the allocation is mapped read-only here".into(),
            })
        }
    }
}

impl DeviceMapping for CudaMapping {
    fn base(&self) -> u64 {
        self.map.ptr()
    }

    fn len(&self) -> u64 {
        self.map.len()
    }

    fn copy_from_host(&self, offset: u64, src: &[u8]) -> Result<()> {
        self.check_writable()?;
        self.map.copy_from_host(offset, src).map_err(cuda)
    }

    fn copy_to_host(&self, offset: u64, dst: &mut [u8]) -> Result<()> {
        self.map.copy_to_host(offset, dst).map_err(cuda)
    }

    fn fill(&self, offset: u64, len: u64, byte: u8) -> Result<()> {
        self.check_writable()?;
        self.map.fill(offset, len, byte).map_err(cuda)
    }

    fn synchronize(&self) -> Result<()> {
        self.device.synchronize().map_err(cuda)
    }

    fn wait_stream(&self, stream: usize) -> Result<()> {
        self.device.synchronize_stream(stream).map_err(cuda)
    }
}
