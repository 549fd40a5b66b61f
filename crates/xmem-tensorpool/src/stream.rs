//! A stream over shared memory, before any control plane: a producer that creates its regions in
//! the canonical layout and describes them as a `ShmPoolAnnounce`, and a consumer that maps what
//! an announce names (fail closed), remaps when the epoch changes, and reads frames by
//! descriptor or by following the ring.
//!
//! **The seam for the control plane.** Everything that crosses from producer to consumer is a
//! message of the wire schema: the announce ([`TpProducer::announce`] →
//! [`TpConsumer::on_announce`]) and each frame's descriptor ([`TpProducer::publish`] →
//! [`TpConsumer::read`]). The Aeron control plane will carry them; until then
//! [`AnnounceFile`] keeps the encoded announce beside the regions, and consumers follow the ring
//! ([`TpConsumer::next`]) instead of waiting for descriptors.

use std::path::{Path, PathBuf};

use crate::codec::{FrameDescriptor, PoolAnnounce, ShmPoolAnnounce};
use crate::commit::{Accepted, Consumer, Counters, Drop, FrameSpec, Producer};
use crate::error::{invalid, Error, Result};
use crate::layout::{check_stride, Superblock, LAYOUT_VERSION, SLOT_SIZE};
use crate::paths::{AllowedDirs, Layout};
use crate::region::Region;
use crate::uri::ShmUri;

/// `announceClockDomain` MONOTONIC.
pub const CLOCK_MONOTONIC: u8 = 1;

/// How a producer's regions are made.
#[derive(Debug, Clone)]
pub struct ProducerBuilder {
    stream_id: u32,
    nslots: u32,
    pools: Vec<(u16, u32)>,
    base: PathBuf,
    namespace: String,
    mode: u32,
    producer_id: u32,
}

impl ProducerBuilder {
    /// Slots of the ring and of every pool (a power of two; default 8).
    pub fn nslots(mut self, n: u32) -> Self {
        self.nslots = n;
        self
    }

    /// Adds payload pool `pool_id` (1 and up) with slots of `stride` bytes (a multiple of 64).
    /// A frame goes to the smallest pool it fits.
    pub fn pool(mut self, pool_id: u16, stride: u32) -> Self {
        self.pools.push((pool_id, stride));
        self
    }

    /// The base directory (default `/dev/shm`).
    pub fn base_dir(mut self, base: impl Into<PathBuf>) -> Self {
        self.base = base.into();
        self
    }

    /// The namespace (default `default`).
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.namespace = ns.into();
        self
    }

    /// File mode of the regions (default `0o660`).
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// The producer id announced (a driver lease's client id; default 0, no driver).
    pub fn producer_id(mut self, id: u32) -> Self {
        self.producer_id = id;
        self
    }

    /// Creates the regions of a new epoch and returns the producer. The epoch is the current
    /// real time in nanoseconds, but always above every epoch of the stream still on disk and
    /// every one this process made (the spec's `max(prev + 1, now)`: a restarted producer's
    /// epoch is higher even when the clock was set back).
    pub fn create(self) -> Result<TpProducer> {
        if self.pools.is_empty() {
            return Err(invalid("pools", 0u8, "a stream needs at least one payload pool"));
        }
        let layout = Layout::new(&self.base, &self.namespace)?;
        let epoch = next_epoch(&layout, self.stream_id);
        let files = EpochFiles::create(
            &layout,
            &EpochSpec {
                stream_id: self.stream_id,
                epoch,
                nslots: self.nslots,
                pools: self.pools.clone(),
                mode: self.mode,
                producer_id: self.producer_id,
            },
        )?;
        let EpochFiles {
            announce,
            dir,
            ring,
            pools,
        } = files;
        Ok(TpProducer {
            inner: Producer::new(ring, pools),
            announce,
            dir,
            owned: true,
        })
    }
}

/// What one epoch of a stream is made of: what a driver's profile says, plus the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochSpec {
    /// The stream.
    pub stream_id: u32,
    /// The epoch (see [`next_epoch`]).
    pub epoch: u64,
    /// Slots of the ring and of every pool (a power of two).
    pub nslots: u32,
    /// `(pool_id, stride_bytes)` of each payload pool.
    pub pools: Vec<(u16, u32)>,
    /// File mode of the regions.
    pub mode: u32,
    /// The producer id announced (0 until a producer attaches).
    pub producer_id: u32,
}

/// The region files of one epoch, created in the canonical layout: what a driver makes on a
/// producer's attach. Dropping it unmaps and leaves the files (they belong to the stream until
/// epoch GC removes the directory, [`remove_epoch_dir`]).
#[derive(Debug)]
pub struct EpochFiles {
    /// The announce that names them.
    pub announce: ShmPoolAnnounce,
    /// The epoch directory.
    pub dir: PathBuf,
    ring: Region,
    pools: Vec<Region>,
}

impl EpochFiles {
    /// Creates the ring and the pools of `spec` under `layout` (pre-faulted, superblocks written
    /// last). On failure nothing of the epoch is left.
    pub fn create(layout: &Layout, spec: &EpochSpec) -> Result<EpochFiles> {
        if spec.pools.is_empty() {
            return Err(invalid("pools", 0u8, "a stream needs at least one payload pool"));
        }
        let (stream_id, epoch, nslots) = (spec.stream_id, spec.epoch, spec.nslots);
        let pid = u64::from(std::process::id());
        let now = xmem_core::os::time::monotonic_ns();
        let dir = layout.epoch_dir(stream_id, epoch);
        let ring_path = layout.header_ring(stream_id, epoch);
        let ring_sb = Superblock::header_ring(stream_id, epoch, nslots, pid, now);
        let mut created = CreatedDir(Some(dir.clone()));
        let ring = Region::create(&ring_path, &ring_sb, spec.mode)?;
        let mut pools = Vec::new();
        let mut announced = Vec::new();
        for &(pool_id, stride) in &spec.pools {
            let path = layout.pool(stream_id, epoch, pool_id);
            let sb = Superblock::payload_pool(stream_id, epoch, pool_id, nslots, stride, pid, now);
            pools.push(Region::create(&path, &sb, spec.mode)?);
            announced.push(PoolAnnounce {
                pool_id,
                nslots,
                stride_bytes: stride,
                region_uri: ShmUri::new(&path, false)?.to_string(),
            });
        }
        let announce = ShmPoolAnnounce {
            stream_id,
            producer_id: spec.producer_id,
            epoch,
            announce_timestamp_ns: now,
            announce_clock_domain: CLOCK_MONOTONIC,
            layout_version: LAYOUT_VERSION,
            header_nslots: nslots,
            header_slot_bytes: SLOT_SIZE as u16,
            pools: announced,
            header_region_uri: ShmUri::new(&ring_path, false)?.to_string(),
        };
        check_announce(&announce)?;
        created.0 = None;
        Ok(EpochFiles {
            announce,
            dir,
            ring,
            pools,
        })
    }

    /// Stamps the activity time of every region (a driver may do it for its producers).
    pub fn touch(&self, now_ns: u64) {
        self.ring.touch(now_ns);
        for p in &self.pools {
            p.touch(now_ns);
        }
    }
}

/// Removes a half-created epoch directory when creation fails.
struct CreatedDir(Option<PathBuf>);

impl std::ops::Drop for CreatedDir {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            remove_epoch_dir(&dir);
        }
    }
}

/// Removes an epoch directory and then each parent it leaves empty (stream, namespace,
/// `tensorpool-<user>`).
pub fn remove_epoch_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
    // Then the stream, namespace and `tensorpool-<user>` directories, each only if this left it
    // empty (`remove_dir` refuses a directory with anything in it), so nothing is left behind.
    for parent in dir.ancestors().skip(1).take(3) {
        if std::fs::remove_dir(parent).is_err() {
            break;
        }
    }
}

/// `max(now, previous + 1)`, where the previous epochs are the stream's epoch directories and
/// the last epoch this process made: a restarted producer or driver never reuses an epoch.
pub fn next_epoch(layout: &Layout, stream_id: u32) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let on_disk = layout
        .epoch_dir(stream_id, 0)
        .parent()
        .and_then(|stream_dir| std::fs::read_dir(stream_dir).ok())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let mut last = LAST.load(Relaxed);
    loop {
        let epoch = realtime_ns().max(on_disk.max(last).saturating_add(1));
        match LAST.compare_exchange(last, epoch, Relaxed, Relaxed) {
            Ok(_) => return epoch,
            Err(now) => last = now,
        }
    }
}

fn realtime_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// A producer: its regions, its announce, and the commit protocol. Its epoch directory is
/// removed when it is dropped (a killed producer leaves it to epoch GC or `xmem tp clean`).
#[derive(Debug)]
pub struct TpProducer {
    inner: Producer,
    announce: ShmPoolAnnounce,
    dir: PathBuf,
    /// Whether this producer made the files (no driver) and so removes them.
    owned: bool,
}

impl TpProducer {
    /// A builder for stream `stream_id`.
    pub fn builder(stream_id: u32) -> ProducerBuilder {
        ProducerBuilder {
            stream_id,
            nslots: 8,
            pools: Vec::new(),
            base: PathBuf::from("/dev/shm"),
            namespace: "default".into(),
            mode: 0o660,
            producer_id: 0,
        }
    }

    /// A producer writing into regions a driver made and named in `announce` (its attach
    /// response): each is opened read-write after the path checks of `allowed` and its superblock
    /// checked against the announce. It never creates, truncates or unlinks a file (D-2.2).
    pub fn attach(announce: &ShmPoolAnnounce, allowed: &AllowedDirs) -> Result<TpProducer> {
        check_announce(announce)?;
        let a = announce;
        let ring_uri = ShmUri::parse(&a.header_region_uri)?;
        let ring_sb = Superblock::header_ring(a.stream_id, a.epoch, a.header_nslots, 0, 0);
        let ring = Region::open_announced_writable(&ring_uri, allowed, &ring_sb)?;
        let mut pools = Vec::new();
        for p in &a.pools {
            let uri = ShmUri::parse(&p.region_uri)?;
            let sb =
                Superblock::payload_pool(a.stream_id, a.epoch, p.pool_id, p.nslots, p.stride_bytes, 0, 0);
            pools.push(Region::open_announced_writable(&uri, allowed, &sb)?);
        }
        let dir = ring_uri
            .path()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        Ok(TpProducer {
            inner: Producer::new(ring, pools),
            announce: announce.clone(),
            dir,
            owned: false,
        })
    }

    /// What the regions are, to send to consumers (about once a second, and on change).
    pub fn announce(&self) -> &ShmPoolAnnounce {
        &self.announce
    }

    /// Stamps the activity time of the ring and of every pool, and the announce's time (call
    /// once per announce period: consumers take a region whose stamp is older than three periods
    /// for a dead producer's) and returns the announce to send.
    pub fn refresh(&mut self) -> &ShmPoolAnnounce {
        let now = xmem_core::os::time::monotonic_ns();
        self.inner.ring().touch(now);
        for pool in self.inner.pools() {
            pool.touch(now);
        }
        self.announce.announce_timestamp_ns = now;
        &self.announce
    }

    /// The next frame's sequence number.
    pub fn next_seq(&self) -> u64 {
        self.inner.next_seq()
    }

    /// Makes `seq` the next frame's number (see [`Producer::skip_to`]); `false` if it was used.
    pub fn skip_to(&mut self, seq: u64) -> bool {
        self.inner.skip_to(seq)
    }

    /// The directory of this stream's epochs (`<base>/tensorpool-<user>/<ns>/<stream_id>`).
    pub fn stream_dir(&self) -> &Path {
        self.dir.parent().unwrap_or(&self.dir)
    }

    /// The directory of this epoch's region files.
    pub fn epoch_dir(&self) -> &Path {
        &self.dir
    }

    /// Publishes a frame (see [`Producer::publish`]) and returns its descriptor, or `None` when
    /// no pool holds `spec.values_len` bytes (the frame is dropped, nothing blocks).
    pub fn publish(
        &mut self,
        spec: &FrameSpec,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<Option<FrameDescriptor>> {
        let Some(seq) = self.inner.publish(spec, fill)? else {
            return Ok(None);
        };
        Ok(Some(FrameDescriptor {
            stream_id: self.announce.stream_id,
            epoch: self.announce.epoch,
            seq,
            timestamp_ns: None,
            meta_version: Some(spec.meta_version),
            trace_id: 0,
        }))
    }
}

impl std::ops::Drop for TpProducer {
    fn drop(&mut self) {
        if self.owned {
            remove_epoch_dir(&self.dir);
        }
    }
}

/// The checks an announce passes before anything it names is mapped (W-9-1, W-9-2, W-15.1-1).
pub fn check_announce(a: &ShmPoolAnnounce) -> Result<()> {
    if a.layout_version != LAYOUT_VERSION {
        return Err(invalid(
            "layoutVersion",
            a.layout_version,
            "this reader speaks layout version 1",
        ));
    }
    if a.header_slot_bytes as usize != SLOT_SIZE {
        return Err(invalid(
            "headerSlotBytes",
            a.header_slot_bytes,
            "header slots are 256 bytes",
        ));
    }
    if a.header_nslots == 0 || !a.header_nslots.is_power_of_two() {
        return Err(invalid("headerNslots", a.header_nslots, "must be a power of two"));
    }
    if a.pools.is_empty() {
        return Err(invalid(
            "payloadPools",
            0u8,
            "an announce names at least one pool",
        ));
    }
    ShmUri::parse(&a.header_region_uri)?;
    for (i, p) in a.pools.iter().enumerate() {
        if p.pool_id == 0 {
            return Err(invalid("poolId", 0u16, "pool 0 is the header ring"));
        }
        if a.pools[..i].iter().any(|q| q.pool_id == p.pool_id) {
            return Err(invalid("poolId", p.pool_id, "announced twice"));
        }
        if p.nslots != a.header_nslots {
            return Err(Error::Mismatch {
                field: "poolNslots",
                want: a.header_nslots.into(),
                got: p.nslots.into(),
            });
        }
        check_stride(p.stride_bytes)?;
        ShmUri::parse(&p.region_uri)?;
    }
    Ok(())
}

/// What an announce did to a consumer's mappings (W-15.21-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Remap {
    /// The epoch it has mapped already: nothing changed.
    Same,
    /// Nothing was mapped; now this epoch is.
    Mapped {
        /// The epoch mapped.
        epoch: u64,
    },
    /// The old epoch was unmapped and the new one mapped.
    Remapped {
        /// The epoch unmapped.
        from: u64,
        /// The epoch mapped.
        to: u64,
    },
}

/// A consumer: maps what announces name, reads frames, counts drops across remaps.
#[derive(Debug)]
pub struct TpConsumer {
    allowed: AllowedDirs,
    stream_id: Option<u32>,
    mapped: Option<(ShmPoolAnnounce, Consumer)>,
    /// Counters of the epochs unmapped so far.
    past: Counters,
}

impl TpConsumer {
    /// A consumer that maps only regions under `allowed`.
    pub fn new(allowed: AllowedDirs) -> TpConsumer {
        TpConsumer {
            allowed,
            stream_id: None,
            mapped: None,
            past: Counters::default(),
        }
    }

    /// Takes an announce: the same epoch is a no-op; another epoch unmaps the old regions and
    /// maps the new ones (fail closed: on any error nothing stays mapped). An announce of
    /// another stream than the first one taken is refused.
    pub fn on_announce(&mut self, a: &ShmPoolAnnounce) -> Result<Remap> {
        if let Some(stream) = self.stream_id {
            if stream != a.stream_id {
                return Err(Error::Mismatch {
                    field: "streamId",
                    want: stream.into(),
                    got: a.stream_id.into(),
                });
            }
        }
        let old = self.mapped.as_ref().map(|(m, _)| m.epoch);
        if old == Some(a.epoch) {
            return Ok(Remap::Same);
        }
        // Unmap first: a rejected region must not be partly used.
        self.unmap();
        check_announce(a)?;
        let ring_uri = ShmUri::parse(&a.header_region_uri)?;
        let ring_sb = Superblock::header_ring(a.stream_id, a.epoch, a.header_nslots, 0, 0);
        let ring = Region::open_announced(&ring_uri, &self.allowed, &ring_sb)?;
        let mut pools = Vec::new();
        for p in &a.pools {
            let uri = ShmUri::parse(&p.region_uri)?;
            let sb =
                Superblock::payload_pool(a.stream_id, a.epoch, p.pool_id, p.nslots, p.stride_bytes, 0, 0);
            pools.push(Region::open_announced(&uri, &self.allowed, &sb)?);
        }
        self.stream_id = Some(a.stream_id);
        self.mapped = Some((a.clone(), Consumer::new(ring, pools)));
        Ok(match old {
            None => Remap::Mapped { epoch: a.epoch },
            Some(from) => Remap::Remapped { from, to: a.epoch },
        })
    }

    /// Unmaps whatever is mapped (a revoke, or a stale producer).
    pub fn unmap(&mut self) {
        if let Some((_, c)) = self.mapped.take() {
            self.past += c.counters();
        }
    }

    /// The epoch mapped, if any.
    pub fn epoch(&self) -> Option<u64> {
        self.mapped.as_ref().map(|(a, _)| a.epoch)
    }

    /// The activity time stamp now in the mapped ring's superblock (CLOCK_MONOTONIC ns), which
    /// a live producer refreshes every announce period.
    pub fn activity_ns(&self) -> Option<u64> {
        self.mapped.as_ref().map(|(_, c)| c.ring().activity_ns())
    }

    /// The announce of the mapped epoch.
    pub fn announce(&self) -> Option<&ShmPoolAnnounce> {
        self.mapped.as_ref().map(|(a, _)| a)
    }

    /// Reads the frame a descriptor names. A descriptor of another epoch than the one mapped
    /// (or of another stream) is dropped as [`Drop::Epoch`] and counted late (W-15.2-1); the
    /// next announce remaps.
    pub fn read(&mut self, d: &FrameDescriptor, out: &mut Vec<u8>) -> std::result::Result<Accepted, Drop> {
        self.consumer_for(d)?.read(d.seq, out)
    }

    /// Reads the frame a descriptor names without copying it (see
    /// [`Consumer::read_in_place`]): `f` sees the payload in the producer's pool.
    pub fn read_in_place<R>(
        &mut self,
        d: &FrameDescriptor,
        f: impl FnOnce(&[std::sync::atomic::AtomicU8]) -> R,
    ) -> std::result::Result<(Accepted, R), Drop> {
        self.consumer_for(d)?.read_in_place(d.seq, f)
    }

    /// The mapped epoch's consumer, if the descriptor is of it; a descriptor of another epoch
    /// or stream is counted late.
    fn consumer_for(&mut self, d: &FrameDescriptor) -> std::result::Result<&mut Consumer, Drop> {
        let Some((a, c)) = self.mapped.as_mut() else {
            return Err(Drop::Unmapped);
        };
        if d.epoch != a.epoch || d.stream_id != a.stream_id {
            self.past.drops_late += 1;
            return Err(Drop::Epoch {
                got: d.epoch,
                mapped: a.epoch,
            });
        }
        Ok(c)
    }

    /// The next frame, following the ring (no descriptors needed).
    pub fn next(&mut self, out: &mut Vec<u8>) -> std::result::Result<Accepted, Drop> {
        match self.mapped.as_mut() {
            Some((_, c)) => c.next(0, out),
            None => Err(Drop::Unmapped),
        }
    }

    /// Counters over every epoch mapped so far.
    pub fn counters(&self) -> Counters {
        let mut total = self.past;
        if let Some((_, c)) = &self.mapped {
            total += c.counters();
        }
        total
    }
}

/// The encoded announce kept in a file, so that consumers on this machine can find a producer's
/// regions before a control plane carries announces. Written whole and renamed into place, so a
/// reader never sees half of one.
#[derive(Debug, Clone)]
pub struct AnnounceFile {
    path: PathBuf,
}

impl AnnounceFile {
    /// The file `announce` in `dir`.
    pub fn in_dir(dir: &Path) -> AnnounceFile {
        AnnounceFile {
            path: dir.join("announce"),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the announce (atomically: a temporary file renamed over the old one).
    pub fn write(&self, a: &ShmPoolAnnounce) -> Result<()> {
        let bytes = a.encode().map_err(|e| invalid_codec(&self.path, e))?;
        let tmp = self.path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes).map_err(|e| io_err(&tmp, "write", e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| io_err(&self.path, "rename into", e))
    }

    /// Reads the announce.
    pub fn read(&self) -> Result<ShmPoolAnnounce> {
        let bytes = std::fs::read(&self.path).map_err(|e| io_err(&self.path, "read", e))?;
        ShmPoolAnnounce::decode(&bytes).map_err(|e| invalid_codec(&self.path, e))
    }

    /// Removes the file.
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn io_err(path: &Path, what: &'static str, e: std::io::Error) -> Error {
    Error::Io {
        what,
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}

fn invalid_codec(path: &Path, e: crate::codec::CodecError) -> Error {
    Error::Io {
        what: "decode the announce in",
        path: path.to_path_buf(),
        detail: e.to_string(),
    }
}
