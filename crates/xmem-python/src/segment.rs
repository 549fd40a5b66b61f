//! `xmem.SegmentWriter` and `xmem.SegmentReader`: one writer, many lock-free readers of a
//! latest value (a seqlock), from Python.

use std::path::PathBuf;

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyBufferError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use xmem_core::segment::{SegmentReader as Reader, SegmentWriter as Writer};

use crate::errors::IntoPy;

/// Runs `f` on the bytes of a contiguous buffer-protocol object (`bytes`, `bytearray`, a numpy
/// array) without copying them.
fn with_bytes<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> R) -> PyResult<R> {
    let buf = PyUntypedBuffer::get(obj)?;
    if !buf.is_c_contiguous() {
        return Err(PyBufferError::new_err("the data must be C-contiguous"));
    }
    // SAFETY: the buffer is held (and its memory pinned) until `buf` drops after `f`; it is
    // contiguous and `len_bytes` long. Another thread writing it meanwhile only changes which
    // bytes are copied, as with any copy from Python memory.
    let bytes = unsafe { std::slice::from_raw_parts(buf.buf_ptr().cast::<u8>(), buf.len_bytes()) };
    Ok(f(bytes))
}

/// The single writer of segment `name` (`size` bytes). A second writer gets `WriterExists`.
#[pyclass(module = "xmem", name = "SegmentWriter")]
pub struct SegmentWriter {
    inner: Option<Writer>,
}

impl SegmentWriter {
    fn writer(&mut self) -> PyResult<&mut Writer> {
        self.inner
            .as_mut()
            .ok_or_else(|| PyValueError::new_err("the segment writer was closed"))
    }
}

#[pymethods]
impl SegmentWriter {
    #[new]
    #[pyo3(signature = (name, size, *, mode = 0o600, directory = None))]
    fn new(name: &str, size: u64, mode: u32, directory: Option<PathBuf>) -> PyResult<SegmentWriter> {
        let mut b = Writer::builder(name).size(size).mode(mode);
        if let Some(d) = directory {
            b = b.directory(d);
        }
        Ok(SegmentWriter {
            inner: Some(b.create().py_err()?),
        })
    }

    /// Writes `data` (any bytes-like object) as the new value, from offset 0.
    fn write(&mut self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let w = self.writer()?;
        with_bytes(data, |b| w.write(b))?.py_err()
    }

    /// Writes `data` at `offset`, leaving the rest of the value as it was.
    fn write_at(&mut self, offset: usize, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let w = self.writer()?;
        with_bytes(data, |b| w.write_at(offset, b))?.py_err()
    }

    /// Writes made so far.
    #[getter]
    fn version(&mut self) -> PyResult<u64> {
        Ok(self.writer()?.version())
    }

    /// The value's size in bytes.
    #[getter]
    fn size(&mut self) -> PyResult<usize> {
        Ok(self.writer()?.size())
    }

    /// Removes the segment.
    fn close(&mut self) {
        self.inner = None;
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &mut self,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> bool {
        self.close();
        false
    }
}

/// A reader of segment `name`: every read is one whole write, never a torn one.
#[pyclass(module = "xmem", name = "SegmentReader", unsendable)]
pub struct SegmentReader {
    inner: Option<Reader>,
}

impl SegmentReader {
    fn reader(&mut self) -> PyResult<&mut Reader> {
        self.inner
            .as_mut()
            .ok_or_else(|| PyValueError::new_err("the segment reader was closed"))
    }
}

#[pymethods]
impl SegmentReader {
    #[new]
    #[pyo3(signature = (name, *, directory = None))]
    fn new(name: &str, directory: Option<PathBuf>) -> PyResult<SegmentReader> {
        let mut b = Reader::builder(name);
        if let Some(d) = directory {
            b = b.directory(d);
        }
        Ok(SegmentReader {
            inner: Some(b.open().py_err()?),
        })
    }

    /// The latest value, as bytes.
    fn read<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let v = self.reader()?.read().py_err()?;
        Ok(PyBytes::new(py, &v))
    }

    /// Copies the latest value into `out` (a writable bytes-like object, e.g. a numpy array);
    /// returns its version.
    fn read_into(&mut self, out: &Bound<'_, PyAny>) -> PyResult<u64> {
        let buf = PyUntypedBuffer::get(out)?;
        if buf.readonly() || !buf.is_c_contiguous() {
            return Err(PyBufferError::new_err(
                "read_into needs a writable, C-contiguous buffer",
            ));
        }
        // SAFETY: held, writable and contiguous for `len_bytes` until `buf` drops below.
        let bytes = unsafe { std::slice::from_raw_parts_mut(buf.buf_ptr().cast::<u8>(), buf.len_bytes()) };
        self.reader()?.read_into(bytes).py_err()
    }

    /// The version of the latest complete write (`None` before the first).
    #[getter]
    fn version(&mut self) -> PyResult<Option<u64>> {
        Ok(self.reader()?.version())
    }

    /// Whether a write completed since this reader's last read.
    fn has_changed(&mut self) -> PyResult<bool> {
        Ok(self.reader()?.has_changed())
    }

    /// Whether the writer is still alive.
    #[getter]
    fn writer_alive(&mut self) -> PyResult<bool> {
        Ok(self.reader()?.writer_alive())
    }

    /// The value's size in bytes.
    #[getter]
    fn size(&mut self) -> PyResult<usize> {
        Ok(self.reader()?.size())
    }

    fn close(&mut self) {
        self.inner = None;
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &mut self,
        _t: Option<&Bound<'_, PyAny>>,
        _v: Option<&Bound<'_, PyAny>>,
        _tb: Option<&Bound<'_, PyAny>>,
    ) -> bool {
        self.close();
        false
    }
}
