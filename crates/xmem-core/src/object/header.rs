//! The header every xmem object starts with.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};

use crate::os::map::SharedLayout;
use crate::os::ProcessIdentity;
use xmem_os::assert_layout;

/// `b"XMEM\0OBJ"` read as a little-endian u64: the first eight bytes of every xmem object.
pub const OBJECT_MAGIC: u64 = u64::from_le_bytes(*b"XMEM\0OBJ");

/// The value of [`ObjectHeader::ready`] once the creator has finished initialising.
pub const READY: u32 = u32::from_le_bytes(*b"REDY");

/// What an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// A [`BufferPool`](crate::pool::BufferPool).
    Pool,
    /// A seqlock segment.
    Segment,
    /// A publish/subscribe stream.
    Stream,
    /// A kind this build does not know (written by a newer xmem).
    Unknown(u32),
}

impl ObjectKind {
    /// The code stored in the header.
    pub fn code(self) -> u32 {
        match self {
            ObjectKind::Pool => 1,
            ObjectKind::Segment => 2,
            ObjectKind::Stream => 3,
            ObjectKind::Unknown(c) => c,
        }
    }

    /// The kind for a header code.
    pub fn from_code(code: u32) -> Self {
        match code {
            1 => ObjectKind::Pool,
            2 => ObjectKind::Segment,
            3 => ObjectKind::Stream,
            c => ObjectKind::Unknown(c),
        }
    }

    /// A lowercase word for people.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Pool => "pool",
            ObjectKind::Segment => "segment",
            ObjectKind::Stream => "stream",
            ObjectKind::Unknown(_) => "unknown",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectKind::Unknown(c) => write!(f, "unknown kind {c}"),
            k => f.write_str(k.as_str()),
        }
    }
}

/// The first 128 bytes of every xmem object.
///
/// The creator writes every field, then `magic`, then its kind-specific contents, then `ready`
/// (release). Readers check `ready` (acquire) before trusting anything else; until then the
/// creator holds an exclusive `flock` on the file, so a reader can tell "still initialising" from
/// "abandoned by a creator that died".
#[repr(C, align(64))]
#[derive(Debug)]
pub struct ObjectHeader {
    /// [`OBJECT_MAGIC`].
    pub magic: AtomicU64,
    /// 0 while initialising, [`READY`] after.
    pub ready: AtomicU32,
    /// [`ObjectKind::code`].
    pub kind: AtomicU32,
    /// Version of the kind-specific layout.
    pub layout_version: AtomicU32,
    /// Bytes of the kind-specific header, this one included.
    pub header_size: AtomicU32,
    /// Size of the whole object in bytes.
    pub total_size: AtomicU64,
    /// Creator's pid.
    pub owner_pid: AtomicU32,
    /// Creator's effective uid.
    pub owner_uid: AtomicU32,
    /// Creator's start time (clock ticks since boot).
    pub owner_start_ticks: AtomicU64,
    /// Inode of the creator's pid namespace.
    pub owner_pidns: AtomicU64,
    /// Creation time, ns since the epoch.
    pub created_unix_ns: AtomicU64,
    /// Last sign of life from the owner, ns since the epoch (kinds that have a single owner).
    pub heartbeat_unix_ns: AtomicU64,
    /// Kind-specific flags.
    pub flags: AtomicU64,
    /// When a cleaner first found the object orphaned (ns since the epoch; 0 while it is not):
    /// the start of its grace period (see `discovery::cleanup_orphans`).
    pub orphan_since_unix_ns: AtomicU64,
    _reserved: [AtomicU64; 5],
}

assert_layout!(ObjectHeader, size 128, align 64, {
    magic: 0, ready: 8, kind: 12, layout_version: 16, header_size: 20, total_size: 24,
    owner_pid: 32, owner_uid: 36, owner_start_ticks: 40, owner_pidns: 48, created_unix_ns: 56,
    heartbeat_unix_ns: 64, flags: 72, orphan_since_unix_ns: 80,
});

// SAFETY: repr(C), only atomics, layout asserted above.
unsafe impl SharedLayout for ObjectHeader {}

impl ObjectHeader {
    /// The creator's identity.
    pub fn owner(&self) -> ProcessIdentity {
        ProcessIdentity {
            pid: self.owner_pid.load(Relaxed),
            start_ticks: self.owner_start_ticks.load(Relaxed),
        }
    }

    /// The object's kind.
    pub fn kind(&self) -> ObjectKind {
        ObjectKind::from_code(self.kind.load(Relaxed))
    }

    /// Whether the creator has published the object.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Acquire) == READY
    }
}
