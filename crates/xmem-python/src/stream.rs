//! `xmem.Publisher` and `xmem.Subscriber`.

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use xmem_core::stream::{self, Policy};
use xmem_core::{DType, TensorDesc};

use crate::errors::{to_py, IntoPy};
use crate::frame::{parse_dtype, Frame};
use crate::wait;

/// Publishes frames to every subscriber of stream `name`, in place: `loan()` a numpy array (or a
/// frame), fill it, `publish()`. Policies: `"drop_oldest"` (default: a slow subscriber loses its
/// oldest queued frame), `"block"` (reliable: wait up to `timeout` s for room), `"latest"`.
#[pyclass(module = "xmem", name = "Publisher")]
pub struct Publisher {
    inner: Option<stream::Publisher>,
    /// The frame loaned by `loan()` and not yet published, and the array given out for it.
    pending: Option<(Py<Frame>, Option<Py<PyAny>>)>,
}

impl Publisher {
    fn publisher(&mut self) -> PyResult<&mut stream::Publisher> {
        self.inner
            .as_mut()
            .ok_or_else(|| PyValueError::new_err("the publisher was closed"))
    }

    fn loan_frame_inner(&mut self, py: Python<'_>, desc: Option<TensorDesc>) -> PyResult<Py<Frame>> {
        let publisher = self.publisher()?;
        let mut b = py.detach(|| publisher.loan()).py_err()?;
        if let Some(desc) = desc {
            b.set_tensor(&desc).py_err()?;
        }
        Py::new(py, Frame::write(b)?)
    }

    fn publish_frame(&mut self, py: Python<'_>, frame: &Py<Frame>) -> PyResult<u64> {
        let b = frame.borrow_mut(py).take_writable()?;
        let publisher = self.publisher()?;
        match py.detach(|| publisher.publish_and_keep(b)) {
            Ok((seq, kept)) => {
                frame.borrow_mut(py).become_read(kept);
                Ok(seq)
            }
            Err(e) => {
                // Not published: the frame stays writable in the caller's hands, to publish again.
                let (error, b) = e.into_parts();
                frame.borrow_mut(py).restore_writable(b);
                Err(to_py(error))
            }
        }
    }
}

pub(crate) fn parse_policy(word: &str, timeout: f64) -> PyResult<Policy> {
    match word {
        "drop_oldest" | "drop-oldest" => Ok(Policy::DropOldest),
        "latest" => Ok(Policy::Latest),
        "block" => Ok(Policy::Block {
            timeout: wait::timeout(Some(timeout))?.unwrap_or_default(),
        }),
        other => Err(PyValueError::new_err(format!(
            "unknown policy {other:?}: use \"drop_oldest\", \"block\" or \"latest\""
        ))),
    }
}

pub(crate) fn tensor(shape: Vec<u64>, dtype: Option<&Bound<'_, PyAny>>) -> PyResult<TensorDesc> {
    let dtype = match dtype {
        Some(d) => parse_dtype(d)?,
        None => DType::U8,
    };
    TensorDesc::contiguous(dtype, &shape).py_err()
}

#[pymethods]
impl Publisher {
    /// Creates stream `name` (and its pool `name.pool`) and becomes its publisher. `spin` is how
    /// long (seconds) a publisher waiting for a buffer or for room polls before it sleeps.
    #[new]
    #[pyo3(signature = (name, *, buffer_size, buffers = 8, depth = 4, history = 0, policy = "drop_oldest", timeout = 5.0, max_subscribers = 8, alignment = 64, mode = 0o600, spin = None, directory = None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: &str,
        buffer_size: u64,
        buffers: u32,
        depth: u32,
        history: u32,
        policy: &str,
        timeout: f64,
        max_subscribers: u32,
        alignment: u32,
        mode: u32,
        spin: Option<f64>,
        directory: Option<PathBuf>,
    ) -> PyResult<Publisher> {
        let mut b = stream::Publisher::builder(name)
            .buffer_size(buffer_size)
            .buffers(buffers)
            .history(history)
            .policy(parse_policy(policy, timeout)?)
            .max_subscribers(max_subscribers)
            .alignment(alignment)
            .mode(mode);
        if policy != "latest" {
            b = b.depth(depth);
        }
        if let Some(spin) = wait::timeout(spin)? {
            b = b.spin(spin);
        }
        if let Some(d) = directory {
            b = b.directory(d);
        }
        Ok(Publisher {
            inner: Some(b.create().py_err()?),
            pending: None,
        })
    }

    /// A writable numpy array of `shape` and `dtype` over a free buffer: fill it, then call
    /// `publish()`. After publishing, the array is made read-only (subscribers are reading it).
    #[pyo3(signature = (shape, dtype = None))]
    fn loan(
        &mut self,
        py: Python<'_>,
        shape: Vec<u64>,
        dtype: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let desc = tensor(shape, dtype)?;
        self.pending = None; // a frame loaned and never published goes back when its views go
        let frame = self.loan_frame_inner(py, Some(desc))?;
        let array = py
            .import("numpy")?
            .call_method1("asarray", (frame.clone_ref(py),))?
            .unbind();
        self.pending = Some((frame, Some(array.clone_ref(py))));
        Ok(array)
    }

    /// A writable frame (raw bytes, or `shape`/`dtype` if given), to publish with
    /// `publish(frame)`.
    #[pyo3(signature = (shape = None, dtype = None))]
    fn loan_frame(
        &mut self,
        py: Python<'_>,
        shape: Option<Vec<u64>>,
        dtype: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<Frame>> {
        let desc = shape.map(|s| tensor(s, dtype)).transpose()?;
        self.loan_frame_inner(py, desc)
    }

    /// Publishes `frame`, or else the array last given by `loan()`. Returns its sequence
    /// number. The frame stays usable, read-only, as what was published. If the publish fails
    /// (`QueueFull`), nothing was published and the frame or loaned array stays writable: call
    /// `publish()` again.
    #[pyo3(signature = (frame = None))]
    fn publish(&mut self, py: Python<'_>, frame: Option<Py<Frame>>) -> PyResult<u64> {
        let loaned = frame.is_none();
        let (frame, array) = match frame {
            Some(f) => (f, None),
            None => self.pending.take().ok_or_else(|| {
                PyValueError::new_err("nothing to publish: call loan() first, or pass a frame")
            })?,
        };
        let seq = match self.publish_frame(py, &frame) {
            Ok(seq) => seq,
            Err(e) => {
                if loaned {
                    self.pending = Some((frame, array));
                }
                return Err(e);
            }
        };
        if let Some(a) = array {
            // Subscribers read it now: writing through this array would race them.
            a.bind(py).getattr("flags")?.setattr("writeable", false)?;
        }
        Ok(seq)
    }

    /// Copies `array` once into a free buffer and publishes it (its shape and dtype too).
    fn publish_array(&mut self, py: Python<'_>, array: &Bound<'_, PyAny>) -> PyResult<u64> {
        let np = py.import("numpy")?;
        let shape: Vec<u64> = array.getattr("shape")?.extract()?;
        let dtype = array.getattr("dtype")?;
        let frame = self.loan_frame_inner(py, Some(tensor(shape, Some(&dtype))?))?;
        {
            let view = np.call_method1("asarray", (frame.clone_ref(py),))?;
            np.call_method1("copyto", (&view, array))?;
        }
        self.publish_frame(py, &frame)
    }

    /// The stream's name.
    #[getter]
    fn name(&mut self) -> PyResult<String> {
        Ok(self.publisher()?.name().to_string())
    }

    /// Subscribers that receive the next frame.
    #[getter]
    fn subscriber_count(&mut self) -> PyResult<usize> {
        Ok(self.publisher()?.subscriber_count())
    }

    /// Frames published so far.
    #[getter]
    fn published(&mut self) -> PyResult<u64> {
        Ok(self.publisher()?.published())
    }

    /// Free buffers in the stream's pool.
    #[getter]
    fn free_count(&mut self) -> PyResult<u32> {
        Ok(self.publisher()?.pool().free_count())
    }

    /// Ends the stream: subscribers drain what was published, then get `PublisherGone`.
    fn close(&mut self) {
        self.pending = None;
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

/// Receives the frames of stream `name`: `receive()`, or `for frame in subscriber:` until the
/// publisher is gone. Each frame is a read-only view of the publisher's memory.
#[pyclass(module = "xmem", name = "Subscriber")]
pub struct Subscriber {
    inner: Option<stream::Subscriber>,
}

impl Subscriber {
    fn subscriber(&mut self) -> PyResult<&mut stream::Subscriber> {
        self.inner
            .as_mut()
            .ok_or_else(|| PyValueError::new_err("the subscriber was closed"))
    }

    fn receive_inner(&mut self, py: Python<'_>, timeout: Option<Duration>) -> PyResult<Option<Frame>> {
        let sub = self.subscriber()?;
        let got = wait::sliced(py, timeout, |slice| {
            let mut rehearsal = wait::Rehearsal::default();
            let got = sub.receive_timeout_with(slice, &mut || rehearsal.run());
            rehearsal.outcome(got)
        })?;
        got.map(Frame::read).transpose()
    }
}

#[pymethods]
impl Subscriber {
    /// Joins stream `name` (late joiners first get its history). With `notify=True`,
    /// `fileno()` gives a descriptor that becomes readable when a frame arrives. `spin` is how
    /// long (seconds) `receive()` polls before it sleeps: longer costs CPU, saves the wake-up.
    /// While it polls, it takes the GIL for a moment every 100 µs, to look for Ctrl-C and to
    /// keep the hand-over of a frame to Python in cache (not while another thread runs Python).
    /// `wake_ahead` (seconds, for frames at a steady rate): `receive()` learns the interval,
    /// sleeps until that long before the next frame is due and polls from then on, so frames
    /// are seen as they come at the cost of polling about twice that long per frame.
    #[new]
    #[pyo3(signature = (name, *, notify = false, spin = None, wake_ahead = None, directory = None))]
    fn new(
        name: &str,
        notify: bool,
        spin: Option<f64>,
        wake_ahead: Option<f64>,
        directory: Option<PathBuf>,
    ) -> PyResult<Subscriber> {
        let mut b = stream::Subscriber::builder(name).notify_fd(notify);
        if let Some(spin) = wait::timeout(spin)? {
            b = b.spin(spin);
        }
        if let Some(lead) = wait::timeout(wake_ahead)? {
            b = b.wake_ahead(lead);
        }
        if let Some(d) = directory {
            b = b.directory(d);
        }
        Ok(Subscriber {
            inner: Some(b.open().py_err()?),
        })
    }

    /// The next frame, waiting at most `timeout` seconds (`None`: until one comes). Returns
    /// `None` on timeout; raises `PublisherGone` once the publisher is gone and every frame was
    /// received. The GIL is released while waiting; Ctrl-C interrupts.
    #[pyo3(signature = (timeout = None))]
    fn receive(&mut self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<Frame>> {
        let t = wait::timeout(timeout)?;
        self.receive_inner(py, t)
    }

    /// The next frame if one is queued, else `None` (never waits).
    fn try_receive(&mut self) -> PyResult<Option<Frame>> {
        self.subscriber()?
            .try_receive()
            .py_err()?
            .map(Frame::read)
            .transpose()
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    /// Frames until the publisher is gone.
    fn __next__(&mut self, py: Python<'_>) -> PyResult<Option<Frame>> {
        match self.receive_inner(py, None) {
            Ok(f) => Ok(f),
            Err(e) if e.is_instance_of::<crate::errors::PublisherGone>(py) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The notification descriptor (subscribers made with `notify=True`).
    fn fileno(&mut self) -> PyResult<i32> {
        self.subscriber()?
            .notify_fd()
            .map(|fd| fd.as_raw_fd())
            .ok_or_else(|| PyValueError::new_err("open the subscriber with notify=True for a descriptor"))
    }

    /// Frames received so far.
    #[getter]
    fn received(&mut self) -> PyResult<u64> {
        Ok(self.subscriber()?.received())
    }

    /// Times the publisher had to wake this subscriber from sleep (each costs the publisher a
    /// system call and the frame a wake-up); `wake_ahead` keeps it low for steady streams.
    #[getter]
    fn wakeups(&mut self) -> PyResult<u64> {
        Ok(self.subscriber()?.wakeups())
    }

    /// Frames dropped from this subscriber's queue to make room (`drop_oldest`, `latest`).
    #[getter]
    fn dropped(&mut self) -> PyResult<u64> {
        Ok(self.subscriber()?.dropped())
    }

    /// Leaves the stream (frames still held stay valid until they go).
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
