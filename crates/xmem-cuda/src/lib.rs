//! # xmem-cuda
//!
//! The CUDA driver calls xmem's device pools make, and nothing more: one virtual-memory
//! allocation (`cuMemCreate`) exported as a POSIX file descriptor, imported and mapped by every
//! process that holds it, copies and fills for checks, and synchronisation.
//!
//! `libcuda.so.1` is opened at run time ([`Driver::get`]), so this crate builds and links where
//! there is no CUDA, and a missing driver or device is an error ([`CudaError::Unavailable`]),
//! never a panic. Why the virtual-memory API and not `cuIpcGetMemHandle`: an exported
//! descriptor keeps the memory alive in whichever process holds it, so the allocation outlives
//! a killed creator; legacy IPC memory dies with its exporter.

pub mod sys;

use std::ffi::{c_int, c_void, CStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, OnceLock};

use sys::{Api, CuDevice, CuDevicePtr, CuResult};

/// A CUDA call failed, or CUDA is not there.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CudaError {
    /// No usable driver or device here.
    #[error("CUDA is unavailable: {0}")]
    Unavailable(String),
    /// A driver call returned an error.
    #[error("{call} failed: {name} ({code})")]
    Call {
        /// The driver function.
        call: &'static str,
        /// Its `CUresult`.
        code: CuResult,
        /// The result's name (`CUDA_ERROR_…`).
        name: String,
    },
    /// No device has the UUID asked for.
    #[error("no CUDA device visible here has UUID {0} (CUDA_VISIBLE_DEVICES may hide it)")]
    NoSuchDevice(String),
}

/// Result alias of this crate.
pub type Result<T, E = CudaError> = std::result::Result<T, E>;

/// The loaded driver, initialised.
pub struct Driver {
    api: Api,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Driver")
    }
}

impl Driver {
    /// The driver, loaded and `cuInit`ed on first use; the same error every time if that fails.
    pub fn get() -> Result<&'static Driver> {
        static DRIVER: OnceLock<Result<Driver, CudaError>> = OnceLock::new();
        DRIVER.get_or_init(Driver::load).as_ref().map_err(Clone::clone)
    }

    fn load() -> Result<Driver> {
        // SAFETY: loading libcuda runs its initialisers, which have no preconditions here.
        let lib = unsafe { libloading::Library::new("libcuda.so.1") }.map_err(|e| {
            CudaError::Unavailable(format!(
                "libcuda.so.1 cannot be loaded ({e}); install the NVIDIA driver, or add its directory to LD_LIBRARY_PATH"
            ))
        })?;
        let api = Api::resolve(lib).map_err(CudaError::Unavailable)?;
        let driver = Driver { api };
        // SAFETY: cuInit takes flags 0 and may be called any number of times.
        match unsafe { (driver.api.init)(0) } {
            0 => Ok(driver),
            sys::ERROR_NO_DEVICE => Err(CudaError::Unavailable("the driver sees no CUDA device".into())),
            code => Err(CudaError::Unavailable(format!(
                "cuInit failed: {}",
                driver.error_name(code)
            ))),
        }
    }

    fn error_name(&self, code: CuResult) -> String {
        let mut name: *const std::ffi::c_char = std::ptr::null();
        // SAFETY: cuGetErrorName writes a pointer to a static string, or fails for unknown codes.
        let ok = unsafe { (self.api.get_error_name)(code, &mut name) } == 0 && !name.is_null();
        if ok {
            // SAFETY: the driver returned a NUL-terminated static string.
            unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned()
        } else {
            format!("CUresult {code}")
        }
    }

    fn check(&self, call: &'static str, code: CuResult) -> Result<()> {
        if code == 0 {
            Ok(())
        } else {
            Err(CudaError::Call {
                call,
                code,
                name: self.error_name(code),
            })
        }
    }

    /// The driver's CUDA version (`12040` for 12.4).
    pub fn version(&self) -> Result<i32> {
        let mut v = 0;
        // SAFETY: writes one int.
        self.check("cuDriverGetVersion", unsafe {
            (self.api.driver_get_version)(&mut v)
        })?;
        Ok(v)
    }

    /// How many devices this process sees.
    pub fn device_count(&self) -> Result<i32> {
        let mut n = 0;
        // SAFETY: writes one int.
        self.check("cuDeviceGetCount", unsafe { (self.api.device_get_count)(&mut n) })?;
        Ok(n)
    }
}

/// A device, with its primary context (the one PyTorch's runtime uses) retained.
#[derive(Debug)]
pub struct Device {
    driver: &'static Driver,
    ordinal: c_int,
    device: CuDevice,
    context: usize,
    uuid: [u8; 16],
}

impl Device {
    /// Device `ordinal` of this process.
    pub fn open(ordinal: i32) -> Result<Device> {
        let driver = Driver::get()?;
        let mut device = 0;
        // SAFETY: writes one CUdevice.
        driver.check("cuDeviceGet", unsafe {
            (driver.api.device_get)(&mut device, ordinal)
        })?;
        let mut uuid = sys::Uuid::default();
        // SAFETY: writes 16 bytes.
        driver.check("cuDeviceGetUuid_v2", unsafe {
            (driver.api.device_get_uuid)(&mut uuid, device)
        })?;
        let mut context = std::ptr::null_mut();
        // SAFETY: writes one CUcontext; released in Drop.
        driver.check("cuDevicePrimaryCtxRetain", unsafe {
            (driver.api.primary_ctx_retain)(&mut context, device)
        })?;
        let device = Device {
            driver,
            ordinal,
            device,
            context: context as usize,
            uuid: uuid.bytes,
        };
        for (attr, what) in [
            (sys::ATTR_VMM_SUPPORTED, "virtual memory management"),
            (sys::ATTR_POSIX_FD_SUPPORTED, "POSIX file descriptor handles"),
        ] {
            if device.attribute(attr)? == 0 {
                return Err(CudaError::Unavailable(format!(
                    "device {ordinal} does not support {what}"
                )));
            }
        }
        Ok(device)
    }

    /// The device with this UUID, whatever its ordinal in this process.
    pub fn by_uuid(uuid: [u8; 16]) -> Result<Device> {
        let driver = Driver::get()?;
        for ordinal in 0..driver.device_count()? {
            let device = Device::open(ordinal)?;
            if device.uuid == uuid {
                return Ok(device);
            }
        }
        Err(CudaError::NoSuchDevice(uuid_text(&uuid)))
    }

    /// Its ordinal in this process (DLPack's `device_id`).
    pub fn ordinal(&self) -> i32 {
        self.ordinal
    }

    /// Its UUID.
    pub fn uuid(&self) -> [u8; 16] {
        self.uuid
    }

    /// A device attribute (`CU_DEVICE_ATTRIBUTE_…`).
    pub fn attribute(&self, attribute: c_int) -> Result<i32> {
        let mut v = 0;
        // SAFETY: writes one int.
        self.driver.check("cuDeviceGetAttribute", unsafe {
            (self.driver.api.device_get_attribute)(&mut v, attribute, self.device)
        })?;
        Ok(v)
    }

    /// Makes the primary context current on the calling thread (every call below does).
    fn enter(&self) -> Result<()> {
        // SAFETY: the context is retained for as long as `self` lives.
        self.driver.check("cuCtxSetCurrent", unsafe {
            (self.driver.api.ctx_set_current)(self.context as sys::CuContext)
        })
    }

    fn allocation_prop(&self) -> sys::MemAllocationProp {
        sys::MemAllocationProp {
            kind: sys::ALLOCATION_TYPE_PINNED,
            requested_handle_types: sys::HANDLE_TYPE_POSIX_FD,
            location: sys::MemLocation {
                kind: sys::LOCATION_TYPE_DEVICE,
                id: self.device,
            },
            win32_handle_meta_data: std::ptr::null_mut(),
            alloc_flags: Default::default(),
        }
    }

    /// The least allocation size and alignment (2 MiB on recent GPUs).
    pub fn granularity(&self) -> Result<u64> {
        self.enter()?;
        let prop = self.allocation_prop();
        let mut g = 0usize;
        // SAFETY: `prop` is a valid CUmemAllocationProp; writes one size_t.
        self.driver.check("cuMemGetAllocationGranularity", unsafe {
            (self.driver.api.mem_get_allocation_granularity)(&mut g, &prop, sys::GRANULARITY_MINIMUM)
        })?;
        Ok(g as u64)
    }

    /// Free and total device memory, bytes.
    pub fn memory_info(&self) -> Result<(u64, u64)> {
        self.enter()?;
        let (mut free, mut total) = (0usize, 0usize);
        // SAFETY: writes two size_t.
        self.driver.check("cuMemGetInfo_v2", unsafe {
            (self.driver.api.mem_get_info)(&mut free, &mut total)
        })?;
        Ok((free as u64, total as u64))
    }

    /// Allocates `bytes` (a multiple of the granularity) and exports it as a descriptor. The
    /// allocation handle is released at once: the descriptor, and the mappings made from it,
    /// are what keep the memory alive.
    pub fn allocate_exportable(&self, bytes: u64) -> Result<OwnedFd> {
        self.enter()?;
        let prop = self.allocation_prop();
        let mut handle = 0;
        // SAFETY: `prop` is valid; writes one handle, released below.
        self.driver.check("cuMemCreate", unsafe {
            (self.driver.api.mem_create)(&mut handle, bytes as usize, &prop, 0)
        })?;
        let mut fd: c_int = -1;
        // SAFETY: for POSIX_FD the shareable handle is an int the driver writes.
        let exported = self.driver.check("cuMemExportToShareableHandle", unsafe {
            (self.driver.api.mem_export)(
                (&mut fd as *mut c_int).cast::<c_void>(),
                handle,
                sys::HANDLE_TYPE_POSIX_FD,
                0,
            )
        });
        // SAFETY: the handle came from cuMemCreate; the exported descriptor holds the memory.
        let released = self
            .driver
            .check("cuMemRelease", unsafe { (self.driver.api.mem_release)(handle) });
        exported?;
        // SAFETY: the driver handed us a fresh descriptor we now own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        released?;
        Ok(fd)
    }

    /// Imports the allocation `fd` and maps all of its `bytes` on this device: read-only when
    /// asked and the driver grants it (`map.read_only()` says), else read-write.
    pub fn import(self: &Arc<Device>, fd: &OwnedFd, bytes: u64, read_only: bool) -> Result<DeviceMap> {
        let size = bytes as usize;
        let granularity = self.granularity()? as usize;
        let api = &self.driver.api;
        let mut handle = 0;
        // SAFETY: for POSIX_FD the OS handle is the descriptor's number passed as a pointer;
        // the driver does not take ownership of it.
        self.driver.check("cuMemImportFromShareableHandle", unsafe {
            (api.mem_import)(
                &mut handle,
                fd.as_raw_fd() as usize as *mut c_void,
                sys::HANDLE_TYPE_POSIX_FD,
            )
        })?;
        let mut ptr: CuDevicePtr = 0;
        // SAFETY: reserves address space only; freed by DeviceMap's drop.
        let reserved = self.driver.check("cuMemAddressReserve", unsafe {
            (api.mem_address_reserve)(&mut ptr, size, granularity, 0, 0)
        });
        if let Err(e) = reserved {
            // SAFETY: the imported handle, not used again.
            let _ = unsafe { (api.mem_release)(handle) };
            return Err(e);
        }
        let mut map = DeviceMap {
            device: self.clone(),
            ptr,
            size,
            mapped: false,
            read_only: false,
        };
        // SAFETY: `ptr..ptr+size` is our reservation, `handle` an allocation of `size` bytes.
        let mapped = self
            .driver
            .check("cuMemMap", unsafe { (api.mem_map)(ptr, size, 0, handle, 0) });
        // SAFETY: the imported handle; the mapping (if made) keeps the memory from here on.
        let _ = unsafe { (api.mem_release)(handle) };
        mapped?;
        map.mapped = true;
        let access = |flags| sys::MemAccessDesc {
            location: sys::MemLocation {
                kind: sys::LOCATION_TYPE_DEVICE,
                id: self.device,
            },
            flags,
        };
        if read_only {
            // SAFETY: the range is mapped; one access descriptor.
            let granted = self.driver.check("cuMemSetAccess", unsafe {
                (api.mem_set_access)(ptr, size, &access(sys::ACCESS_READ), 1)
            });
            // Refused (not every driver grants a read-only mapping of an imported handle):
            // read-write below, and `read_only()` says so.
            if granted.is_ok() {
                map.read_only = true;
                return Ok(map);
            }
        }
        // SAFETY: the range is mapped; one access descriptor.
        self.driver.check("cuMemSetAccess", unsafe {
            (api.mem_set_access)(ptr, size, &access(sys::ACCESS_READWRITE), 1)
        })?;
        Ok(map)
    }

    /// Waits for all work queued in the context (every stream) to finish.
    pub fn synchronize(&self) -> Result<()> {
        self.enter()?;
        // SAFETY: no arguments; the context is current.
        self.driver
            .check("cuCtxSynchronize", unsafe { (self.driver.api.ctx_synchronize)() })
    }

    /// Waits for the work queued on `stream` (a `CUstream` as an integer; 1 and 2 are the
    /// legacy and per-thread default streams, as DLPack passes them).
    pub fn synchronize_stream(&self, stream: usize) -> Result<()> {
        self.enter()?;
        // SAFETY: the caller passes a stream of this context, or a special handle.
        self.driver.check("cuStreamSynchronize", unsafe {
            (self.driver.api.stream_synchronize)(stream as sys::CuStream)
        })
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: retained in `open`.
        let _ = unsafe { (self.driver.api.primary_ctx_release)(self.device) };
    }
}

// SAFETY: the context handle is process-wide; every use makes it current on the calling thread.
unsafe impl Send for Device {}
// SAFETY: as above; the driver API is thread-safe.
unsafe impl Sync for Device {}

/// One process's mapping of an allocation, unmapped and its address range freed on drop.
#[derive(Debug)]
pub struct DeviceMap {
    device: Arc<Device>,
    ptr: CuDevicePtr,
    size: usize,
    mapped: bool,
    read_only: bool,
}

impl DeviceMap {
    /// Whether the device maps it read-only (a write faults).
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// The device address of the first byte.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// Bytes mapped.
    pub fn len(&self) -> u64 {
        self.size as u64
    }

    /// Never true: allocations have at least one granule.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    fn range(&self, offset: u64, len: usize) -> Result<CuDevicePtr> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.size as u64 => Ok(self.ptr + offset),
            _ => Err(CudaError::Call {
                call: "range check",
                code: 1,
                name: format!("{len} bytes at {offset} exceed the {}-byte mapping", self.size),
            }),
        }
    }

    /// Copies `src` to `offset` (synchronous).
    pub fn copy_from_host(&self, offset: u64, src: &[u8]) -> Result<()> {
        let dst = self.range(offset, src.len())?;
        self.device.enter()?;
        let api = &self.device.driver.api;
        // SAFETY: `dst..+len` lies in the mapping; `src` is readable for its length.
        self.device.driver.check("cuMemcpyHtoD_v2", unsafe {
            (api.memcpy_htod)(dst, src.as_ptr().cast(), src.len())
        })
    }

    /// Copies from `offset` into `dst` (synchronous).
    pub fn copy_to_host(&self, offset: u64, dst: &mut [u8]) -> Result<()> {
        let src = self.range(offset, dst.len())?;
        self.device.enter()?;
        let api = &self.device.driver.api;
        // SAFETY: `src..+len` lies in the mapping; `dst` is writable for its length.
        self.device.driver.check("cuMemcpyDtoH_v2", unsafe {
            (api.memcpy_dtoh)(dst.as_mut_ptr().cast(), src, dst.len())
        })
    }

    /// Sets `len` bytes at `offset` to `byte`.
    pub fn fill(&self, offset: u64, len: u64, byte: u8) -> Result<()> {
        let dst = self.range(offset, len as usize)?;
        self.device.enter()?;
        // SAFETY: `dst..+len` lies in the mapping.
        self.device.driver.check("cuMemsetD8_v2", unsafe {
            (self.device.driver.api.memset_d8)(dst, byte, len as usize)
        })
    }
}

impl Drop for DeviceMap {
    fn drop(&mut self) {
        if self.ptr == 0 {
            return;
        }
        let _ = self.device.enter();
        let api = &self.device.driver.api;
        if self.mapped {
            // SAFETY: the range was mapped by `import`.
            let _ = unsafe { (api.mem_unmap)(self.ptr, self.size) };
        }
        // SAFETY: the range was reserved by `import`.
        let _ = unsafe { (api.mem_address_free)(self.ptr, self.size) };
    }
}

/// A UUID as nvidia-smi prints it, without its `GPU-` prefix.
pub fn uuid_text(u: &[u8; 16]) -> String {
    let h: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_driver_is_an_error_not_a_panic() {
        match Driver::get() {
            Ok(d) => println!(
                "a CUDA driver is here: version {:?}, {:?} devices",
                d.version(),
                d.device_count()
            ),
            Err(e) => {
                assert!(matches!(e, CudaError::Unavailable(_)), "{e}");
                // The same answer the second time, without loading again.
                assert_eq!(Driver::get().unwrap_err().to_string(), e.to_string());
                println!("skipped the device part: {e}");
            }
        }
    }

    #[test]
    fn uuids_print_as_nvidia_smi_does() {
        let u = [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        assert_eq!(uuid_text(&u), "12345678-9abc-def0-0102-030405060708");
    }
}
