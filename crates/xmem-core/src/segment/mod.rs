//! Seqlock segments: one writer publishes a latest value (a state, a configuration, a small
//! tensor) that any number of readers in any processes take without locks and without ever
//! seeing a torn value.
//!
//! ```
//! use xmem_core::segment::{SegmentReader, SegmentWriter};
//! # fn main() -> xmem_core::Result<()> {
//! # // A directory of the example's own, removed when it ends (declared first: dropped last).
//! # struct Dir(String);
//! # impl Drop for Dir { fn drop(&mut self) { let _ = std::fs::remove_dir_all(&self.0); } }
//! # let _dir = Dir(format!("/dev/shm/xmem-doctest-{}", std::process::id()));
//! # std::fs::create_dir_all(&_dir.0).unwrap();
//! # std::env::set_var("XMEM_SHM_DIR", &_dir.0);
//! let mut w = SegmentWriter::create("robot.state", 4096)?;   // exclusive: one writer
//! w.write(b"pose 1.0 2.0 0.5")?;
//! // … any number of readers, in any processes:
//! let mut r = SegmentReader::open("robot.state")?;
//! let mut buf = [0u8; 16];
//! let version = r.read_into(&mut buf)?;                        // one complete write, always
//! # Ok(()) }
//! ```
//!
//! The writer holds an exclusive `flock` on the segment for its whole life: a second writer
//! gets [`Error::WriterExists`], and readers learn that the writer died (the kernel drops the
//! lock) exactly, whatever happened to its pid. See [`seqlock`] for the version protocol.

mod builder;
mod by_path;
mod layout;
mod reader;
pub mod seqlock;
mod typed;
mod writer;

#[cfg(all(test, loom))]
mod model;

use std::cell::Cell;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::*;
use std::time::Duration;

use builder::TypeInfo;
pub use builder::{HugePages, OnWriterGone, SegmentBuilder};
pub use by_path::{clean_path, inspect_path, SegmentInfo};
pub use layout::{MAX_SIZE, MIN_SIZE};
pub use reader::{ReaderBuilder, SegmentReader, SegmentView, Snapshot};
pub use typed::{Segment, TypedReader, TypedWriter};
pub use writer::SegmentWriter;

use self::layout::{
    SegmentHeader, LAYOUT_HASH, LAYOUT_VERSION, PAGE, PLACED_HUGE, PLACED_LOCKED, PLACED_NUMA,
};
use self::seqlock::{load_bytes, read_begin, read_validate, store_bytes, write_begin, write_end};
use crate::error::{Error, Result};
use crate::object::{self, CreateOutcome, CreateSpec, ObjectKind, OpenObject, OpenSpec, Placement};
use crate::os::{placement, shm, time, ProcessIdentity, ShmDir, ShmFile};

/// Pointers into a validated segment mapping.
#[derive(Debug)]
struct Mapped {
    obj: OpenObject,
    header: *const SegmentHeader,
    data: *mut u8,
    size: usize,
}

// SAFETY: the pointers point into `obj.map`, owned here; the header is atomics and the data is
// accessed only through atomic copies (readers) or by the single writer.
unsafe impl Send for Mapped {}
// SAFETY: as above; shared access only reads atomically.
unsafe impl Sync for Mapped {}

impl Mapped {
    fn new(obj: OpenObject) -> Result<Mapped> {
        let path = obj.map.path().to_path_buf();
        let corrupt = |detail: String| Error::Corrupt {
            path: path.clone(),
            detail,
        };
        let h = obj.map.at::<SegmentHeader>(0)?;
        if h.layout_hash.load(Relaxed) != LAYOUT_HASH {
            return Err(Error::VersionMismatch {
                path: path.clone(),
                found: (h.layout_hash.load(Relaxed) >> 32) as u32,
                supported: (LAYOUT_HASH >> 32) as u32,
            });
        }
        let page = h.page_size.load(Relaxed);
        let offset = h.data_offset.load(Relaxed);
        let size = h.data_size.load(Relaxed);
        if !page.is_power_of_two() || page < PAGE || offset != page {
            return Err(corrupt(format!("page size {page}, data offset {offset}")));
        }
        layout::validate_size(size).map_err(|e| corrupt(e.to_string()))?;
        if layout::total_size(size, page) != obj.map.len() as u64 {
            return Err(corrupt(format!(
                "{size} bytes of data on {page}-byte pages do not make a {}-byte file",
                obj.map.len()
            )));
        }
        // SAFETY: offset + size ≤ mapping length (checked just above).
        let data = unsafe { obj.map.base().add(offset as usize) };
        Ok(Mapped {
            header: h,
            data,
            size: size as usize,
            obj,
        })
    }

    fn header(&self) -> &SegmentHeader {
        // SAFETY: points into the mapping owned by self (validated in `new`).
        unsafe { &*self.header }
    }

    fn writer(&self) -> ProcessIdentity {
        self.header().object.owner()
    }
}

fn check_range(offset: usize, len: usize, size: usize) -> Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(Error::OutOfBounds {
            offset: offset as u64,
            len: len as u64,
            size: size as u64,
        }),
    }
}
