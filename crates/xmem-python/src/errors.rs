//! One Python exception class per kind of `xmem_core::Error`, all under `xmem.XmemError`, each
//! carrying the Rust message (which says what to do).

use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::{create_exception, PyErr};
use xmem_core::Error;

create_exception!(xmem, XmemError, PyException, "Base class of every xmem error.");

macro_rules! kinds {
    ($($name:ident: $doc:literal,)*) => {
        $(create_exception!(xmem, $name, XmemError, $doc);)*

        /// Adds every exception class to the module.
        pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
            let py = m.py();
            m.add("XmemError", py.get_type::<XmemError>())?;
            $(m.add(stringify!($name), py.get_type::<$name>())?;)*
            Ok(())
        }
    };
}

kinds! {
    InvalidName: "A name that cannot name an object (empty, `/`, `..`, too long).",
    NotFound: "No object of that name exists (`xmem ls` lists what does).",
    AlreadyExists: "An object of that name exists and is in use.",
    PermissionDenied: "The object's permissions do not let this user open it.",
    NoSpace: "The shared-memory filesystem is full.",
    Corrupt: "The object is not a valid xmem object, or was damaged.",
    ConfigMismatch: "The object exists with another configuration.",
    InvalidConfig: "A configuration value is out of range.",
    NotReady: "The object is still being created.",
    PoolExhausted: "Every buffer is in use.",
    Timeout: "A wait ran out of time.",
    StaleRef: "The token names a buffer life that has ended.",
    Busy: "The buffer is being written by someone else.",
    InvalidShape: "A shape, strides or dtype that does not fit the buffer.",
    TooManyProcesses: "The pool has no free process slot.",
    WriterExists: "A segment already has a live writer.",
    WriterGone: "The segment's writer is gone.",
    PublisherExists: "A stream already has a live publisher.",
    PublisherGone: "The stream's publisher is gone and every frame was received.",
    QueueFull: "A subscriber's queue stayed full past the timeout (Block policy).",
    TooManySubscribers: "The stream has no free subscriber record.",
    OsError: "A system call failed.",
    DeviceError: "Device memory is unavailable here (no driver, no device, a build without CUDA), or a device pool's memory could not be reached.",
}

/// The Python exception for `e`.
pub(crate) fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::InvalidName { .. } => InvalidName::new_err(msg),
        Error::NotFound { .. } => NotFound::new_err(msg),
        Error::AlreadyExists { .. } => AlreadyExists::new_err(msg),
        Error::PermissionDenied { .. } | Error::ReadOnly { .. } => PermissionDenied::new_err(msg),
        Error::NoSpace { .. } => NoSpace::new_err(msg),
        Error::NotXmem { .. }
        | Error::Truncated { .. }
        | Error::VersionMismatch { .. }
        | Error::WrongKind { .. }
        | Error::Abandoned { .. }
        | Error::Corrupt { .. } => Corrupt::new_err(msg),
        Error::ConfigMismatch { .. } => ConfigMismatch::new_err(msg),
        Error::InvalidConfig(_) | Error::InvalidSize { .. } | Error::Placement { .. } => {
            InvalidConfig::new_err(msg)
        }
        Error::NotReady { .. } => NotReady::new_err(msg),
        Error::PoolExhausted { .. } => PoolExhausted::new_err(msg),
        Error::Timeout { .. } => Timeout::new_err(msg),
        Error::StaleRef { .. }
        | Error::WrongPool { .. }
        | Error::InvalidIndex { .. }
        | Error::MalformedRef(_)
        | Error::DoubleRelease { .. }
        | Error::PeerNotAttached { .. } => StaleRef::new_err(msg),
        Error::Busy { .. } | Error::Contended { .. } => Busy::new_err(msg),
        Error::InvalidShape(_)
        | Error::DTypeMismatch { .. }
        | Error::Misaligned { .. }
        | Error::NotContiguous
        | Error::MetadataTooLong { .. }
        | Error::TypeMismatch { .. }
        | Error::OutOfBounds { .. } => InvalidShape::new_err(msg),
        Error::TooManyProcesses { .. } | Error::ForeignPidNamespace { .. } => TooManyProcesses::new_err(msg),
        Error::WriterExists { .. } => WriterExists::new_err(msg),
        Error::WriterGone { .. } => WriterGone::new_err(msg),
        Error::PublisherExists { .. } => PublisherExists::new_err(msg),
        Error::PublisherGone { .. } => PublisherGone::new_err(msg),
        Error::QueueFull { .. } => QueueFull::new_err(msg),
        Error::TooManySubscribers { .. } => TooManySubscribers::new_err(msg),
        Error::DeviceStorage { .. } => DeviceError::new_err(msg),
        _ => OsError::new_err(msg),
    }
}

/// `?` for xmem results inside Python methods.
pub(crate) trait IntoPy<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for xmem_core::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
