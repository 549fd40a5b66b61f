//! The one writer of a segment ([`SegmentWriter`]).

use super::*;

/// The one writer of a segment. Dropping it removes the segment's name; readers keep the last
/// value and see [`SegmentReader::writer_alive`] turn false.
#[derive(Debug)]
pub struct SegmentWriter {
    pub(super) name: String,
    pub(super) path: PathBuf,
    pub(super) m: Mapped,
    /// Writes since the heartbeat was last stamped.
    pub(super) unstamped: u32,
}

/// A write stamps the heartbeat once in this many writes: reading a clock costs a quarter of a
/// 1 KiB write, and the heartbeat only informs (liveness comes from the writer's lock).
pub(super) const STAMP_EVERY: u32 = 32;

impl SegmentWriter {
    /// Creates segment `name` of `size` bytes (4 KiB to 1 GiB, whole 4 KiB pages).
    pub fn create(name: &str, size: u64) -> Result<SegmentWriter> {
        Self::builder(name).size(size).create()
    }

    /// Starts configuring segment `name`.
    pub fn builder(name: &str) -> SegmentBuilder {
        SegmentBuilder::new(name)
    }

    pub(super) fn new(name: String, path: PathBuf, obj: OpenObject) -> Result<SegmentWriter> {
        Ok(SegmentWriter {
            name,
            path,
            m: Mapped::new(obj)?,
            unstamped: STAMP_EVERY,
        })
    }

    /// The segment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The segment's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of data.
    pub fn size(&self) -> usize {
        self.m.size
    }

    /// The current version (even; grows by 2 per write, wrapping).
    pub fn version(&self) -> u64 {
        self.m.header().version.load(Relaxed)
    }

    /// Publishes `bytes` at the start of the segment.
    #[inline]
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.write_at(0, bytes)
    }

    /// Publishes `bytes` at `offset`; the rest of the segment keeps its bytes.
    #[inline]
    pub fn write_at(&mut self, offset: usize, bytes: &[u8]) -> Result<()> {
        check_range(offset, bytes.len(), self.m.size)?;
        let h = self.m.header();
        let v = write_begin(&h.version);
        // SAFETY: offset + len ≤ size (checked), inside the mapping we own.
        unsafe { store_bytes(self.m.data.add(offset), bytes) };
        crate::crash_point!("segment.mid_write");
        write_end(&h.version, v);
        self.stamp();
        Ok(())
    }

    /// Stamps the heartbeat on the first write and then every [`STAMP_EVERY`] writes.
    #[inline(always)]
    pub(super) fn stamp(&mut self) {
        self.unstamped += 1;
        if self.unstamped >= STAMP_EVERY {
            self.unstamped = 0;
            self.heartbeat();
        }
    }

    /// Publishes whatever `f` writes through the view, as one write: readers see all of it or
    /// none of it.
    pub fn write_with<R>(&mut self, f: impl FnOnce(&mut SegmentView<'_>) -> R) -> R {
        let h = self.m.header();
        let v = write_begin(&h.version);
        let mut view = SegmentView {
            data: self.m.data,
            size: self.m.size,
            _writer: PhantomData,
        };
        let r = f(&mut view);
        write_end(&h.version, v);
        self.stamp();
        r
    }

    /// Stamps the heartbeat (the time of the last sign of life, shown by `xmem ls`). Writes
    /// stamp it too, at least every 32 writes; a writer that may pause calls this to show it lives.
    pub fn heartbeat(&self) {
        self.m
            .header()
            .heartbeat_ns
            .store(time::monotonic_coarse_ns(), Relaxed);
    }
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        // Remove the name only if it is still ours (a writer that took over may have replaced it).
        let mine = self.m.obj.file.identity().ok();
        if let Ok(Some(file)) = ShmFile::open_read_only(&self.path) {
            if file.identity().ok() == mine {
                let _ = shm::unlink(&self.path);
            }
        }
    }
}
