//! The CUDA driver API's types and the functions used, resolved from `libcuda.so.1` at run
//! time. Layouts follow `cuda.h` (12.x); their sizes are asserted.

use std::ffi::{c_char, c_int, c_uint, c_void};

/// `CUresult`: 0 is success.
pub type CuResult = c_int;
/// `CUdevice`: an ordinal in this process.
pub type CuDevice = c_int;
/// `CUcontext`.
pub type CuContext = *mut c_void;
/// `CUdeviceptr`.
pub type CuDevicePtr = u64;
/// `CUmemGenericAllocationHandle`.
pub type CuMemHandle = u64;
/// `CUstream`.
pub type CuStream = *mut c_void;

/// `CU_MEM_ALLOCATION_TYPE_PINNED`.
pub const ALLOCATION_TYPE_PINNED: c_uint = 1;
/// `CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR`.
pub const HANDLE_TYPE_POSIX_FD: c_uint = 1;
/// `CU_MEM_LOCATION_TYPE_DEVICE`.
pub const LOCATION_TYPE_DEVICE: c_uint = 1;
/// `CU_MEM_ACCESS_FLAGS_PROT_READ`.
pub const ACCESS_READ: c_uint = 1;
/// `CU_MEM_ACCESS_FLAGS_PROT_READWRITE`.
pub const ACCESS_READWRITE: c_uint = 3;
/// `CU_MEM_ALLOC_GRANULARITY_MINIMUM`.
pub const GRANULARITY_MINIMUM: c_uint = 0;
/// `CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED`.
pub const ATTR_VMM_SUPPORTED: c_int = 102;
/// `CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED`.
pub const ATTR_POSIX_FD_SUPPORTED: c_int = 103;
/// `CUDA_ERROR_NO_DEVICE`.
pub const ERROR_NO_DEVICE: CuResult = 100;

/// `CUmemLocation`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MemLocation {
    /// `CUmemLocationType`.
    pub kind: c_uint,
    /// Device ordinal.
    pub id: c_int,
}

/// `CUmemAllocationProp::allocFlags`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct AllocFlags {
    /// `compressionType`.
    pub compression_type: u8,
    /// `gpuDirectRDMACapable`.
    pub gpu_direct_rdma_capable: u8,
    /// `usage`.
    pub usage: u16,
    /// `reserved`.
    pub reserved: [u8; 4],
}

/// `CUmemAllocationProp`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MemAllocationProp {
    /// `CUmemAllocationType`.
    pub kind: c_uint,
    /// `CUmemAllocationHandleType` bits.
    pub requested_handle_types: c_uint,
    /// Where.
    pub location: MemLocation,
    /// Windows only.
    pub win32_handle_meta_data: *mut c_void,
    /// Flags.
    pub alloc_flags: AllocFlags,
}

/// `CUmemAccessDesc`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MemAccessDesc {
    /// Who gets access.
    pub location: MemLocation,
    /// `CUmemAccess_flags`.
    pub flags: c_uint,
}

/// `CUuuid`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Uuid {
    /// The 16 bytes.
    pub bytes: [u8; 16],
}

const _: () = {
    assert!(std::mem::size_of::<MemLocation>() == 8);
    assert!(std::mem::size_of::<AllocFlags>() == 8);
    assert!(std::mem::size_of::<MemAllocationProp>() == 32);
    assert!(std::mem::offset_of!(MemAllocationProp, location) == 8);
    assert!(std::mem::offset_of!(MemAllocationProp, win32_handle_meta_data) == 16);
    assert!(std::mem::offset_of!(MemAllocationProp, alloc_flags) == 24);
    assert!(std::mem::size_of::<MemAccessDesc>() == 12);
    assert!(std::mem::size_of::<Uuid>() == 16);
};

macro_rules! driver_api {
    ($( $field:ident = $symbol:literal : fn($($arg:ty),*); )*) => {
        /// The driver functions, resolved once. The library stays loaded as long as they do.
        #[allow(missing_docs)]
        pub struct Api {
            $( pub $field: unsafe extern "C" fn($($arg),*) -> CuResult, )*
            _lib: libloading::Library,
        }

        impl Api {
            /// Resolves every symbol of `lib`, naming the first one missing.
            pub fn resolve(lib: libloading::Library) -> Result<Api, String> {
                // SAFETY: each symbol is declared with the signature `cuda.h` gives it; the
                // pointers are kept only together with `lib`, which keeps them valid.
                unsafe {
                    Ok(Api {
                        $( $field: *lib
                            .get::<unsafe extern "C" fn($($arg),*) -> CuResult>($symbol)
                            .map_err(|e| format!("libcuda lacks {}: {e}",
                                String::from_utf8_lossy(&$symbol[..$symbol.len() - 1])))?, )*
                        _lib: lib,
                    })
                }
            }
        }
    };
}

driver_api! {
    init = b"cuInit\0": fn(c_uint);
    driver_get_version = b"cuDriverGetVersion\0": fn(*mut c_int);
    device_get_count = b"cuDeviceGetCount\0": fn(*mut c_int);
    device_get = b"cuDeviceGet\0": fn(*mut CuDevice, c_int);
    device_get_uuid = b"cuDeviceGetUuid_v2\0": fn(*mut Uuid, CuDevice);
    device_get_attribute = b"cuDeviceGetAttribute\0": fn(*mut c_int, c_int, CuDevice);
    primary_ctx_retain = b"cuDevicePrimaryCtxRetain\0": fn(*mut CuContext, CuDevice);
    primary_ctx_release = b"cuDevicePrimaryCtxRelease_v2\0": fn(CuDevice);
    ctx_set_current = b"cuCtxSetCurrent\0": fn(CuContext);
    ctx_synchronize = b"cuCtxSynchronize\0": fn();
    stream_synchronize = b"cuStreamSynchronize\0": fn(CuStream);
    mem_get_allocation_granularity = b"cuMemGetAllocationGranularity\0":
        fn(*mut usize, *const MemAllocationProp, c_uint);
    mem_create = b"cuMemCreate\0": fn(*mut CuMemHandle, usize, *const MemAllocationProp, u64);
    mem_release = b"cuMemRelease\0": fn(CuMemHandle);
    mem_export = b"cuMemExportToShareableHandle\0": fn(*mut c_void, CuMemHandle, c_uint, u64);
    mem_import = b"cuMemImportFromShareableHandle\0": fn(*mut CuMemHandle, *mut c_void, c_uint);
    mem_address_reserve = b"cuMemAddressReserve\0": fn(*mut CuDevicePtr, usize, usize, CuDevicePtr, u64);
    mem_address_free = b"cuMemAddressFree\0": fn(CuDevicePtr, usize);
    mem_map = b"cuMemMap\0": fn(CuDevicePtr, usize, usize, CuMemHandle, u64);
    mem_unmap = b"cuMemUnmap\0": fn(CuDevicePtr, usize);
    mem_set_access = b"cuMemSetAccess\0": fn(CuDevicePtr, usize, *const MemAccessDesc, usize);
    memcpy_htod = b"cuMemcpyHtoD_v2\0": fn(CuDevicePtr, *const c_void, usize);
    memcpy_dtoh = b"cuMemcpyDtoH_v2\0": fn(*mut c_void, CuDevicePtr, usize);
    memset_d8 = b"cuMemsetD8_v2\0": fn(CuDevicePtr, u8, usize);
    mem_get_info = b"cuMemGetInfo_v2\0": fn(*mut usize, *mut usize);
    get_error_name = b"cuGetErrorName\0": fn(CuResult, *mut *const c_char);
}
