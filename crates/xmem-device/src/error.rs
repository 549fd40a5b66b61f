//! What can go wrong with a device pool, each saying what to do.

use xmem_core::DeviceKind;

/// Result alias of this crate.
pub type Result<T, E = DeviceError> = std::result::Result<T, E>;

/// A device pool's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The pool itself (its file, its holders) failed.
    #[error(transparent)]
    Pool(#[from] xmem_core::Error),
    /// The pool keeps its buffers in host memory.
    #[error("pool {pool} keeps its buffers in host memory: open it with BufferPool::open")]
    NotADevicePool {
        /// The pool's name.
        pool: String,
    },
    /// The pool's allocation is on another kind of memory or another device than the backend
    /// it was opened with.
    #[error("pool {pool} is on {want}, not on this backend's {have}: open it with DevicePool::open_auto, or a backend for that device")]
    WrongDevice {
        /// The pool's name.
        pool: String,
        /// Its device.
        want: String,
        /// The backend's.
        have: String,
    },
    /// No device memory of this kind can be used here (no driver, no device, a build without
    /// the feature).
    #[error("{kind} device memory is unavailable: {reason}")]
    Unavailable {
        /// The kind asked for.
        kind: DeviceKind,
        /// Why.
        reason: String,
    },
    /// A device name that is none of `cuda`, `cuda:N`, `host`.
    #[error("device {given:?}: use \"cuda\", \"cuda:N\" (N = 0, 1, …) or \"host\"")]
    UnknownDevice {
        /// What was given.
        given: String,
    },
    /// No attached process handed over the allocation's descriptor.
    #[error("pool {pool}: no attached process handed over its device memory ({tried}); if its holders are being killed, open again")]
    NoHolderAnswered {
        /// The pool's name.
        pool: String,
        /// Whom it asked and what each said.
        tried: String,
    },
    /// Every process that held the pool's device memory has exited: the memory went with the
    /// last of them, and the pool's bookkeeping outlived it.
    #[error("pool {pool}: every holder of its device memory has exited, so the memory is gone; remove the pool (xmem clean) and create it again")]
    MemoryGone {
        /// The pool's name.
        pool: String,
    },
    /// The device (or the stand-in's mapping) refused an operation.
    #[error("{op}: {detail}")]
    Backend {
        /// What was attempted.
        op: &'static str,
        /// What the device said.
        detail: String,
    },
    /// A copy outside the buffer.
    #[error("{len} bytes at offset {offset} do not fit a buffer of {size} bytes")]
    OutOfRange {
        /// Offset asked, in the buffer.
        offset: u64,
        /// Length asked.
        len: u64,
        /// The buffer's size.
        size: u64,
    },
}

impl DeviceError {
    /// Whether the same call can succeed later without a change (the pool's own retryable
    /// conditions, or holders that may start answering).
    pub fn is_retryable(&self) -> bool {
        match self {
            DeviceError::Pool(e) => e.is_retryable(),
            DeviceError::NoHolderAnswered { .. } => true,
            _ => false,
        }
    }
}
