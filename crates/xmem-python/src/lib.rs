//! The `xmem` Python module (`xmem._xmem`, re-exported by `python/xmem/__init__.py`): pools,
//! frames, streams and segments, with numpy (buffer protocol) and DLPack views that never copy.
//!
//! Every Python class wraps the Rust type of the same name in `xmem-core`; blocking calls
//! release the GIL (`wait.rs`), errors map to one exception class per kind (`errors.rs`).

mod device;
mod dlpack;
// create_exception! declares its classes `pub`; they are reached through `register`.
#[allow(unreachable_pub)]
mod errors;
mod frame;
mod join;
mod pool;
mod segment;
mod stream;
mod tensorpool;
mod wait;

use pyo3::prelude::*;

#[pymodule]
fn _xmem(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<frame::Frame>()?;
    m.add_class::<pool::Pool>()?;
    m.add_class::<device::DevicePool>()?;
    m.add_class::<device::DevicePublisher>()?;
    m.add_class::<device::DeviceSubscriber>()?;
    m.add("CUDA_BUILT", cfg!(feature = "cuda"))?;
    m.add_class::<stream::Publisher>()?;
    m.add_class::<stream::Subscriber>()?;
    m.add_class::<segment::SegmentWriter>()?;
    m.add_class::<segment::SegmentReader>()?;
    m.add(
        "DTYPES",
        xmem_core::DType::ALL.iter().map(|d| d.name()).collect::<Vec<_>>(),
    )?;
    errors::register(m)?;
    tensorpool::register(m)?;
    join::register(m)?;
    Ok(())
}
