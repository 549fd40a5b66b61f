//! Looking at a segment by its path without opening it as a reader (`xmem inspect`, `xmem clean`).

use super::*;

/// What `xmem ls` and `xmem inspect` show about a segment.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    /// Bytes of data.
    pub size: u64,
    /// Page size of the mapping.
    pub page_size: u64,
    /// Current version.
    pub version: u64,
    /// The writer.
    pub writer: ProcessIdentity,
    /// Whether the writer holds the segment's lock.
    pub writer_alive: bool,
    /// Time since the last write or heartbeat.
    pub heartbeat_age: Duration,
    /// Size of the typed value (0: raw bytes).
    pub type_size: u64,
    /// On huge pages.
    pub huge_pages: bool,
    /// Locked in RAM.
    pub locked: bool,
    /// Bound to this NUMA node.
    pub numa_node: Option<u32>,
}

/// Reads a segment's header without joining it.
pub fn inspect_path(path: &Path, label: &str) -> Result<SegmentInfo> {
    let r = ReaderBuilder {
        name: label.to_string(),
        dir: path.parent().map(ShmDir::new),
        ..SegmentReader::builder(label)
    }
    .open()?;
    let h = r.m.header();
    let placed = h.placement.load(Relaxed);
    Ok(SegmentInfo {
        size: r.m.size as u64,
        page_size: h.page_size.load(Relaxed),
        version: h.version.load(Acquire),
        writer: r.m.writer(),
        type_size: h.type_size.load(Relaxed),
        huge_pages: placed & PLACED_HUGE != 0,
        locked: placed & PLACED_LOCKED != 0,
        numa_node: (placed & PLACED_NUMA != 0).then(|| h.numa_node.load(Relaxed)),
        heartbeat_age: r.heartbeat_age(),
        writer_alive: r.writer_alive(),
    })
}

/// Removes the segment at `path` if its writer is gone. Returns whether it did (or, with
/// `dry_run`, would).
pub fn clean_path(path: &Path, dry_run: bool) -> Result<bool> {
    match object::probe(path)? {
        Some(info) if info.kind == Some(ObjectKind::Segment) => {}
        _ => return Ok(false), // gone, or not a segment (pools hold no lock: never judge them here)
    }
    let Some(file) = ShmFile::open_read_only(path)? else {
        return Ok(false);
    };
    if !file.try_lock_exclusive()? {
        return Ok(false); // a writer holds it
    }
    if !dry_run {
        shm::unlink(path)?;
    }
    Ok(true)
}
