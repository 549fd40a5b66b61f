//! The one error type of `xmem-core`.
//!
//! Every variant says what went wrong *and* what to do about it, because the people reading these
//! messages are usually operating a pipeline, not debugging xmem.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

// `error` sits below every module that returns it: it names only `dtype`, a leaf, and takes
// the OS layer's errors in (tests/layering.rs checks the modules form no cycle).
use crate::dtype::DType;

/// Result alias used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in xmem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object name is not acceptable (see `object::validate_name`).
    #[error("invalid name {name:?}: {reason} (names are 1 to {max} characters of A-Z a-z 0-9 . _ -, not starting with '.')")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
        /// The longest name allowed.
        max: usize,
    },

    /// No object of that name exists.
    #[error("no xmem object named {name:?} (looked for {}); list what exists with `xmem ls`", path.display())]
    NotFound {
        /// The name as given.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },

    /// An object of that name exists and at least one process using it is alive.
    #[error("an xmem object named {name:?} already exists and is in use ({detail}); open it instead, or pick another name")]
    AlreadyExists {
        /// The name as given.
        name: String,
        /// Who is using it.
        detail: String,
    },

    /// The operating system refused access.
    #[error("permission denied: cannot {op} {}; create shared objects with a group mode (e.g. 0o660) to share them between users", path.display())]
    PermissionDenied {
        /// The object's path.
        path: PathBuf,
        /// What was being attempted.
        op: &'static str,
    },

    /// The shared-memory file system is full.
    #[error("not enough space in {} for {needed} bytes; free space there or enlarge it (docker: --shm-size)", dir.display())]
    NoSpace {
        /// The directory that is full (usually `/dev/shm`).
        dir: PathBuf,
        /// Bytes requested.
        needed: u64,
    },

    /// The file exists but is not an xmem object.
    #[error("{} is not an xmem object ({detail}); xmem will not touch it", path.display())]
    NotXmem {
        /// The file's path.
        path: PathBuf,
        /// Why it was rejected.
        detail: String,
    },

    /// The file is shorter than its header says it must be.
    #[error("{} is truncated: {size} bytes, but it needs {needed}; remove it with `xmem clean --damaged`", path.display())]
    Truncated {
        /// The file's path.
        path: PathBuf,
        /// Its actual size.
        size: u64,
        /// The size its header requires.
        needed: u64,
    },

    /// The object was written by an incompatible version of xmem.
    #[error("{} has layout version {found}, but this xmem supports {supported}; use one xmem version in every process", path.display())]
    VersionMismatch {
        /// The file's path.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The version this build understands.
        supported: u32,
    },

    /// The object is of another kind (for example a segment opened as a pool).
    #[error("{} is a {found}, not a {expected}", path.display())]
    WrongKind {
        /// The file's path.
        path: PathBuf,
        /// The kind that was asked for.
        expected: &'static str,
        /// The kind found in the header.
        found: String,
    },

    /// The creator is still initialising the object after the open timeout.
    #[error("{} is still being initialised after {waited:?}; retry, or if its creator is stuck remove it with `xmem clean`", path.display())]
    NotReady {
        /// The file's path.
        path: PathBuf,
        /// How long the open waited.
        waited: Duration,
    },

    /// The creator died before it finished initialising the object.
    #[error("{} was left half-initialised by a creator that died; remove it with `xmem clean`", path.display())]
    Abandoned {
        /// The file's path.
        path: PathBuf,
    },

    /// A header or table in shared memory holds values that cannot be right.
    #[error("{} is corrupt: {detail}; remove it with `xmem clean --damaged`", path.display())]
    Corrupt {
        /// The file's path.
        path: PathBuf,
        /// The inconsistency found.
        detail: String,
    },

    /// `open_or_create` found a pool whose configuration differs from the one requested.
    #[error("pool {name:?} exists with another configuration ({detail}); open it with `BufferPool::open`, or pick another name")]
    ConfigMismatch {
        /// The pool's name.
        name: String,
        /// Which setting differs.
        detail: String,
    },

    /// A builder setting is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A write was asked of a stream subscriber's attachment, whose buffers are mapped
    /// read-only.
    #[error("pool {pool} is attached read-only here (a stream subscriber's attachment: what it receives is read-only); open the pool with BufferPool::open to write buffers, or copy the frame")]
    ReadOnly {
        /// The pool's name.
        pool: String,
    },

    /// Host access (`bytes`, `as_slice`) was asked of a buffer whose bytes are in device
    /// memory.
    #[error("pool {pool} keeps its buffers in device memory: reach them through xmem-device (DevicePool::device_ptr, read, write) or DLPack, not as host bytes")]
    DeviceStorage {
        /// The pool's name.
        pool: String,
    },

    /// `try_acquire` found no free buffer.
    #[error("pool {pool} has no free buffer: all {count} are in use; release some, enlarge the pool, or use acquire_timeout")]
    PoolExhausted {
        /// The pool's name.
        pool: String,
        /// Its buffer count.
        count: u32,
    },

    /// A blocking acquire timed out.
    #[error("timed out after {waited:?} waiting for a free buffer in pool {pool}; holders: {holders}")]
    Timeout {
        /// The pool's name.
        pool: String,
        /// How long it waited.
        waited: Duration,
        /// Which processes hold buffers, for diagnosis.
        holders: String,
    },

    /// The reference names a buffer that has since been released and reused.
    #[error("stale buffer reference {reference}: the buffer was released{}; a reference is valid only while some process holds the buffer", match current { Some(g) => format!(" and reused (now generation {g})"), None => String::new() })]
    StaleRef {
        /// The reference given, as `BufferRef`'s `Display` writes it.
        reference: String,
        /// The buffer's current generation, if it is in use.
        current: Option<u64>,
    },

    /// The buffer cannot be accessed in the requested mode right now.
    #[error("buffer {index} is busy: {reason}")]
    Busy {
        /// The buffer's index.
        index: u32,
        /// Why.
        reason: &'static str,
    },

    /// The reference belongs to another pool.
    #[error("buffer reference {reference} belongs to another pool than {pool}")]
    WrongPool {
        /// The reference given, as `BufferRef`'s `Display` writes it.
        reference: String,
        /// The pool it was used with.
        pool: String,
    },

    /// A buffer index beyond the pool's buffer count.
    #[error("buffer index {index} is out of range: pool {pool} has {count} buffers")]
    InvalidIndex {
        /// The index given.
        index: u32,
        /// The pool's buffer count.
        count: u32,
        /// The pool's name.
        pool: String,
    },

    /// A release of a reference this process does not hold.
    #[error("double release of buffer {index} in pool {pool}: this process holds no reference to it")]
    DoubleRelease {
        /// The buffer's index.
        index: u32,
        /// The pool's name.
        pool: String,
    },

    /// The pool's process table is full.
    #[error("pool {pool} already has {max} processes attached, the most one pool supports; close a handle in another process first")]
    TooManyProcesses {
        /// The pool's name.
        pool: String,
        /// The limit.
        max: usize,
    },

    /// A hand-off named a process that has not opened the pool.
    #[error(
        "process {pid} has not opened pool {pool}; it must open the pool before buffers can be handed to it"
    )]
    PeerNotAttached {
        /// The process id given.
        pid: u32,
        /// The pool's name.
        pool: String,
    },

    /// The pool was created in another pid namespace, where liveness cannot be checked.
    #[error("pool {pool} was created in another pid namespace; processes sharing a pool must share one (e.g. docker --pid=host) so that dead holders can be detected")]
    ForeignPidNamespace {
        /// The pool's name.
        pool: String,
    },

    /// A tensor description that does not fit its buffer, or overflows.
    #[error("invalid tensor shape: {0}")]
    InvalidShape(String),

    /// A typed view asked for another element type than the buffer holds.
    #[error("dtype mismatch: the buffer holds {actual}, the view asked for {expected}")]
    DTypeMismatch {
        /// The view's element type.
        expected: DType,
        /// The buffer's element type.
        actual: DType,
    },

    /// A typed view whose first element is not aligned for its type.
    #[error("tensor data at byte offset {offset} is not aligned to {align} bytes for {dtype}; set an aligned byte offset")]
    Misaligned {
        /// The data's byte offset in the buffer.
        offset: u64,
        /// The alignment required.
        align: usize,
        /// The element type.
        dtype: DType,
    },

    /// A slice view of a strided tensor.
    #[error("the tensor is not contiguous; read it through the byte view and its strides")]
    NotContiguous,

    /// Metadata text or bytes too long for their field.
    #[error("{field} is {len} bytes, the most it can hold is {max}")]
    MetadataTooLong {
        /// The field.
        field: &'static str,
        /// The length given.
        len: usize,
        /// Its capacity.
        max: usize,
    },

    /// A serialized reference of the wrong size or content.
    #[error("malformed buffer reference: {0}")]
    MalformedRef(String),

    /// A segment size that is out of range or not whole pages.
    #[error("invalid segment size {size}: {reason}")]
    InvalidSize {
        /// The size given.
        size: u64,
        /// What is wrong with it.
        reason: String,
    },

    /// Another live process writes this segment.
    #[error("segment {name:?} already has a writer, pid {pid}; a segment has one writer at a time (open it with SegmentReader to read it)")]
    WriterExists {
        /// The segment's name.
        name: String,
        /// The writer's pid.
        pid: u32,
    },

    /// The segment's writer is gone (exited or killed): its value is stale or was left half
    /// written.
    #[error("the writer of segment {name:?} (pid {pid}) is gone; the value is stale. Open the segment again once a new writer has created it")]
    WriterGone {
        /// The segment's name.
        name: String,
        /// The writer's pid.
        pid: u32,
    },

    /// A read kept meeting writes in progress.
    #[error("segment {name:?}: no consistent read in {attempts} attempts, the writer writes without pause; retry, or allow more attempts (ReaderBuilder::max_retries)")]
    Contended {
        /// The segment's name.
        name: String,
        /// Attempts made.
        attempts: u32,
    },

    /// A typed segment opened as another type.
    #[error("segment {name:?} holds {found}, not {expected}")]
    TypeMismatch {
        /// The segment's name.
        name: String,
        /// The type asked for.
        expected: String,
        /// What the segment holds.
        found: String,
    },

    /// A write or read beyond the end of a segment.
    #[error("{len} bytes at offset {offset} do not fit the segment's {size} bytes")]
    OutOfBounds {
        /// Start of the access.
        offset: u64,
        /// Its length.
        len: u64,
        /// The segment's size.
        size: u64,
    },

    /// A placement option (huge pages, NUMA node, locked memory) cannot be honoured here.
    #[error("{what} is not available: {reason}")]
    Placement {
        /// The option.
        what: &'static str,
        /// Why, and what to change.
        reason: String,
    },

    /// Another live process publishes this stream.
    #[error("stream {name:?} already has a publisher, pid {pid}; a stream has one publisher at a time (subscribe to it with Subscriber)")]
    PublisherExists {
        /// The stream's name.
        name: String,
        /// The publisher's pid.
        pid: u32,
    },

    /// The stream's publisher closed it or died, and every frame it published has been received.
    #[error("the publisher of stream {name:?} (pid {pid}) is gone and every frame it published was received; subscribe again once a new publisher has created it")]
    PublisherGone {
        /// The stream's name.
        name: String,
        /// The publisher's pid.
        pid: u32,
    },

    /// Under [`Policy::Block`](crate::stream::Policy), a subscriber's queue stayed full.
    #[error("stream {name:?}: subscriber pid {pid} took no frame for {waited:?} and its queue of {depth} is full; the frame was not published (make the subscriber faster, the queue deeper, or use Policy::DropOldest)")]
    QueueFull {
        /// The stream's name.
        name: String,
        /// The stalled subscriber's pid.
        pid: u32,
        /// Its queue depth.
        depth: u32,
        /// How long the publisher waited.
        waited: Duration,
    },

    /// Every subscriber place of a stream is taken.
    #[error("stream {name:?} has {max} subscribers already; create it with more (PublisherBuilder::max_subscribers)")]
    TooManySubscribers {
        /// The stream's name.
        name: String,
        /// Its limit.
        max: u32,
    },

    /// Any other operating-system error.
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

impl From<xmem_os::OsError> for Error {
    /// The OS layer's error, with the advice of this layer (`xmem clean`, `--shm-size`).
    fn from(e: crate::os::OsError) -> Error {
        use xmem_os::OsError as O;
        match e {
            O::NoSpace { dir, needed } => Error::NoSpace { dir, needed },
            O::NotXmem { path, detail } => Error::NotXmem { path, detail },
            O::Corrupt { path, detail } => Error::Corrupt { path, detail },
            O::Os { op, path, source } => Error::os(op, path, source),
            // A kind the OS layer grows later: its own message, as an OS error.
            other => Error::Os {
                op: "system call",
                path: PathBuf::new(),
                source: io::Error::other(other.to_string()),
            },
        }
    }
}

impl Error {
    /// Whether the same call, made again later with nothing changed, can succeed: the condition
    /// is one that other processes end by themselves (a buffer released, a queue drained, an
    /// object's creator finishing, a writer pausing). `false` means something must change first
    /// (a name, a configuration, a file removed, space freed) and the message says what.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::PoolExhausted { .. }
                | Error::Timeout { .. }
                | Error::QueueFull { .. }
                | Error::NotReady { .. }
                | Error::Contended { .. }
                | Error::Busy { .. }
                | Error::TooManyProcesses { .. }
                | Error::TooManySubscribers { .. }
        )
    }

    /// An OS error while doing `op` on `path`, mapped to the typed variants where one fits.
    pub(crate) fn os(op: &'static str, path: impl Into<PathBuf>, err: impl Into<io::Error>) -> Self {
        let path = path.into();
        let source: io::Error = err.into();
        match source.kind() {
            io::ErrorKind::PermissionDenied => Error::PermissionDenied { path, op },
            _ => Error::Os { op, path, source },
        }
    }
}
