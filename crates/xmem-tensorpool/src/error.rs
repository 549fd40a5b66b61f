//! Typed errors: each says which field broke which rule of the spec.

/// Why an image, a frame or a URI was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Fewer bytes than the structure needs.
    #[error("{what} needs {need} bytes, got {got}")]
    Truncated {
        /// The structure.
        what: &'static str,
        /// Bytes it needs.
        need: usize,
        /// Bytes given.
        got: usize,
    },
    /// A superblock whose magic is not `TPLSHM1` (`31 4D 48 53 4C 50 4F 54` on disk).
    #[error("bad superblock magic {0:#018x}: not an SHM Tensor Pool region (or it was recreated)")]
    BadMagic(u64),
    /// A field outside what the spec allows.
    #[error("{field} = {value}: {rule}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Its value.
        value: i128,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// A field that differs from what the announce (or the caller) expects.
    #[error("{field} is {got}, the announce says {want}")]
    Mismatch {
        /// The field.
        field: &'static str,
        /// The expected value.
        want: u64,
        /// The value found.
        got: u64,
    },
    /// A file could not be created, opened or mapped.
    #[error("cannot {what} {path}: {detail}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// The system's reason.
        detail: String,
    },
    /// A region URI that breaks the grammar `shm:file?path=/abs[|require_hugepages=true|false]`.
    #[error("bad SHM URI {uri:?}: {why}")]
    BadUri {
        /// The URI (cut at 200 characters).
        uri: String,
        /// What is wrong.
        why: String,
    },
}

/// Results of this crate.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn invalid(field: &'static str, value: impl Into<i128>, rule: &'static str) -> Error {
    Error::Invalid {
        field,
        value: value.into(),
        rule,
    }
}
