//! The tensor pool's join barrier from Python: `xmem.SequenceBarrier`, `xmem.TimestampBarrier`,
//! `xmem.LatestValue` (xmem-tp-join). The caller feeds what its consumers accepted; a barrier
//! answers at once whether an output frame may be made.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use xmem_tp_join::{
    LatestValue as RsLatest, Readiness, SeqRule, SequenceBarrier as RsSeq, SequenceMap, TimeRule,
    TimestampBarrier as RsTime, TimestampMap, TimestampSource,
};

fn now_ns() -> u64 {
    xmem_core::os::time::monotonic_ns()
}

fn value_err(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn readiness<'py>(py: Python<'py>, r: Readiness) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    match r {
        Readiness::Ready { stale } => {
            d.set_item("ready", true)?;
            let stale: Vec<usize> = (0..64).filter(|i| stale & (1 << i) != 0).collect();
            d.set_item("stale", stale)?;
        }
        Readiness::Waiting { rule } => {
            d.set_item("ready", false)?;
            d.set_item("waiting_on", rule)?;
        }
        Readiness::NotApplicable => {
            d.set_item("ready", false)?;
            d.set_item("never", true)?;
        }
    }
    Ok(d)
}

/// When an output frame of several sequence-numbered inputs may be made (OFFSET: in = out +
/// offset; WINDOW n: in ∈ [out − n + 1, out]). `rules`: `[(input_stream, "offset", k) |
/// (input_stream, "window", n)]`.
#[pyclass(module = "xmem")]
pub struct SequenceBarrier(RsSeq);

#[pymethods]
impl SequenceBarrier {
    #[new]
    #[pyo3(signature = (out_stream_id, epoch, rules, *, stale_timeout=None, track_processed=false))]
    fn new(
        out_stream_id: u32,
        epoch: u64,
        rules: Vec<(u32, String, i64)>,
        stale_timeout: Option<f64>,
        track_processed: bool,
    ) -> PyResult<SequenceBarrier> {
        let rules = rules
            .into_iter()
            .map(|(input, kind, v)| match kind.as_str() {
                "offset" => i32::try_from(v)
                    .map(|v| (input, SeqRule::Offset(v)))
                    .map_err(value_err),
                "window" => u32::try_from(v)
                    .map(|v| (input, SeqRule::Window(v)))
                    .map_err(value_err),
                other => Err(PyValueError::new_err(format!(
                    "rule {other:?}: use \"offset\" or \"window\""
                ))),
            })
            .collect::<PyResult<Vec<_>>>()?;
        let stale = stale_timeout.map(|s| (s * 1e9) as u64);
        let map = SequenceMap::new(out_stream_id, epoch, stale, rules).map_err(value_err)?;
        Ok(SequenceBarrier(RsSeq::new(map, track_processed)))
    }

    /// Input `input_stream` of `epoch` accepted frame `seq`.
    fn observe(&mut self, input_stream: u32, epoch: u64, seq: u64) -> PyResult<()> {
        self.0
            .observe(input_stream, epoch, seq, now_ns())
            .map_err(value_err)
    }

    /// Input `input_stream` has processed up to `seq` (with `track_processed=True`).
    fn processed(&mut self, input_stream: u32, seq: u64) -> PyResult<()> {
        self.0.processed(input_stream, seq).map_err(value_err)
    }

    /// `{"ready": bool, ...}` for output frame `out` (`stale`: rules left out as stalled,
    /// `waiting_on`: the first rule still waiting, `never`: no such output).
    fn ready<'py>(&self, py: Python<'py>, out: u64) -> PyResult<Bound<'py, PyDict>> {
        readiness(py, self.0.ready(out, now_ns()))
    }
}

/// When an output stamped `out_time_ns` may be made from timestamped inputs (OFFSET_NS,
/// WINDOW_NS; `observed ≥ required − lateness`). `rules`: `[(input_stream, "offset_ns" |
/// "window_ns", value, "slot" | "descriptor")]`; `clock_domain` 1 (MONOTONIC) or 2.
#[pyclass(module = "xmem")]
pub struct TimestampBarrier(RsTime);

#[pymethods]
impl TimestampBarrier {
    #[new]
    #[pyo3(signature = (out_stream_id, epoch, rules, *, clock_domain=1, lateness_ns=None, stale_timeout=None))]
    fn new(
        out_stream_id: u32,
        epoch: u64,
        rules: Vec<(u32, String, i64, String)>,
        clock_domain: u8,
        lateness_ns: Option<u64>,
        stale_timeout: Option<f64>,
    ) -> PyResult<TimestampBarrier> {
        let rules = rules
            .into_iter()
            .map(|(input, kind, v, source)| {
                let source = match source.as_str() {
                    "slot" => TimestampSource::SlotHeader,
                    "descriptor" => TimestampSource::FrameDescriptor,
                    other => {
                        return Err(PyValueError::new_err(format!(
                            "source {other:?}: use \"slot\" or \"descriptor\""
                        )))
                    }
                };
                let rule = match kind.as_str() {
                    "offset_ns" => TimeRule::OffsetNs(v),
                    "window_ns" => TimeRule::WindowNs(u64::try_from(v).map_err(value_err)?),
                    other => {
                        return Err(PyValueError::new_err(format!(
                            "rule {other:?}: use \"offset_ns\" or \"window_ns\""
                        )))
                    }
                };
                Ok((input, source, rule))
            })
            .collect::<PyResult<Vec<_>>>()?;
        let stale = stale_timeout.map(|s| (s * 1e9) as u64);
        let map = TimestampMap::new(out_stream_id, epoch, stale, clock_domain, lateness_ns, rules)
            .map_err(value_err)?;
        Ok(TimestampBarrier(RsTime::new(map)))
    }

    /// Input `input_stream` of `epoch` accepted a frame stamped `timestamp_ns` (None: unstamped)
    /// in `clock_domain`.
    #[pyo3(signature = (input_stream, epoch, timestamp_ns, clock_domain=1))]
    fn observe(
        &mut self,
        input_stream: u32,
        epoch: u64,
        timestamp_ns: Option<u64>,
        clock_domain: u8,
    ) -> PyResult<()> {
        self.0
            .observe(input_stream, epoch, clock_domain, timestamp_ns, now_ns())
            .map_err(value_err)
    }

    /// `{"ready": bool, ...}` for an output stamped `out_time_ns` (output times must not go back).
    fn ready<'py>(&mut self, py: Python<'py>, out_time_ns: u64) -> PyResult<Bound<'py, PyDict>> {
        readiness(py, self.0.ready(out_time_ns, now_ns()))
    }
}

/// The latest frame of each input, once every one has one in this epoch.
#[pyclass(module = "xmem")]
pub struct LatestValue(RsLatest);

#[pymethods]
impl LatestValue {
    #[new]
    fn new(inputs: Vec<u32>, epoch: u64) -> PyResult<LatestValue> {
        if inputs.is_empty() || inputs.len() > xmem_tp_join::map::MAX_INPUTS {
            return Err(PyValueError::new_err("1 to 64 inputs"));
        }
        Ok(LatestValue(RsLatest::new(&inputs, epoch)))
    }

    /// Input `input_stream` of `epoch` accepted frame `seq`.
    fn observe(&mut self, input_stream: u32, epoch: u64, seq: u64) -> PyResult<()> {
        self.0.observe(input_stream, epoch, seq).map_err(value_err)
    }

    /// Its latest frame was overwritten before it was read: absent until the next.
    fn overwritten(&mut self, input_stream: u32) -> PyResult<()> {
        self.0.overwritten(input_stream).map_err(value_err)
    }

    /// A new epoch: every input absent.
    fn new_epoch(&mut self, epoch: u64) {
        self.0.new_epoch(epoch);
    }

    /// The latest sequence number of each input, in the order given, or None while one has none.
    fn select(&self) -> Option<Vec<u64>> {
        self.0.select().map(|v| v.iter().flatten().copied().collect())
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<SequenceBarrier>()?;
    m.add_class::<TimestampBarrier>()?;
    m.add_class::<LatestValue>()?;
    Ok(())
}
