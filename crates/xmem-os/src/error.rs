//! The operating-system layer's own error: what a system call or a mapping check said, with the
//! path it was about. `xmem_core::Error` takes it in (`From`) with the advice the layers above add.

use std::io;
use std::path::PathBuf;

/// Result alias of the OS layer.
pub type Result<T, E = OsError> = std::result::Result<T, E>;

/// What went wrong in a system call or a mapping check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OsError {
    /// The file system is full.
    #[error("not enough space in {} for {needed} bytes", dir.display())]
    NoSpace {
        /// The directory that is full.
        dir: PathBuf,
        /// Bytes requested.
        needed: u64,
    },
    /// A file that is not a plain shared-memory file (a symlink, a directory, another kind).
    #[error("{} is not a shared-memory file ({detail})", path.display())]
    NotXmem {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        detail: String,
    },
    /// A mapping or an access into one that cannot be right (a size of 0, out of range).
    #[error("{}: {detail}", path.display())]
    Corrupt {
        /// The mapped file.
        path: PathBuf,
        /// What does not fit.
        detail: String,
    },
    /// A system call failed.
    #[error("{op} {} failed: {source}", path.display())]
    Os {
        /// What was being attempted.
        op: &'static str,
        /// The object's path (empty if none).
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl OsError {
    /// `op` on `path` failed with `err`.
    pub fn os(op: &'static str, path: impl Into<PathBuf>, err: impl Into<io::Error>) -> OsError {
        OsError::Os {
            op,
            path: path.into(),
            source: err.into(),
        }
    }
}
