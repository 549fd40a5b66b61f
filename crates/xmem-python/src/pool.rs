//! `xmem.Pool`.

use std::path::PathBuf;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use xmem_core::{BufferPool, BufferRef, Error};

use crate::errors::{to_py, IntoPy};
use crate::frame::Frame;
use crate::wait;

/// A pool of fixed-size buffers in shared memory, recycled and reference-counted across
/// processes. `Pool.create(...)` makes one; `Pool.open(name)` joins it from another process.
#[pyclass(module = "xmem", name = "Pool")]
pub struct Pool {
    inner: Option<BufferPool>,
}

impl Pool {
    fn pool(&self) -> PyResult<&BufferPool> {
        self.inner
            .as_ref()
            .ok_or_else(|| PyValueError::new_err("the pool handle was closed"))
    }
}

#[allow(clippy::too_many_arguments)]
fn builder(
    name: &str,
    buffers: Option<u32>,
    buffer_size: Option<u64>,
    alignment: u32,
    mode: u32,
    prefault: bool,
    directory: Option<PathBuf>,
) -> xmem_core::PoolBuilder {
    let mut b = BufferPool::builder(name)
        .alignment(alignment)
        .mode(mode)
        .prefault(prefault);
    if let Some(n) = buffers {
        b = b.buffers(n);
    }
    if let Some(s) = buffer_size {
        b = b.buffer_size(s);
    }
    if let Some(d) = directory {
        b = b.directory(d);
    }
    b
}

#[pymethods]
impl Pool {
    /// Creates pool `name`: `buffers` buffers of `buffer_size` bytes each.
    #[staticmethod]
    #[pyo3(signature = (name, *, buffers, buffer_size, alignment = 64, mode = 0o600, prefault = true, directory = None))]
    fn create(
        name: &str,
        buffers: u32,
        buffer_size: u64,
        alignment: u32,
        mode: u32,
        prefault: bool,
        directory: Option<PathBuf>,
    ) -> PyResult<Pool> {
        let b = builder(
            name,
            Some(buffers),
            Some(buffer_size),
            alignment,
            mode,
            prefault,
            directory,
        );
        Ok(Pool {
            inner: Some(b.create().py_err()?),
        })
    }

    /// Opens pool `name`, or creates it as described if it does not exist.
    #[staticmethod]
    #[pyo3(signature = (name, *, buffers, buffer_size, alignment = 64, mode = 0o600, prefault = true, directory = None))]
    fn open_or_create(
        name: &str,
        buffers: u32,
        buffer_size: u64,
        alignment: u32,
        mode: u32,
        prefault: bool,
        directory: Option<PathBuf>,
    ) -> PyResult<Pool> {
        let b = builder(
            name,
            Some(buffers),
            Some(buffer_size),
            alignment,
            mode,
            prefault,
            directory,
        );
        Ok(Pool {
            inner: Some(b.open_or_create().py_err()?),
        })
    }

    /// Opens the existing pool `name`.
    #[staticmethod]
    #[pyo3(signature = (name, *, directory = None))]
    fn open(name: &str, directory: Option<PathBuf>) -> PyResult<Pool> {
        let b = builder(name, None, None, 64, 0o600, true, directory);
        Ok(Pool {
            inner: Some(b.open().py_err()?),
        })
    }

    /// The pool's name.
    #[getter]
    fn name(&self) -> PyResult<String> {
        Ok(self.pool()?.name().to_string())
    }

    /// How many buffers it has.
    #[getter]
    fn buffer_count(&self) -> PyResult<u32> {
        Ok(self.pool()?.buffer_count())
    }

    /// Bytes per buffer.
    #[getter]
    fn buffer_size(&self) -> PyResult<u64> {
        Ok(self.pool()?.buffer_size())
    }

    /// Buffers free right now.
    #[getter]
    fn free_count(&self) -> PyResult<u32> {
        Ok(self.pool()?.free_count())
    }

    /// A free buffer to write, waiting at most `timeout` seconds (`None`: as long as it takes;
    /// `Timeout` after). The GIL is released while waiting; Ctrl-C interrupts.
    #[pyo3(signature = (timeout = None))]
    fn acquire(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Frame> {
        let pool = self.pool()?.clone();
        let total = wait::timeout(timeout)?;
        let got = wait::sliced(py, total, |slice| match pool.acquire_timeout(slice) {
            Ok(b) => Ok(Some(b)),
            Err(Error::Timeout { .. }) => Ok(None),
            Err(e) => Err(to_py(e)),
        })?;
        match got {
            Some(b) => Frame::write(b),
            None => Err(crate::errors::Timeout::new_err(format!(
                "no buffer of pool {} became free within {:?}",
                pool.name(),
                total.unwrap_or_default()
            ))),
        }
    }

    /// A free buffer to write, or `None` if every buffer is in use.
    fn try_acquire(&self) -> PyResult<Option<Frame>> {
        match self.pool()?.try_acquire() {
            Ok(b) => Frame::write(b).map(Some),
            Err(Error::PoolExhausted { .. }) => Ok(None),
            Err(e) => Err(to_py(e)),
        }
    }

    /// A read-only reference to the buffer a token names (`StaleRef` if that life ended).
    fn get(&self, token: &[u8]) -> PyResult<Frame> {
        let r = BufferRef::from_bytes(token).py_err()?;
        Frame::read(self.pool()?.get(r).py_err()?)
    }

    /// Write access to the buffer a token names, if nobody else holds it.
    fn get_mut(&self, token: &[u8]) -> PyResult<Frame> {
        let r = BufferRef::from_bytes(token).py_err()?;
        Frame::write(self.pool()?.get_mut(r).py_err()?)
    }

    /// Returns the references of dead processes now; returns how many.
    fn reclaim(&self) -> PyResult<u64> {
        Ok(self.pool()?.reclaim().references)
    }

    /// Closes this handle (frames still held keep the memory until they go).
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

    fn __repr__(&self) -> String {
        match &self.inner {
            Some(p) => format!(
                "<xmem.Pool {} {}×{} B, {} free>",
                p.name(),
                p.buffer_count(),
                p.buffer_size(),
                p.free_count()
            ),
            None => "<xmem.Pool closed>".into(),
        }
    }
}
