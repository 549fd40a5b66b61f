//! `xmem.Frame`: one reference to one pool buffer, seen from Python as a typed array.
//!
//! The frame owns the Rust guard. Every view made of it (a numpy array through the buffer
//! protocol, a DLPack capsule) holds a strong reference to the frame, so the shared-memory
//! reference lives exactly as long as the longest-lived view or the frame itself.

use std::ffi::{c_int, c_void, CString};
use std::ptr;

use pyo3::exceptions::{PyBufferError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};
use xmem_core::{Buffer, BufferMut, DType, TensorDesc};

use crate::dlpack;
use crate::errors::IntoPy;

/// The Rust guard a frame holds.
pub(crate) enum Guard {
    /// Shared, read-only.
    Read(Buffer),
    /// Exclusive, writable.
    Write(BufferMut),
    /// Let go.
    Released,
}

/// Reads `$e` (an expression of `b`) from either guard; a released frame is an error.
macro_rules! read_guard {
    ($guard:expr, |$b:ident| $e:expr) => {
        match &$guard {
            Guard::Read($b) => Ok($e),
            Guard::Write($b) => Ok($e),
            Guard::Released => Err(Frame::released()),
        }
    };
}

/// Where a device pool's frame is in this process, and the pool that keeps it mapped.
pub(crate) struct DeviceView {
    /// The buffer's first byte, in this process's mapping of the allocation.
    pub base: u64,
    /// DLPack's device of it.
    pub dl: dlpack::DLDevice,
    /// Keeps the mapping alive while the frame (and its views) live.
    pub pool: std::sync::Arc<xmem_device::DevicePool>,
    /// CUDA streams given to `__dlpack__`: the work they queued on the frame must be done
    /// before its reference goes back to the pool (DLPack's deleter gets no stream).
    pub consumer_streams: Vec<usize>,
}

/// A reference to one buffer of a pool: dtype, shape, strides and metadata, usable as
/// `np.asarray(frame)` (buffer protocol) and `np.from_dlpack(frame)` / `torch.from_dlpack(frame)`
/// without copying. Read-only frames give read-only arrays.
#[pyclass(module = "xmem", name = "Frame")]
pub struct Frame {
    pub(crate) guard: Guard,
    desc: TensorDesc,
    /// Live views: buffer-protocol exports and DLPack capsules not yet deleted.
    exports: usize,
    /// `release()` (or leaving a `with` block) while views were alive: let go with the last.
    release_when_unviewed: bool,
    /// For a device pool's frame: where it is.
    pub(crate) device: Option<DeviceView>,
}

impl Frame {
    pub fn read(b: Buffer) -> PyResult<Frame> {
        let desc = b.tensor().py_err()?;
        Ok(Frame {
            guard: Guard::Read(b),
            desc,
            exports: 0,
            release_when_unviewed: false,
            device: None,
        })
    }

    pub fn write(b: BufferMut) -> PyResult<Frame> {
        let desc = b.tensor().py_err()?;
        Ok(Frame {
            guard: Guard::Write(b),
            desc,
            exports: 0,
            release_when_unviewed: false,
            device: None,
        })
    }

    /// A frame that refers to nothing, made and dropped to keep that path warm (`wait::Rehearsal`).
    pub fn placeholder() -> Frame {
        Frame {
            guard: Guard::Released,
            desc: TensorDesc::bytes(0),
            exports: 0,
            release_when_unviewed: false,
            device: None,
        }
    }

    fn released() -> PyErr {
        PyValueError::new_err("the frame was released; it no longer refers to any buffer")
    }

    /// The writable guard, or a clear error.
    pub fn writable(&mut self) -> PyResult<&mut BufferMut> {
        match &mut self.guard {
            Guard::Write(b) => Ok(b),
            Guard::Read(_) => Err(PyValueError::new_err(
                "this frame is read-only (received, or got with Pool.get); only a frame from acquire() or loan() can be written",
            )),
            Guard::Released => Err(Self::released()),
        }
    }

    /// Takes the writable guard out (to publish it); refused while views exist.
    pub fn take_writable(&mut self) -> PyResult<BufferMut> {
        self.writable()?;
        match std::mem::replace(&mut self.guard, Guard::Released) {
            Guard::Write(b) => Ok(b),
            _ => unreachable!("checked above"),
        }
    }

    /// After a publish that failed: the frame is writable again, as before the call.
    pub fn restore_writable(&mut self, b: BufferMut) {
        self.guard = Guard::Write(b);
    }

    /// After publishing: the frame becomes a read-only reference to what was published.
    pub fn become_read(&mut self, b: Buffer) {
        self.guard = Guard::Read(b);
    }

    pub fn exports(&self) -> usize {
        self.exports
    }

    /// The data's first element and whether it is read-only.
    fn data(&mut self) -> PyResult<(*mut u8, bool)> {
        let offset = self.desc.byte_offset() as usize;
        if let Some(device) = &self.device {
            let read_only = match &self.guard {
                Guard::Read(_) => true,
                Guard::Write(_) => false,
                Guard::Released => return Err(Self::released()),
            };
            return Ok(((device.base as usize + offset) as *mut u8, read_only));
        }
        let (base, read_only) = match &mut self.guard {
            Guard::Read(b) => (b.bytes().as_ptr().cast_mut(), true),
            Guard::Write(b) => (b.bytes_mut().as_mut_ptr(), false),
            Guard::Released => return Err(Self::released()),
        };
        // The description was validated against the buffer: the offset is inside it.
        Ok((base.wrapping_add(offset), read_only))
    }

    fn token_bytes(&self) -> PyResult<[u8; 16]> {
        read_guard!(self.guard, |b| b.token().to_bytes())
    }

    fn unviewed(&mut self) {
        if let Some(device) = &mut self.device {
            // The consumer's queued work on the frame ends before the frame can let go.
            for stream in device.consumer_streams.drain(..) {
                let waited = if stream == WHOLE_DEVICE {
                    device.pool.synchronize()
                } else {
                    device.pool.wait_stream(stream)
                };
                if let Err(e) = waited {
                    eprintln!("xmem: waiting for a consumer's CUDA stream before releasing a frame: {e}");
                }
            }
        }
        self.exports = self.exports.saturating_sub(1);
        if self.exports == 0 && self.release_when_unviewed {
            self.guard = Guard::Released;
        }
    }
}

impl Frame {
    fn dl_device(&self) -> dlpack::DLDevice {
        self.device.as_ref().map_or(dlpack::CPU, |d| d.dl)
    }
}

/// A consumer stream that stands for "every stream of the device".
const WHOLE_DEVICE: usize = usize::MAX;

/// The consumer's stream as DLPack's `__dlpack__(stream=…)` gives it, checked: host memory
/// takes only `None`; on CUDA `None` means the legacy default stream (1), `-1` asks for no
/// synchronisation (the frame's release then waits for the whole device), `0` is refused as
/// ambiguous, anything else is a `cudaStream_t`.
fn dlpack_stream(device: dlpack::DLDevice, stream: Option<&Bound<'_, PyAny>>) -> PyResult<Option<usize>> {
    if device.device_type == dlpack::CPU.device_type {
        return match stream {
            None => Ok(None),
            Some(s) if s.is_none() => Ok(None),
            Some(_) => Err(PyBufferError::new_err(
                "a host frame takes no stream (stream=None)",
            )),
        };
    }
    let value: Option<i64> = match stream {
        None => None,
        Some(s) if s.is_none() => None,
        Some(s) => Some(s.extract()?),
    };
    match value {
        None => Ok(Some(1)),
        Some(0) => Err(PyBufferError::new_err(
            "stream=0 is ambiguous in DLPack; pass 1 (legacy default), 2 (per-thread default) or a cudaStream_t",
        )),
        // Unknown stream: the release waits for the whole device.
        Some(-1) => Ok(Some(WHOLE_DEVICE)),
        Some(s) if s > 0 => Ok(Some(s as usize)),
        Some(s) => Err(PyBufferError::new_err(format!("stream={s} is not a CUDA stream"))),
    }
}

/// Shape and strides a buffer-protocol view points to, and its format.
struct ViewData {
    format: CString,
    shape: Vec<ffi::Py_ssize_t>,
    strides: Vec<ffi::Py_ssize_t>,
}

/// The buffer-protocol format character of `dtype`.
fn format_of(dtype: DType) -> PyResult<&'static str> {
    Ok(match dtype {
        DType::U8 => "B",
        DType::U16 => "H",
        DType::U32 => "I",
        DType::U64 => "Q",
        DType::I8 => "b",
        DType::I16 => "h",
        DType::I32 => "i",
        DType::I64 => "q",
        DType::F16 => "e",
        DType::F32 => "f",
        DType::F64 => "d",
        DType::Bool => "?",
        DType::C64 => "Zf",
        DType::C128 => "Zd",
        DType::BF16 => {
            return Err(PyBufferError::new_err(
                "bfloat16 has no numpy dtype: use torch.from_dlpack(frame)",
            ))
        }
    })
}

/// Parses a dtype: xmem's names (`"uint8"`, `"bfloat16"`…), or anything `numpy.dtype` takes
/// (`"f4"`, `numpy.uint8`, `numpy.dtype("float32")`).
pub(crate) fn parse_dtype(obj: &Bound<'_, PyAny>) -> PyResult<DType> {
    if let Ok(s) = obj.extract::<String>() {
        if let Ok(d) = s.parse::<DType>() {
            return Ok(d);
        }
    }
    // numpy's own spellings: numpy.float32, numpy.dtype("f4"), "f4", "<u2"…
    let name: String = obj
        .py()
        .import("numpy")?
        .getattr("dtype")?
        .call1((obj,))
        .and_then(|d| d.getattr("name")?.extract())
        .map_err(|_| PyTypeError::new_err(format!("unknown dtype {obj}; use one of xmem.DTYPES")))?;
    name.parse::<DType>()
        .map_err(|e| PyTypeError::new_err(e.to_string()))
}

#[pymethods]
impl Frame {
    /// Whether the frame is read-only (a received frame, or one got with `Pool.get`).
    #[getter]
    fn readonly(&self) -> bool {
        !matches!(self.guard, Guard::Write(_))
    }

    /// Whether the frame was released.
    #[getter]
    fn released_(&self) -> bool {
        matches!(self.guard, Guard::Released)
    }

    /// The element type's name (`"uint8"`, `"float32"`, `"bfloat16"`…).
    #[getter]
    fn dtype(&self) -> &'static str {
        self.desc.dtype().name()
    }

    /// The shape.
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.desc.shape())
    }

    /// The strides in bytes (as numpy gives them).
    #[getter]
    fn strides<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, self.desc.byte_strides())
    }

    /// Bytes of the tensor's elements.
    #[getter]
    fn nbytes(&self) -> u64 {
        self.desc.num_elements() * self.desc.dtype().size() as u64
    }

    /// The address of the first element (to check that views share memory).
    #[getter]
    fn address(&mut self) -> PyResult<usize> {
        Ok(self.data()?.0 as usize)
    }

    /// The buffer's index in its pool.
    #[getter]
    fn index(&self) -> PyResult<u32> {
        read_guard!(self.guard, |b| b.index())
    }

    /// 16 bytes naming this life of the buffer: another process's `Pool.get(token)` finds it.
    #[getter]
    fn token<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.token_bytes()?))
    }

    /// The sequence number (stamped by `Publisher.publish`).
    #[getter]
    fn sequence(&self) -> PyResult<u64> {
        read_guard!(self.guard, |b| b.sequence())
    }

    #[setter(sequence)]
    fn set_sequence(&mut self, seq: u64) -> PyResult<()> {
        self.writable()?.set_sequence(seq);
        Ok(())
    }

    /// The time stamp, ns of `CLOCK_MONOTONIC` (stamped by `publish` unless set).
    #[getter]
    fn timestamp_ns(&self) -> PyResult<u64> {
        read_guard!(self.guard, |b| b.timestamp_ns())
    }

    #[setter(timestamp_ns)]
    fn set_timestamp_ns(&mut self, ns: u64) -> PyResult<()> {
        self.writable()?.set_timestamp_ns(ns);
        Ok(())
    }

    /// The content type (`"image/rgb8"`…), empty if none.
    #[getter]
    fn content_type(&self) -> PyResult<String> {
        read_guard!(self.guard, |b| b.content_type())
    }

    #[setter(content_type)]
    fn set_content_type(&mut self, value: &str) -> PyResult<()> {
        self.writable()?.set_content_type(value).py_err()
    }

    /// The user metadata bytes.
    #[getter]
    fn user_metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let v = read_guard!(self.guard, |b| b.user_metadata())?;
        Ok(PyBytes::new(py, &v))
    }

    #[setter(user_metadata)]
    fn set_user_metadata(&mut self, value: &[u8]) -> PyResult<()> {
        self.writable()?.set_user_metadata(value).py_err()
    }

    /// Describes the buffer's content: `shape` (elements), `dtype`, optional `strides` in bytes
    /// (C order by default) and `byte_offset`. Checked against the buffer (`InvalidShape`).
    #[pyo3(signature = (shape, dtype = None, strides = None, byte_offset = 0))]
    fn set_tensor(
        &mut self,
        shape: Vec<u64>,
        dtype: Option<&Bound<'_, PyAny>>,
        strides: Option<Vec<i64>>,
        byte_offset: u64,
    ) -> PyResult<()> {
        if self.exports > 0 {
            return Err(PyBufferError::new_err(
                "arrays still view this frame with its old shape; delete them before set_tensor",
            ));
        }
        let dtype = match dtype {
            Some(d) => parse_dtype(d)?,
            None => DType::U8,
        };
        let desc = match strides {
            None if byte_offset == 0 => TensorDesc::contiguous(dtype, &shape),
            None => {
                let c = TensorDesc::contiguous(dtype, &shape).py_err()?;
                TensorDesc::strided(dtype, &shape, c.strides(), byte_offset)
            }
            Some(s) => {
                let size = dtype.size() as i64;
                if s.iter().any(|b| b % size != 0) {
                    return Err(crate::errors::InvalidShape::new_err(format!(
                        "strides {s:?} are not multiples of {dtype}'s {size} bytes"
                    )));
                }
                let elems: Vec<i64> = s.iter().map(|b| b / size).collect();
                TensorDesc::strided(dtype, &shape, &elems, byte_offset)
            }
        }
        .py_err()?;
        self.writable()?.set_tensor(&desc).py_err()?;
        self.desc = desc;
        Ok(())
    }

    /// Makes a writable frame read-only (others may then `get` it by its token).
    fn freeze(&mut self) -> PyResult<()> {
        if self.exports > 0 {
            return Err(PyBufferError::new_err(
                "writable arrays still view this frame; delete them before freeze()",
            ));
        }
        let b = self.take_writable()?;
        self.guard = Guard::Read(b.freeze());
        Ok(())
    }

    /// Lets go of the reference now. Refused (`BufferError`) while arrays or tensors view it:
    /// they keep the memory alive, and dropping them lets go.
    fn release(&mut self) -> PyResult<()> {
        if self.exports > 0 {
            return Err(PyBufferError::new_err(format!(
                "{} array(s) or tensor(s) still view this frame; the reference goes when the last does",
                self.exports
            )));
        }
        self.guard = Guard::Released;
        Ok(())
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Leaving a `with` block lets go, or, if views remain, lets go with the last of them.
    fn __exit__(
        &mut self,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> bool {
        if self.exports == 0 {
            self.guard = Guard::Released;
        } else {
            self.release_when_unviewed = true;
        }
        false
    }

    /// The frame as a numpy array (no copy; read-only for read-only frames).
    fn numpy<'py>(slf: Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        let np = slf.py().import("numpy")?;
        np.call_method1("asarray", (slf,))
    }

    /// numpy's fallback when the buffer protocol fails (a released frame, bfloat16): raises
    /// the reason instead of letting numpy wrap the frame in an object array.
    #[pyo3(signature = (dtype = None, copy = None))]
    fn __array__<'py>(
        slf: Bound<'py, Self>,
        dtype: Option<&Bound<'py, PyAny>>,
        copy: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let view = pyo3::types::PyMemoryView::from(slf.as_any())?;
        let np = py.import("numpy")?;
        let mut a = np.call_method1("asarray", (view,))?;
        if let Some(d) = dtype {
            a = a.call_method1("astype", (d,))?;
        }
        if copy == Some(true) {
            a = a.call_method0("copy")?;
        }
        Ok(a)
    }

    fn __repr__(&self) -> String {
        match &self.guard {
            Guard::Released => "<xmem.Frame released>".into(),
            g => format!(
                "<xmem.Frame {} {:?} {} seq={}>",
                self.desc.dtype(),
                self.desc.shape(),
                if matches!(g, Guard::Write(_)) {
                    "writable"
                } else {
                    "read-only"
                },
                match g {
                    Guard::Read(b) => b.sequence(),
                    Guard::Write(b) => b.sequence(),
                    Guard::Released => 0,
                }
            ),
        }
    }

    /// Buffer protocol: `np.asarray(frame)`, `memoryview(frame)`.
    unsafe fn __getbuffer__(slf: Bound<'_, Self>, view: *mut ffi::Py_buffer, flags: c_int) -> PyResult<()> {
        if view.is_null() {
            return Err(PyBufferError::new_err("no view to fill"));
        }
        let mut this = slf.borrow_mut();
        if this
            .device
            .as_ref()
            .is_some_and(|d| d.dl.device_type != dlpack::CPU.device_type)
        {
            return Err(PyBufferError::new_err(
                "this frame is in GPU memory: use torch.from_dlpack(frame) or cupy.from_dlpack(frame), not numpy",
            ));
        }
        let (data, read_only) = this.data()?;
        if read_only && flags & ffi::PyBUF_WRITABLE == ffi::PyBUF_WRITABLE {
            return Err(PyBufferError::new_err(
                "this frame is read-only; ask for a read-only view",
            ));
        }
        let desc = &this.desc;
        let format = format_of(desc.dtype())?;
        let contiguous = desc.is_contiguous();
        if !contiguous && flags & ffi::PyBUF_STRIDES != ffi::PyBUF_STRIDES {
            return Err(PyBufferError::new_err(
                "this frame is strided; the consumer must accept strides",
            ));
        }
        let itemsize = desc.dtype().size();
        let data_box = Box::new(ViewData {
            format: CString::new(format).expect("no NUL"),
            shape: desc.shape().iter().map(|&d| d as ffi::Py_ssize_t).collect(),
            strides: desc
                .byte_strides()
                .iter()
                .map(|&s| s as ffi::Py_ssize_t)
                .collect(),
        });
        let len = desc.num_elements() as usize * itemsize;
        let ndim = desc.ndim();
        this.exports += 1;
        drop(this);
        let data_box = Box::into_raw(data_box);
        // SAFETY: `view` is the Py_buffer Python asked us to fill; `data_box` lives until
        // `__releasebuffer__` frees it; `obj` holds a strong reference to the frame, whose guard
        // keeps `data` mapped and referenced while the view exists.
        unsafe {
            (*view).buf = data.cast::<c_void>();
            (*view).obj = slf.into_any().into_ptr();
            (*view).len = len as ffi::Py_ssize_t;
            (*view).readonly = c_int::from(read_only);
            (*view).itemsize = itemsize as ffi::Py_ssize_t;
            (*view).format = if flags & ffi::PyBUF_FORMAT == ffi::PyBUF_FORMAT {
                (*data_box).format.as_ptr().cast_mut()
            } else {
                ptr::null_mut()
            };
            (*view).ndim = if flags & ffi::PyBUF_ND == ffi::PyBUF_ND {
                ndim as c_int
            } else {
                1
            };
            (*view).shape = if flags & ffi::PyBUF_ND == ffi::PyBUF_ND {
                (*data_box).shape.as_mut_ptr()
            } else {
                ptr::null_mut()
            };
            (*view).strides = if flags & ffi::PyBUF_STRIDES == ffi::PyBUF_STRIDES {
                (*data_box).strides.as_mut_ptr()
            } else {
                ptr::null_mut()
            };
            (*view).suboffsets = ptr::null_mut();
            (*view).internal = data_box.cast::<c_void>();
        }
        Ok(())
    }

    unsafe fn __releasebuffer__(&mut self, view: *mut ffi::Py_buffer) {
        // SAFETY: `internal` is the box `__getbuffer__` made for this view, freed once here.
        unsafe {
            let internal = (*view).internal;
            if !internal.is_null() {
                drop(Box::from_raw(internal.cast::<ViewData>()));
                (*view).internal = ptr::null_mut();
            }
        }
        self.unviewed();
    }

    /// DLPack: `np.from_dlpack(frame)`, `torch.from_dlpack(frame)`. A consumer that accepts
    /// DLPack 1.x gets a versioned capsule, marked read-only for read-only frames.
    #[pyo3(signature = (*, stream = None, max_version = None, dl_device = None, copy = None))]
    fn __dlpack__(
        slf: Bound<'_, Self>,
        stream: Option<&Bound<'_, PyAny>>,
        max_version: Option<(u32, u32)>,
        dl_device: Option<(i32, i32)>,
        copy: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        let here = slf.borrow().dl_device();
        if let Some((t, id)) = dl_device {
            if (t, id) != (here.device_type, here.device_id) {
                return Err(PyBufferError::new_err(format!(
                    "this frame is on device ({}, {}); it cannot be exported to device ({t}, {id})",
                    here.device_type, here.device_id
                )));
            }
        }
        let consumer_stream = dlpack_stream(here, stream)?;
        if copy == Some(true) {
            return Err(PyBufferError::new_err(
                "xmem exports views, never copies; copy the array you get instead",
            ));
        }
        let py = slf.py();
        let export = {
            let mut this = slf.borrow_mut();
            let (data, read_only) = this.data()?;
            let desc = &this.desc;
            let e = dlpack::Export {
                data: data.cast(),
                dtype: desc.dtype(),
                shape: desc.shape().iter().map(|&d| d as i64).collect(),
                strides: desc.strides().to_vec(),
                read_only,
                device: this.dl_device(),
                owner: slf.clone().into_any().unbind(),
                on_release: |owner| {
                    if let Ok(f) = owner.cast::<Frame>() {
                        if let Ok(mut f) = f.try_borrow_mut() {
                            f.unviewed();
                        }
                    }
                },
            };
            this.exports += 1;
            if let (Some(device), Some(stream)) = (&mut this.device, consumer_stream) {
                device.consumer_streams.push(stream);
            }
            e
        };
        let versioned = max_version.is_some_and(|(major, _)| major >= 1);
        dlpack::capsule(py, export, versioned)
    }

    fn __dlpack_device__(&self) -> (i32, i32) {
        let d = self.dl_device();
        (d.device_type, d.device_id)
    }

    /// The frame's first element's address in this process (a CUDA device pointer for a CUDA
    /// pool's frame).
    #[getter]
    fn data_ptr(&mut self) -> PyResult<u64> {
        Ok(self.data()?.0 as u64)
    }
}
