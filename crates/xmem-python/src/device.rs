//! `xmem.DevicePool`: a pool whose buffers are device memory (CUDA with the `cuda` feature, or
//! the host stand-in), handed to every attached process, alive while any of them is.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use xmem_core::{BufferPool, BufferRef, Error};
use xmem_device::{DeviceError as Failure, DevicePool as Inner};

use crate::dlpack;
use crate::errors::{to_py, IntoPy};
use crate::frame::{DeviceView, Frame, Guard};
use crate::wait;

fn device_err(e: Failure) -> PyErr {
    match e {
        Failure::Pool(e) => to_py(e),
        e @ Failure::UnknownDevice { .. } => PyValueError::new_err(e.to_string()),
        other => crate::errors::DeviceError::new_err(other.to_string()),
    }
}

/// A pool of buffers in one device allocation. Frames are DLPack producers on the device:
/// `torch.from_dlpack(frame)` gives a CUDA tensor on the same memory. `device="host"` is a
/// stand-in in host memory (for tests and machines without a GPU).
#[pyclass(module = "xmem", name = "DevicePool")]
pub struct DevicePool {
    inner: Option<Arc<Inner>>,
}

impl DevicePool {
    fn pool(&self) -> PyResult<&Arc<Inner>> {
        self.inner
            .as_ref()
            .ok_or_else(|| PyValueError::new_err("the device pool handle was closed"))
    }

    fn frame(&self, frame: Frame) -> PyResult<Frame> {
        device_frame(self.pool()?, frame)
    }
}

/// A frame of device pool `pool`, made a DLPack producer on its device.
fn device_frame(pool: &Arc<Inner>, frame: Frame) -> PyResult<Frame> {
    let base = match &frame.guard {
        Guard::Read(b) => pool.device_ptr(b),
        Guard::Write(b) => pool.device_ptr_mut(b),
        Guard::Released => unreachable!("a fresh frame"),
    }
    .map_err(device_err)?;
    let (device_type, device_id) = pool.dlpack_device();
    let mut frame = frame;
    frame.device = Some(DeviceView {
        base,
        dl: dlpack::DLDevice {
            device_type,
            device_id,
        },
        pool: pool.clone(),
        consumer_streams: Vec::new(),
    });
    Ok(frame)
}

fn parse_device(device: &str, name: &str) -> PyResult<Box<dyn xmem_device::DeviceBackend>> {
    xmem_device::backend_named(device, name).map_err(device_err)
}

#[pymethods]
impl DevicePool {
    /// Creates device pool `name` of `buffers` buffers of `buffer_size` bytes on `device`
    /// ("cuda", "cuda:N", or "host" for the stand-in).
    #[staticmethod]
    #[pyo3(signature = (name, *, buffers, buffer_size, device = "cuda", alignment = 256, mode = 0o600, directory = None))]
    fn create(
        name: &str,
        buffers: u32,
        buffer_size: u64,
        device: &str,
        alignment: u32,
        mode: u32,
        directory: Option<PathBuf>,
    ) -> PyResult<DevicePool> {
        let mut b = BufferPool::builder(name)
            .buffers(buffers)
            .buffer_size(buffer_size)
            .alignment(alignment)
            .mode(mode);
        if let Some(d) = directory {
            b = b.directory(d);
        }
        Ok(DevicePool {
            inner: Some(Arc::new(
                Inner::create(b, parse_device(device, name)?).map_err(device_err)?,
            )),
        })
    }

    /// Opens device pool `name`, receiving its memory from a process that holds it.
    #[staticmethod]
    #[pyo3(signature = (name, *, directory = None))]
    fn open(name: &str, directory: Option<PathBuf>) -> PyResult<DevicePool> {
        let mut b = BufferPool::builder(name);
        if let Some(d) = directory {
            b = b.directory(d);
        }
        Ok(DevicePool {
            inner: Some(Arc::new(Inner::open_auto(b).map_err(device_err)?)),
        })
    }

    /// The pool's name.
    #[getter]
    fn name(&self) -> PyResult<String> {
        Ok(self.pool()?.pool().name().to_string())
    }

    /// The device, in words (`cuda:0 (GPU-…)`, `the host stand-in`).
    #[getter]
    fn device(&self) -> PyResult<String> {
        Ok(self.pool()?.describe_device())
    }

    /// The pid of the process that handed this one the memory (`None` for the creator).
    #[getter]
    fn received_from(&self) -> PyResult<Option<u32>> {
        Ok(self.pool()?.received_from())
    }

    /// How many buffers it has.
    #[getter]
    fn buffer_count(&self) -> PyResult<u32> {
        Ok(self.pool()?.pool().buffer_count())
    }

    /// Bytes per buffer.
    #[getter]
    fn buffer_size(&self) -> PyResult<u64> {
        Ok(self.pool()?.pool().buffer_size())
    }

    /// Buffers free right now.
    #[getter]
    fn free_count(&self) -> PyResult<u32> {
        Ok(self.pool()?.pool().free_count())
    }

    /// A free buffer to write (a writable DLPack producer), waiting at most `timeout` seconds.
    #[pyo3(signature = (timeout = None))]
    fn acquire(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Frame> {
        let pool = self.pool()?.pool().clone();
        let total = wait::timeout(timeout)?;
        let got = wait::sliced(py, total, |slice| match pool.acquire_timeout(slice) {
            Ok(b) => Ok(Some(b)),
            Err(Error::Timeout { .. }) => Ok(None),
            Err(e) => Err(to_py(e)),
        })?;
        match got {
            Some(b) => self.frame(Frame::write(b)?),
            None => Err(crate::errors::Timeout::new_err(format!(
                "no buffer of device pool {} became free within {:?}",
                pool.name(),
                total.unwrap_or_default()
            ))),
        }
    }

    /// A read-only reference to the buffer a token names.
    fn get(&self, token: &[u8]) -> PyResult<Frame> {
        let r = BufferRef::from_bytes(token).py_err()?;
        let b = self.pool()?.pool().get(r).py_err()?;
        self.frame(Frame::read(b)?)
    }

    /// Waits for every write this process queued on the device: call it before a frame's
    /// token goes to another process.
    fn synchronize(&self, py: Python<'_>) -> PyResult<()> {
        let pool = self.pool()?.clone();
        py.detach(|| pool.synchronize()).map_err(device_err)
    }

    /// Copies `data` (bytes-like) into the writable frame at byte `offset`.
    #[pyo3(signature = (frame, data, offset = 0))]
    fn write(&self, frame: &Bound<'_, Frame>, data: &[u8], offset: u64) -> PyResult<()> {
        let pool = self.pool()?;
        let mut f = frame.borrow_mut();
        let b = f.writable()?;
        pool.write(b, offset, data).map_err(device_err)
    }

    /// Copies the frame's bytes out of the device.
    fn read<'py>(&self, py: Python<'py>, frame: &Bound<'py, Frame>) -> PyResult<Bound<'py, PyBytes>> {
        let pool = self.pool()?;
        let f = frame.borrow();
        let mut out = vec![0u8; pool.pool().buffer_size() as usize];
        match &f.guard {
            Guard::Read(b) => pool.read(b, 0, &mut out).map_err(device_err)?,
            Guard::Write(b) => pool.read_own(b, 0, &mut out).map_err(device_err)?,
            Guard::Released => return Err(PyValueError::new_err("the frame was released")),
        }
        Ok(PyBytes::new(py, &out))
    }

    /// Returns the references of dead processes now; returns how many.
    fn reclaim(&self) -> PyResult<u64> {
        Ok(self.pool()?.pool().reclaim().references)
    }

    /// Closes this handle (frames still held keep the memory mapped until they go).
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
                "<xmem.DevicePool {} on {} {}×{} B, {} free>",
                p.pool().name(),
                p.describe_device(),
                p.pool().buffer_count(),
                p.pool().buffer_size(),
                p.pool().free_count()
            ),
            None => "<xmem.DevicePool closed>".into(),
        }
    }
}

/// Publishes frames in device memory to every subscriber of stream `name`: `loan()` a frame
/// (a DLPack producer on the device: write it with torch), `publish(frame)`. The device is
/// synchronised before each frame goes out. Policies as `Publisher`'s.
#[pyclass(module = "xmem", name = "DevicePublisher", unsendable)]
pub struct DevicePublisher {
    inner: Option<xmem_device::DevicePublisher>,
}

impl DevicePublisher {
    fn publisher(&mut self) -> PyResult<&mut xmem_device::DevicePublisher> {
        self.inner
            .as_mut()
            .ok_or_else(|| PyValueError::new_err("the device publisher was closed"))
    }
}

#[pymethods]
impl DevicePublisher {
    /// Allocates the device memory, creates the pool `name.pool` on it and stream `name`.
    #[new]
    #[pyo3(signature = (name, *, buffer_size, device = "cuda", buffers = 8, depth = 4, policy = "drop_oldest", timeout = 5.0, max_subscribers = 8, mode = 0o600, directory = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: &str,
        buffer_size: u64,
        device: &str,
        buffers: u32,
        depth: u32,
        policy: &str,
        timeout: f64,
        max_subscribers: u32,
        mode: u32,
        directory: Option<PathBuf>,
    ) -> PyResult<DevicePublisher> {
        let mut b = xmem_core::stream::Publisher::builder(name)
            .buffer_size(buffer_size)
            .buffers(buffers)
            .policy(crate::stream::parse_policy(policy, timeout)?)
            .max_subscribers(max_subscribers)
            .mode(mode);
        if policy != "latest" {
            b = b.depth(depth);
        }
        if let Some(d) = directory {
            b = b.directory(d);
        }
        let backend = parse_device(device, name)?;
        Ok(DevicePublisher {
            inner: Some(xmem_device::DevicePublisher::create(b, backend).map_err(device_err)?),
        })
    }

    /// A writable frame for the next publish, described as `shape` of `dtype` (default uint8).
    #[pyo3(signature = (shape, dtype = None))]
    fn loan(&mut self, py: Python<'_>, shape: Vec<u64>, dtype: Option<&Bound<'_, PyAny>>) -> PyResult<Frame> {
        let desc = crate::stream::tensor(shape, dtype)?;
        let publisher = self.publisher()?;
        let mut b = py.detach(|| publisher.loan()).map_err(device_err)?;
        b.set_tensor(&desc).py_err()?;
        device_frame(publisher.device(), Frame::write(b)?)
    }

    /// Synchronises the device and publishes the frame; returns its sequence number. The frame
    /// is let go (subscribers hold it now). Refused while tensors still view it; on another
    /// failure it stays writable, to publish again.
    fn publish(&mut self, py: Python<'_>, frame: &Bound<'_, Frame>) -> PyResult<u64> {
        if frame.borrow().exports() > 0 {
            return Err(pyo3::exceptions::PyBufferError::new_err(
                "tensors or arrays still view this frame; delete them before publish()",
            ));
        }
        let b = frame.borrow_mut().take_writable()?;
        let publisher = self.publisher()?;
        match py.detach(|| publisher.publish(b)) {
            Ok(seq) => {
                frame.borrow_mut().device = None;
                Ok(seq)
            }
            Err(e) => {
                frame.borrow_mut().restore_writable(e.frame);
                Err(device_err(e.error))
            }
        }
    }

    /// The device, in words.
    #[getter]
    fn device(&mut self) -> PyResult<String> {
        Ok(self.publisher()?.device().describe_device())
    }

    /// Closes the stream: subscribers receive what was published, then `PublisherGone`.
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

/// Receives the frames of device stream `name`: each a read-only DLPack producer on the
/// device (`torch.from_dlpack(frame)`), its writes complete.
#[pyclass(module = "xmem", name = "DeviceSubscriber", unsendable)]
pub struct DeviceSubscriber {
    inner: Option<xmem_device::DeviceSubscriber>,
}

#[pymethods]
impl DeviceSubscriber {
    /// Attaches to the stream's device memory (from a process that holds it) and subscribes.
    #[new]
    #[pyo3(signature = (name, *, directory = None))]
    fn new(name: &str, directory: Option<PathBuf>) -> PyResult<DeviceSubscriber> {
        let mut b = xmem_core::stream::Subscriber::builder(name);
        if let Some(d) = directory {
            b = b.directory(d);
        }
        Ok(DeviceSubscriber {
            inner: Some(xmem_device::DeviceSubscriber::open(b).map_err(device_err)?),
        })
    }

    /// The next frame, waiting at most `timeout` seconds (`None`: as long as it takes); `None`
    /// if none came. `PublisherGone` once the publisher left and every frame was received.
    #[pyo3(signature = (timeout = None))]
    fn receive(&mut self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Frame>> {
        let sub = self
            .inner
            .as_mut()
            .ok_or_else(|| PyValueError::new_err("the device subscriber was closed"))?;
        let total = wait::timeout(timeout)?;
        let got = wait::sliced(py, total, |slice| sub.receive_timeout(slice).map_err(device_err))?;
        match got {
            Some(b) => Ok(Some(device_frame(sub.device(), Frame::read(b)?)?)),
            None => Ok(None),
        }
    }

    /// Leaves the stream.
    fn close(&mut self) {
        self.inner = None;
    }
}
