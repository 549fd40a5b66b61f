//! `xmem.TpConsumer` and `xmem.TpProducer`: the SHM Tensor Pool over Aeron, as the C and Julia
//! implementations speak it (`xmem-tp-control`).
//!
//! A consumer's frames reach Python as numpy arrays of the validated bytes: a payload is read
//! only once its seqlock says it is whole, so it is copied out of the producer's pool (a view
//! could change under the caller). `receive(out=array)` copies into the caller's array instead
//! of a new one. Aeron's handles belong to the thread that made them: these classes are
//! `unsendable` (used from another thread they raise), and their waits hold the GIL, polling in
//! short slices that let Ctrl-C through.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyDict};
use xmem_aeron::{Client, ClientOptions, DriverOptions, DriverStatus, MediaDriver};
use xmem_tensorpool::commit::FrameSpec;
use xmem_tensorpool::layout::{Dtype, TensorHeader};
use xmem_tensorpool::paths::AllowedDirs;
use xmem_tensorpool::stream::TpProducer as RegionsProducer;
use xmem_tp_control::{
    Channels, Consumer, ConsumerOptions, Mode, Producer, ProducerOptions, State, StreamRequest,
};
use xmem_tp_driver::protocol::Grant;
use xmem_tp_driver::{DriverClient, DriverClientOptions, Role};

pyo3::create_exception!(
    xmem,
    TensorPoolError,
    crate::errors::XmemError,
    "A tensor-pool or Aeron failure (no media driver, a lost driver, regions that fail their checks)."
);

/// Adds the classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<TpConsumer>()?;
    m.add_class::<TpProducer>()?;
    m.add_class::<TpFrame>()?;
    m.add("TensorPoolError", m.py().get_type::<TensorPoolError>())?;
    Ok(())
}

fn tp_err(e: impl std::fmt::Display) -> PyErr {
    TensorPoolError::new_err(e.to_string())
}

/// The numpy dtype of a tensor-pool dtype (`None`: no numpy equivalent, given as bytes).
fn numpy_dtype(d: Dtype) -> &'static str {
    match d {
        Dtype::Uint8 | Dtype::Bytes | Dtype::Bit => "uint8",
        Dtype::Int8 => "int8",
        Dtype::Uint16 => "uint16",
        Dtype::Int16 => "int16",
        Dtype::Uint32 => "uint32",
        Dtype::Int32 => "int32",
        Dtype::Uint64 => "uint64",
        Dtype::Int64 => "int64",
        Dtype::Float32 => "float32",
        Dtype::Float64 => "float64",
        Dtype::Boolean => "bool",
    }
}

fn tp_dtype(name: &str) -> PyResult<Dtype> {
    Ok(match name {
        "uint8" | "u1" => Dtype::Uint8,
        "int8" | "i1" => Dtype::Int8,
        "uint16" | "u2" => Dtype::Uint16,
        "int16" | "i2" => Dtype::Int16,
        "uint32" | "u4" => Dtype::Uint32,
        "int32" | "i4" => Dtype::Int32,
        "uint64" | "u8" => Dtype::Uint64,
        "int64" | "i8" => Dtype::Int64,
        "float32" | "f4" => Dtype::Float32,
        "float64" | "f8" => Dtype::Float64,
        "bool" => Dtype::Boolean,
        other => {
            return Err(PyValueError::new_err(format!(
                "dtype {other:?} has no tensor-pool code"
            )))
        }
    })
}

/// The driver in `aeron_dir` (or the default), else one started in this process when allowed.
fn connect(aeron_dir: Option<PathBuf>, start_driver: bool) -> PyResult<(Client, Option<MediaDriver>)> {
    let dir = aeron_dir.unwrap_or_else(xmem_aeron::default_dir);
    let driver = if !matches!(xmem_aeron::driver_status(&dir), DriverStatus::Active { .. }) && start_driver {
        Some(
            MediaDriver::launch(&DriverOptions {
                dir: Some(dir.clone()),
                ..DriverOptions::default()
            })
            .map_err(tp_err)?,
        )
    } else {
        None
    };
    let client = Client::connect(&ClientOptions {
        dir: Some(dir),
        ..ClientOptions::default()
    })
    .map_err(tp_err)?;
    Ok((client, driver))
}

fn channels(channel: Option<String>) -> Channels {
    channel.map_or_else(Channels::default, |c| Channels::on(&c))
}

/// One accepted frame: its array and its descriptor's fields.
#[pyclass(module = "xmem", frozen)]
pub struct TpFrame {
    /// The payload as a numpy array (its dtype and shape from the frame's tensor header).
    #[pyo3(get)]
    array: Py<PyAny>,
    /// The frame's sequence number.
    #[pyo3(get)]
    seq: u64,
    /// The epoch of the regions it was read from.
    #[pyo3(get)]
    epoch: u64,
    /// Capture time (the slot's `timestampNs`).
    #[pyo3(get)]
    timestamp_ns: u64,
    /// The descriptor's publish time, if the producer set one.
    #[pyo3(get)]
    publish_timestamp_ns: Option<u64>,
    /// Version of the stream's metadata.
    #[pyo3(get)]
    meta_version: Option<u32>,
    /// Trace id (0: not traced).
    #[pyo3(get)]
    trace_id: u64,
    /// The payload pool it came from.
    #[pyo3(get)]
    pool_id: u16,
}

#[pymethods]
impl TpFrame {
    fn __repr__(&self) -> String {
        format!(
            "TpFrame(seq={}, epoch={}, pool_id={})",
            self.seq, self.epoch, self.pool_id
        )
    }
}

/// A tensor-pool consumer: finds its stream by announces over Aeron, maps it, follows its
/// descriptors, validates each frame.
#[pyclass(module = "xmem", unsendable)]
pub struct TpConsumer {
    inner: Option<Consumer>,
    /// Attached through a tensor-pool driver: the lease, and its stream and client id.
    lease: Option<(DriverClient, u32, u32)>,
    _client: Client,
    _driver: Option<MediaDriver>,
}

/// A client of the tensor-pool driver on `channels`' control and announce streams.
fn driver_client(client: &Client, channels: &Channels, announce_period: Duration) -> PyResult<DriverClient> {
    DriverClient::new(
        client,
        DriverClientOptions {
            control: channels.control.clone(),
            announce: channels.announce.clone(),
            announce_period,
            ..DriverClientOptions::default()
        },
    )
    .map_err(tp_err)
}

/// Attaches through the driver; a refusal or no answer is a TensorPoolError saying which.
fn attach(dc: &mut DriverClient, stream_id: u32, role: Role, client_id: u32) -> PyResult<Grant> {
    dc.attach(stream_id, role, client_id)
        .map(|a| a.grant.clone())
        .map_err(|e| TensorPoolError::new_err(e.to_string()))
}

#[pymethods]
impl TpConsumer {
    /// A consumer of `stream_id`. `aeron_dir`: the media driver's directory (default
    /// `AERON_DIR` or `/dev/shm/aeron-<user>`); with no driver there one is started in this
    /// process unless `start_driver=False`. `base`: the directory whose regions it may map.
    #[new]
    #[pyo3(signature = (stream_id, *, aeron_dir=None, base="/dev/shm".into(), channel=None, consumer_id=0,
                        announce_period=1.0, own_stream=None, rate=None, start_driver=true, attach=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        stream_id: u32,
        aeron_dir: Option<PathBuf>,
        base: PathBuf,
        channel: Option<String>,
        consumer_id: u32,
        announce_period: f64,
        own_stream: Option<u32>,
        rate: Option<u32>,
        start_driver: bool,
        attach: bool,
    ) -> PyResult<TpConsumer> {
        let (client, driver) = connect(aeron_dir, start_driver)?;
        let channels = channels(channel);
        let mut opts = ConsumerOptions::new(stream_id, AllowedDirs::new([&base]).map_err(tp_err)?);
        opts.consumer_id = consumer_id;
        opts.announce_period = Duration::from_secs_f64(announce_period);
        opts.descriptor_stream = own_stream.map(|id| StreamRequest {
            channel: channels.descriptor.channel.clone(),
            stream_id: id,
        });
        if let Some(rate) = rate {
            opts.mode = Mode::RateLimited;
            opts.max_rate_hz = rate;
        }
        let period = opts.announce_period;
        let lease = if attach {
            let mut dc = driver_client(&client, &channels, period)?;
            let grant = self::attach(&mut dc, stream_id, Role::Consumer, consumer_id)?;
            Some((dc, grant))
        } else {
            None
        };
        opts.channels = channels;
        let consumer_id = opts.consumer_id;
        let mut inner = Consumer::new(&client, opts).map_err(tp_err)?;
        let lease = match lease {
            Some((dc, grant)) => {
                inner.adopt(&grant.announce).map_err(tp_err)?;
                Some((dc, stream_id, consumer_id))
            }
            None => None,
        };
        Ok(TpConsumer {
            inner: Some(inner),
            lease,
            _client: client,
            _driver: driver,
        })
    }

    /// The next accepted frame, or `None` after `timeout` seconds (`None`: wait until one
    /// comes). With `out`, the payload is copied into that array (C-contiguous, exactly the
    /// frame's size in bytes) and the frame's `array` is `out` itself.
    #[pyo3(signature = (timeout=None, out=None))]
    fn receive(
        &mut self,
        py: Python<'_>,
        timeout: Option<f64>,
        out: Option<Py<PyAny>>,
    ) -> PyResult<Option<TpFrame>> {
        let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
        let mut last_check = Instant::now();
        loop {
            self.keep_lease()?;
            let c = self.consumer()?;
            let mut got: Option<(
                xmem_tensorpool::codec::FrameDescriptor,
                xmem_tensorpool::commit::Accepted,
                Vec<u8>,
            )> = None;
            let work = c
                .poll(1, |f| {
                    if got.is_none() {
                        got = Some((*f.descriptor, f.accepted.clone(), f.bytes.to_vec()));
                    }
                })
                .map_err(tp_err)?;
            if let Some((d, a, bytes)) = got {
                let np = py.import("numpy")?;
                let dims: Vec<usize> = a.tensor.dims().iter().map(|&d| d as usize).collect();
                let array = match out {
                    Some(out) => {
                        let view = np.call_method1("asarray", (out.bind(py),))?;
                        let nbytes: usize = view.getattr("nbytes")?.extract()?;
                        let contiguous: bool = view.getattr("flags")?.getattr("c_contiguous")?.extract()?;
                        if nbytes != bytes.len() || !contiguous {
                            return Err(PyValueError::new_err(format!(
                                "out must be a C-contiguous array of {} bytes (the frame's), not {nbytes}",
                                bytes.len()
                            )));
                        }
                        let src = np.call_method1(
                            "frombuffer",
                            (PyByteArray::new(py, &bytes), view.getattr("dtype")?),
                        )?;
                        np.call_method1(
                            "copyto",
                            (&view, src.call_method1("reshape", (view.getattr("shape")?,))?),
                        )?;
                        out
                    }
                    None => {
                        let flat = np.call_method1(
                            "frombuffer",
                            (PyByteArray::new(py, &bytes), numpy_dtype(a.tensor.dtype)),
                        )?;
                        flat.call_method1("reshape", (dims,))?.unbind()
                    }
                };
                return Ok(Some(TpFrame {
                    array,
                    seq: a.seq,
                    epoch: d.epoch,
                    timestamp_ns: a.slot.timestamp_ns,
                    publish_timestamp_ns: d.timestamp_ns,
                    meta_version: d.meta_version,
                    trace_id: d.trace_id,
                    pool_id: a.slot.pool_id,
                }));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            if last_check.elapsed() > Duration::from_millis(20) {
                py.check_signals()?;
                last_check = Instant::now();
            }
            if work == 0 {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
    }

    /// "unmapped", "mapped" or "fallback".
    #[getter]
    fn state(&mut self) -> PyResult<&'static str> {
        Ok(match self.consumer()?.state() {
            State::Unmapped => "unmapped",
            State::Mapped { .. } => "mapped",
            State::Fallback { .. } => "fallback",
        })
    }

    /// The consumer id it announces in its hellos and QoS.
    #[getter]
    fn consumer_id(&mut self) -> PyResult<u32> {
        Ok(self.consumer()?.consumer_id())
    }

    /// Counters: accepted frames and drops by reason, announces, maps and unmaps.
    #[getter]
    fn stats<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.consumer()?.stats();
        let d = PyDict::new(py);
        for (k, v) in [
            ("accepted", s.accepted),
            ("drops_gap", s.drops_gap),
            ("drops_late", s.drops_late),
            ("drops_invalid", s.drops_invalid),
            ("drops_epoch", s.drops_epoch),
            ("drops_unmapped", s.drops_unmapped),
            ("announces", s.announces),
            ("maps", s.maps),
            ("unmaps_announce", s.unmaps_announce),
            ("unmaps_activity", s.unmaps_activity),
        ] {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    /// Unmaps and closes its Aeron publications and subscriptions.
    fn close(&mut self) {
        self.inner = None;
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&mut self, _a: Py<PyAny>, _b: Py<PyAny>, _c: Py<PyAny>) {
        self.close();
    }
}

impl TpConsumer {
    /// Keeps the driver lease (keepalives), and after a revoke, the driver's shutdown or its
    /// silence unmaps and attaches again.
    fn keep_lease(&mut self) -> PyResult<()> {
        let Some((dc, stream_id, client_id)) = &mut self.lease else {
            return Ok(());
        };
        let lost = dc
            .poll()
            .map_err(tp_err)?
            .iter()
            .any(xmem_tp_driver::Event::ends_lease);
        if lost {
            let c = self
                .inner
                .as_mut()
                .ok_or_else(|| PyRuntimeError::new_err("the consumer is closed"))?;
            c.drop_mapping();
            let grant = attach(dc, *stream_id, Role::Consumer, *client_id)?;
            c.adopt(&grant.announce).map_err(tp_err)?;
        }
        Ok(())
    }

    fn consumer(&mut self) -> PyResult<&mut Consumer> {
        self.inner
            .as_mut()
            .ok_or_else(|| PyRuntimeError::new_err("the consumer is closed"))
    }
}

/// A tensor-pool producer: its regions in shared memory, announces and descriptors over Aeron.
#[pyclass(module = "xmem", unsendable)]
pub struct TpProducer {
    inner: Option<Producer>,
    /// Attached through a tensor-pool driver: the lease, its stream, the allowed base.
    lease: Option<(DriverClient, u32, AllowedDirs)>,
    spec: FrameSpec,
    _client: Client,
    _driver: Option<MediaDriver>,
}

#[pymethods]
impl TpProducer {
    /// A producer of `stream_id` whose frames are `shape` arrays of `dtype`.
    #[new]
    #[pyo3(signature = (stream_id, shape, dtype="uint8", *, aeron_dir=None, base="/dev/shm".into(), channel=None,
                        nslots=None, announce_period=1.0, start_driver=true, attach=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        stream_id: u32,
        shape: Vec<i32>,
        dtype: &str,
        aeron_dir: Option<PathBuf>,
        base: PathBuf,
        channel: Option<String>,
        nslots: Option<u32>,
        announce_period: f64,
        start_driver: bool,
        attach: bool,
    ) -> PyResult<TpProducer> {
        let dtype = tp_dtype(dtype)?;
        let tensor = TensorHeader::row_major(dtype, &shape);
        let t = tensor.validate().map_err(tp_err)?;
        let len =
            u32::try_from(t.extent).map_err(|_| PyValueError::new_err("a frame must be under 4 GiB"))?;
        let stride = len
            .max(64)
            .checked_next_power_of_two()
            .ok_or_else(|| PyValueError::new_err("a frame must be under 2 GiB"))?;
        let (client, driver) = connect(aeron_dir, start_driver)?;
        let channels = channels(channel);
        let period = Duration::from_secs_f64(announce_period);
        let options = ProducerOptions {
            channels: channels.clone(),
            announce_period: period,
            ..ProducerOptions::default()
        };
        if attach && nslots.is_some() {
            return Err(PyValueError::new_err(
                "nslots is the driver's to choose when attaching (its profile's header_nslots); leave it out",
            ));
        }
        let (inner, lease) = if attach {
            // The driver's profile sets the slots and strides; the regions are its.
            let mut dc = driver_client(&client, &channels, period)?;
            let grant = self::attach(&mut dc, stream_id, Role::Producer, 0)?;
            let largest = grant
                .announce
                .pools
                .iter()
                .map(|p| p.stride_bytes)
                .max()
                .unwrap_or(0);
            if len > largest {
                return Err(PyValueError::new_err(format!(
                    "a frame of this shape is {len} bytes, but the driver's pools hold at most {largest}"
                )));
            }
            let allowed = AllowedDirs::new([&base]).map_err(tp_err)?;
            let regions = RegionsProducer::attach(&grant.announce, &allowed).map_err(tp_err)?;
            let p = Producer::driven(&client, regions, options).map_err(tp_err)?;
            (p, Some((dc, stream_id, allowed)))
        } else {
            let regions = RegionsProducer::builder(stream_id)
                .base_dir(&base)
                .nslots(nslots.unwrap_or(8))
                .pool(1, stride)
                .create()
                .map_err(tp_err)?;
            (Producer::new(&client, regions, options).map_err(tp_err)?, None)
        };
        Ok(TpProducer {
            inner: Some(inner),
            lease,
            spec: FrameSpec {
                tensor,
                values_len: len,
                timestamp_ns: 0,
                meta_version: 0,
            },
            _client: client,
            _driver: driver,
        })
    }

    /// Copies `array` (its bytes, which must be the frame's size) into the next slot, commits
    /// it and sends its descriptor. Returns the frame's sequence number.
    #[pyo3(signature = (array, trace_id=0))]
    fn publish(&mut self, py: Python<'_>, array: &Bound<'_, PyAny>, trace_id: u64) -> PyResult<u64> {
        let np = py.import("numpy")?;
        let bytes: Vec<u8> = np
            .call_method1("ascontiguousarray", (array,))?
            .call_method0("tobytes")?
            .extract()?;
        if bytes.len() != self.spec.values_len as usize {
            return Err(PyValueError::new_err(format!(
                "the array has {} bytes; this stream's frames have {}",
                bytes.len(),
                self.spec.values_len
            )));
        }
        self.keep_lease()?;
        let mut spec = self.spec;
        spec.timestamp_ns = xmem_core::os::time::monotonic_ns();
        let p = self.producer()?;
        let d = p
            .publish(&spec, trace_id, |b| b.copy_from_slice(&bytes))
            .map_err(tp_err)?
            .ok_or_else(|| PyValueError::new_err("the frame does not fit the stream's pool"))?;
        Ok(d.seq)
    }

    /// Announces and answers consumers when due (and keeps a driver lease): call it between
    /// frames when publishing slowly.
    fn poll(&mut self) -> PyResult<usize> {
        self.keep_lease()?;
        self.producer()?.poll().map_err(tp_err)
    }

    /// The stream's current epoch.
    #[getter]
    fn epoch(&mut self) -> PyResult<u64> {
        Ok(self.producer()?.regions().announce().epoch)
    }

    /// Counters: frames, descriptors by outcome, announces, consumers seen.
    #[getter]
    fn stats<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.producer()?.stats();
        let d = PyDict::new(py);
        for (k, v) in [
            ("frames", s.frames),
            ("descriptors", s.descriptors),
            ("not_connected", s.not_connected),
            ("back_pressured", s.back_pressured),
            ("announces", s.announces),
            ("consumers", s.consumers as u64),
        ] {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    /// Stops: its regions are removed.
    fn close(&mut self) {
        self.inner = None;
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(&mut self, _a: Py<PyAny>, _b: Py<PyAny>, _c: Py<PyAny>) {
        self.close();
    }
}

impl TpProducer {
    /// Keeps the driver lease; after losing it, attaches again and writes the new epoch's
    /// regions from the next frame on.
    fn keep_lease(&mut self) -> PyResult<()> {
        let Some((dc, stream_id, allowed)) = &mut self.lease else {
            return Ok(());
        };
        let lost = dc
            .poll()
            .map_err(tp_err)?
            .iter()
            .any(xmem_tp_driver::Event::ends_lease);
        if lost {
            let grant = attach(dc, *stream_id, Role::Producer, 0)?;
            let regions = RegionsProducer::attach(&grant.announce, allowed).map_err(tp_err)?;
            let p = self
                .inner
                .as_mut()
                .ok_or_else(|| PyRuntimeError::new_err("the producer is closed"))?;
            p.replace_regions(regions);
        }
        Ok(())
    }

    fn producer(&mut self) -> PyResult<&mut Producer> {
        self.inner
            .as_mut()
            .ok_or_else(|| PyRuntimeError::new_err("the producer is closed"))
    }
}
