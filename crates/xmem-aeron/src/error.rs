//! What can go wrong between xmem and Aeron, each with what to do about it.

use std::path::PathBuf;
use std::time::Duration;

/// Result alias of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors of the Aeron layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A media driver already runs in the directory an embedded one was to start in.
    #[error("a media driver (pid {pid}) already runs in {}; connect to it, or give another --aeron-dir", dir.display())]
    DriverRunning {
        /// The Aeron directory.
        dir: PathBuf,
        /// The running driver's pid.
        pid: i64,
    },

    /// The embedded media driver did not start.
    #[error("the media driver could not start in {}: {detail}{}", dir.display(), hint(detail))]
    DriverStart {
        /// The Aeron directory.
        dir: PathBuf,
        /// Aeron's message.
        detail: String,
    },

    /// No live media driver in the directory a client was to connect to.
    #[error("no media driver runs in {}{}; start one (`xmem tp media-driver --aeron-dir {}`) or let xmem start one itself (`--driver auto`, the default)", dir.display(), match why { Some(w) => format!(" ({w})"), None => String::new() }, dir.display())]
    NoDriver {
        /// The Aeron directory.
        dir: PathBuf,
        /// What was found there instead, if anything.
        why: Option<String>,
    },

    /// The client could not connect to the driver.
    #[error("connecting to the media driver in {}: {detail}", dir.display())]
    Connect {
        /// The Aeron directory.
        dir: PathBuf,
        /// Aeron's message.
        detail: String,
    },

    /// The driver refused or failed to add a publication or subscription.
    #[error("adding a {what} on {channel} stream {stream_id}: {detail}{}", hint(detail))]
    Add {
        /// "publication" or "subscription".
        what: &'static str,
        /// The channel.
        channel: String,
        /// The stream id.
        stream_id: i32,
        /// Aeron's message.
        detail: String,
    },

    /// The driver did not answer in time.
    #[error("the media driver in {} did not answer within {waited:?} ({what}); is it alive? (`xmem tp media-driver` prints its state)", dir.display())]
    Timeout {
        /// The Aeron directory.
        dir: PathBuf,
        /// What was waited for.
        what: String,
        /// How long.
        waited: Duration,
    },

    /// The media driver stopped answering, or its client was closed under us.
    #[error("lost the media driver in {}: {detail}; restart it (or this process, which starts one when none runs)", dir.display())]
    DriverLost {
        /// The Aeron directory.
        dir: PathBuf,
        /// Aeron's message.
        detail: String,
    },

    /// A channel string Aeron cannot use (it holds a NUL byte).
    #[error(
        "invalid channel {0:?}: Aeron channels are strings like aeron:ipc or aeron:udp?endpoint=host:port"
    )]
    InvalidChannel(String),

    /// An Aeron call failed.
    #[error("aeron: {op}: {detail}")]
    Aeron {
        /// The call.
        op: &'static str,
        /// Aeron's message.
        detail: String,
    },
}

/// A hint for the messages Aeron gives when /dev/shm is too small (Docker's 64 MB, a full tmpfs).
fn hint(detail: &str) -> &'static str {
    if detail.contains("insufficient usable storage") || detail.contains("No space left") {
        " (the Aeron directory's file system is full: free space in /dev/shm, or enlarge it, docker: --shm-size)"
    } else {
        ""
    }
}

impl Error {
    /// Whether the same call, made again later, can succeed without anything else changing.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }
}
