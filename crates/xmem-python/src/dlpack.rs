//! DLPack export (`__dlpack__`): the C structs of `dlpack.h` (v1.0) and the capsule protocol.
//!
//! Written here rather than taken from a crate because it is small, fixed by the DLPack header,
//! and the parts that matter are ours: the read-only flag of a versioned capsule, and a manager
//! context that keeps the frame (and so its shared-memory reference) alive until the consumer
//! calls the deleter.

use std::ffi::{c_void, CStr};

use pyo3::ffi;
use pyo3::prelude::*;
use xmem_core::DType;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct DLDevice {
    pub device_type: i32,
    pub device_id: i32,
}

/// `kDLCPU`.
pub(crate) const CPU: DLDevice = DLDevice {
    device_type: 1,
    device_id: 0,
};

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct DLDataType {
    pub code: u8,
    pub bits: u8,
    pub lanes: u16,
}

#[repr(C)]
pub(crate) struct DLTensor {
    pub data: *mut c_void,
    pub device: DLDevice,
    pub ndim: i32,
    pub dtype: DLDataType,
    pub shape: *mut i64,
    pub strides: *mut i64,
    pub byte_offset: u64,
}

#[repr(C)]
struct DLManagedTensor {
    dl_tensor: DLTensor,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensor)>,
}

#[repr(C)]
struct DLPackVersion {
    major: u32,
    minor: u32,
}

#[repr(C)]
struct DLManagedTensorVersioned {
    version: DLPackVersion,
    manager_ctx: *mut c_void,
    deleter: Option<unsafe extern "C" fn(*mut DLManagedTensorVersioned)>,
    flags: u64,
    dl_tensor: DLTensor,
}

const _: () = {
    assert!(std::mem::size_of::<DLTensor>() == 48);
    assert!(std::mem::size_of::<DLManagedTensor>() == 64);
    assert!(std::mem::size_of::<DLManagedTensorVersioned>() == 80);
    assert!(std::mem::offset_of!(DLManagedTensorVersioned, dl_tensor) == 32);
};

const FLAG_READ_ONLY: u64 = 1;
const LEGACY: &CStr = c"dltensor";
const VERSIONED: &CStr = c"dltensor_versioned";

/// The DLPack type of `dtype`.
pub(crate) fn data_type(dtype: DType) -> DLDataType {
    let (code, bits) = match dtype {
        DType::I8 => (0, 8),
        DType::I16 => (0, 16),
        DType::I32 => (0, 32),
        DType::I64 => (0, 64),
        DType::U8 => (1, 8),
        DType::U16 => (1, 16),
        DType::U32 => (1, 32),
        DType::U64 => (1, 64),
        DType::F16 => (2, 16),
        DType::F32 => (2, 32),
        DType::F64 => (2, 64),
        DType::BF16 => (4, 16),
        DType::C64 => (5, 64),
        DType::C128 => (5, 128),
        DType::Bool => (6, 8),
    };
    DLDataType { code, bits, lanes: 1 }
}

/// What a capsule owns: the shape and strides its tensor points to, and the frame.
struct Context {
    shape: Vec<i64>,
    strides: Vec<i64>,
    owner: Py<PyAny>,
    on_release: fn(&Bound<'_, PyAny>),
}

/// What to export.
pub(crate) struct Export {
    pub data: *mut c_void,
    pub dtype: DType,
    pub shape: Vec<i64>,
    /// In elements, as DLPack wants them.
    pub strides: Vec<i64>,
    pub read_only: bool,
    /// Where `data` is: [`CPU`], or a CUDA device.
    pub device: DLDevice,
    /// Kept alive until the consumer is done; `on_release` is called with it then.
    pub owner: Py<PyAny>,
    pub on_release: fn(&Bound<'_, PyAny>),
}

/// Makes the capsule: versioned (with the read-only flag) when the consumer accepts DLPack 1.x,
/// the legacy one otherwise.
pub(crate) fn capsule(py: Python<'_>, e: Export, versioned: bool) -> PyResult<Py<PyAny>> {
    let mut ctx = Box::new(Context {
        shape: e.shape,
        strides: e.strides,
        owner: e.owner,
        on_release: e.on_release,
    });
    let tensor = DLTensor {
        data: e.data,
        device: e.device,
        ndim: ctx.shape.len() as i32,
        dtype: data_type(e.dtype),
        shape: ctx.shape.as_mut_ptr(),
        strides: ctx.strides.as_mut_ptr(),
        byte_offset: 0,
    };
    let ctx = Box::into_raw(ctx).cast::<c_void>();
    let (ptr, name): (*mut c_void, &CStr) = if versioned {
        let m = Box::new(DLManagedTensorVersioned {
            version: DLPackVersion { major: 1, minor: 0 },
            manager_ctx: ctx,
            deleter: Some(delete_versioned),
            flags: if e.read_only { FLAG_READ_ONLY } else { 0 },
            dl_tensor: tensor,
        });
        (Box::into_raw(m).cast(), VERSIONED)
    } else {
        let m = Box::new(DLManagedTensor {
            dl_tensor: tensor,
            manager_ctx: ctx,
            deleter: Some(delete_legacy),
        });
        (Box::into_raw(m).cast(), LEGACY)
    };
    // SAFETY: `ptr` is a live boxed managed tensor and `name` a static C string; the destructor
    // frees it only if no consumer took it (a consumer renames the capsule when it does).
    let raw = unsafe { ffi::PyCapsule_New(ptr, name.as_ptr(), Some(capsule_destructor)) };
    if raw.is_null() {
        // SAFETY: the capsule was not made, so nobody else owns `ptr`.
        unsafe {
            if versioned {
                delete_versioned(ptr.cast());
            } else {
                delete_legacy(ptr.cast());
            }
        }
        return Err(PyErr::fetch(py));
    }
    // SAFETY: `raw` is a new, owned reference.
    Ok(unsafe { Bound::from_owned_ptr(py, raw) }.unbind())
}

/// Frees the context: drops the owner's reference (taking the GIL, since a consumer may call
/// the deleter from any thread).
///
/// # Safety
/// `ctx` came from `Box::into_raw` in [`capsule`] and is freed once.
unsafe fn free_context(ctx: *mut c_void) {
    // SAFETY: per this function's contract.
    let ctx = unsafe { Box::from_raw(ctx.cast::<Context>()) };
    Python::attach(|py| {
        let owner = ctx.owner.bind(py);
        (ctx.on_release)(owner);
        drop(ctx);
    });
}

unsafe extern "C" fn delete_legacy(m: *mut DLManagedTensor) {
    // SAFETY: DLPack calls the deleter once, with the pointer we boxed.
    let m = unsafe { Box::from_raw(m) };
    // SAFETY: the context of a managed tensor we made.
    unsafe { free_context(m.manager_ctx) };
}

unsafe extern "C" fn delete_versioned(m: *mut DLManagedTensorVersioned) {
    // SAFETY: DLPack calls the deleter once, with the pointer we boxed.
    let m = unsafe { Box::from_raw(m) };
    // SAFETY: the context of a managed tensor we made.
    unsafe { free_context(m.manager_ctx) };
}

/// A capsule never consumed still owns its tensor: delete it. A consumed one was renamed
/// (`used_dltensor…`) and its consumer calls the deleter.
unsafe extern "C" fn capsule_destructor(capsule: *mut ffi::PyObject) {
    // SAFETY: called by Python with the capsule, GIL held.
    unsafe {
        if ffi::PyCapsule_IsValid(capsule, LEGACY.as_ptr()) == 1 {
            let p = ffi::PyCapsule_GetPointer(capsule, LEGACY.as_ptr());
            delete_legacy(p.cast());
        } else if ffi::PyCapsule_IsValid(capsule, VERSIONED.as_ptr()) == 1 {
            let p = ffi::PyCapsule_GetPointer(capsule, VERSIONED.as_ptr());
            delete_versioned(p.cast());
        }
    }
}
