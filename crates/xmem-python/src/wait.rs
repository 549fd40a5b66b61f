//! Blocking waits from Python: the GIL is released while waiting, and the wait is cut into
//! short slices so that Ctrl-C (a pending signal) interrupts it with `KeyboardInterrupt`.

use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// The longest a wait runs without looking at pending signals.
const SLICE: Duration = Duration::from_millis(50);

/// Converts a Python timeout in seconds (`None`: forever).
pub fn timeout(seconds: Option<f64>) -> PyResult<Option<Duration>> {
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
pub fn sliced<T, F>(py: Python<'_>, total: Option<Duration>, mut attempt: F) -> PyResult<Option<T>>
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
