//! Blocking waits from Python: the GIL is released while waiting, and the wait is cut into
//! short slices so that Ctrl-C (a pending signal) interrupts it with `KeyboardInterrupt`. A
//! receive that polls also rehearses the hand-over of a frame to Python ([`Rehearsal`]).

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::errors::to_py;
use crate::frame::Frame;

/// The longest a wait runs without looking at pending signals.
const SLICE: Duration = Duration::from_millis(50);

/// Converts a Python timeout in seconds (`None`: forever).
pub(crate) fn timeout(seconds: Option<f64>) -> PyResult<Option<Duration>> {
    match seconds {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(PyValueError::new_err(format!(
            "a time in seconds must be a number ≥ 0 or None (timeout, spin, wake_ahead), not {s}"
        ))),
    }
}

/// Calls `attempt(slice)` with the GIL released until it returns `Some`, the timeout passes
/// (then `Ok(None)`), or a signal handler raises.
pub(crate) fn sliced<T, F>(py: Python<'_>, total: Option<Duration>, mut attempt: F) -> PyResult<Option<T>>
where
    F: FnMut(Duration) -> PyResult<Option<T>> + Send,
    T: Send,
{
    let deadline = total.map(|t| Instant::now() + t);
    loop {
        let slice = match deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(SLICE),
            None => SLICE,
        };
        if let Some(v) = py.detach(|| attempt(slice))? {
            return Ok(Some(v));
        }
        py.check_signals()?;
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(None);
        }
    }
}

/// Longer than taking a free GIL with cold caches (~10 µs here): another thread was running
/// Python.
const GIL_CONTENDED: Duration = Duration::from_micros(50);

/// What a receive does while it polls with the GIL released (every
/// `xmem_core::stream::POLL_HOOK_EVERY`): take the GIL, look for signals, make and drop a frame
/// object, as handing a received frame to Python will. On a busy host, code and data untouched
/// for a millisecond are out of cache: a frame that came after a long poll found this path cold,
/// ~15 µs of misses before Python had it (taking the GIL alone ~7 µs).
///
/// Stops rehearsing (for the rest of this receive) once taking the GIL had to wait: another
/// thread runs Python, and the frame will wait for the GIL anyway.
#[derive(Default)]
pub(crate) struct Rehearsal {
    interrupted: Option<PyErr>,
    contended: bool,
}

impl Rehearsal {
    pub(crate) fn run(&mut self) -> ControlFlow<()> {
        if self.contended {
            return ControlFlow::Continue(());
        }
        let asked = Instant::now();
        Python::attach(|py| {
            self.contended = asked.elapsed() > GIL_CONTENDED;
            if let Err(e) = py.check_signals() {
                self.interrupted = Some(e);
                return ControlFlow::Break(());
            }
            drop(Py::new(py, Frame::placeholder()));
            ControlFlow::Continue(())
        })
    }

    /// The receive's result, or the exception a signal handler raised during it.
    pub(crate) fn outcome<T>(self, got: xmem_core::Result<T>) -> PyResult<T> {
        match self.interrupted {
            Some(e) => Err(e),
            None => got.map_err(to_py),
        }
    }
}
