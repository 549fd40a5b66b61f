//! # xmem-device
//!
//! Device pools: a [`BufferPool`] whose buffers live in one device allocation instead of its
//! own file. The pool's holder words decide buffer reuse exactly as for host pools; this crate
//! adds the allocation and its lifetime:
//!
//! - the creator allocates one exportable block (CUDA's virtual-memory API, or a memfd
//!   [standing in](HostStandIn) for it where there is no GPU) and records it in the pool;
//! - every process that attaches receives the block's descriptor from a live holder over a Unix
//!   socket (`SCM_RIGHTS`, credentials checked both ways: [`xmem_core::os::fdpass`]), imports
//!   and maps it, keeps the descriptor and serves it in turn;
//! - so the memory lives while any holder does, whoever created it: a SIGKILLed creator leaves
//!   it to the others, and it is freed when the last one goes, the moment the pool's name does.
//!
//! ```no_run
//! use xmem_device::{DevicePool, HostStandIn};
//! # fn main() -> xmem_device::Result<()> {
//! let builder = xmem_core::BufferPool::builder("frames").buffers(4).buffer_size(1 << 20);
//! let pool = DevicePool::create(builder, HostStandIn::new("frames"))?;
//! let mut frame = pool.pool().acquire()?;
//! pool.fill(&frame, 7)?;                          // on the device
//! pool.synchronize()?;                            // written before anyone is told
//! let token = frame.freeze().token();
//! // … in another process:
//! let pool = DevicePool::open_auto(xmem_core::BufferPool::builder("frames"))?;
//! let frame = pool.pool().get(token)?;
//! let ptr = pool.device_ptr(&frame)?;             // for a kernel, or DLPack
//! # let _ = ptr; Ok(()) }
//! ```

mod backend;
#[cfg(feature = "cuda")]
mod cuda;
mod error;
mod stand_in;
mod stream;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use xmem_core::os::fdpass::{self, FdBroker, FdPassError};
use xmem_core::{Buffer, BufferMut, BufferPool, DeviceKind, DeviceRecord, PoolBuilder};

pub use backend::{DeviceBackend, DeviceMapping};
#[cfg(feature = "cuda")]
pub use cuda::CudaDevice;
pub use error::{DeviceError, Result};
pub use stand_in::HostStandIn;
pub use stream::{DevicePublishError, DevicePublisher, DeviceSubscriber};

/// The backend a user names: `"cuda"` (device 0), `"cuda:N"`, or `"host"` (the stand-in,
/// its memfd labelled `label`), so that the CLI, Python and Rust programs take the same words.
///
/// A build without the `cuda` feature answers `cuda` with [`DeviceError::Unavailable`].
pub fn backend_named(device: &str, label: &str) -> Result<Box<dyn DeviceBackend>> {
    let ordinal = match device {
        "host" => return Ok(Box::new(HostStandIn::new(label))),
        "cuda" => 0,
        d => match d.strip_prefix("cuda:").map(str::parse::<i32>) {
            Some(Ok(n)) if n >= 0 => n,
            _ => {
                return Err(DeviceError::UnknownDevice {
                    given: device.to_string(),
                })
            }
        },
    };
    cuda_backend(ordinal)
}

#[cfg(feature = "cuda")]
fn cuda_backend(ordinal: i32) -> Result<Box<dyn DeviceBackend>> {
    Ok(Box::new(CudaDevice::new(ordinal)?))
}

#[cfg(not(feature = "cuda"))]
fn cuda_backend(_ordinal: i32) -> Result<Box<dyn DeviceBackend>> {
    Err(DeviceError::Unavailable {
        kind: DeviceKind::Cuda,
        reason: "this build of xmem has no CUDA support: build it with the `cuda` feature".into(),
    })
}

/// How long an opener keeps asking holders for the descriptor: covers a creator between
/// making the pool and starting its broker.
const HAND_OVER_TIMEOUT: Duration = Duration::from_secs(2);

/// A device pool attached in this process: the pool, this process's mapping of the
/// allocation, and the broker that hands its descriptor to the next process.
pub struct DevicePool {
    // Drop order: unmap, stop serving and close the descriptor (with this process's last
    // attachment), then leave the pool (whose last holder removes its name).
    mapping: Box<dyn DeviceMapping>,
    served: Arc<Served>,
    backend: Box<dyn DeviceBackend>,
    record: DeviceRecord,
    answered_by: Option<u32>,
    pool: BufferPool,
}

impl std::fmt::Debug for DevicePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevicePool")
            .field("pool", &self.pool.name())
            .field("device", &self.backend.describe())
            .field("bytes", &self.record.bytes)
            .finish()
    }
}

/// What one process holds of a pool's allocation, shared by its attachments: the descriptor,
/// and the broker that serves it (one per process and pool: brokers are named by both).
struct Served {
    // The broker first: it stops serving before the descriptor closes.
    broker: FdBroker,
    fd: Arc<OwnedFd>,
}

/// What this process serves, by pool id: a second attachment in the same process (a subscriber
/// beside its publisher) shares it instead of asking a broker (the others may all be gone, and
/// this process's own broker is not asked).
static SERVED: Mutex<Option<HashMap<u64, Weak<Served>>>> = Mutex::new(None);

fn served(pool_id: u64) -> Option<Arc<Served>> {
    let held = SERVED.lock().unwrap_or_else(|e| e.into_inner());
    held.as_ref()?.get(&pool_id)?.upgrade()
}

/// Serves `fd` for `pool`, or shares what this process serves for it already.
fn serve(pool: &BufferPool, fd: OwnedFd) -> Result<Arc<Served>> {
    let mut held = SERVED.lock().unwrap_or_else(|e| e.into_inner());
    let map = held.get_or_insert_with(HashMap::new);
    map.retain(|_, w| w.strong_count() > 0);
    if let Some(s) = map.get(&pool.pool_id()).and_then(Weak::upgrade) {
        return Ok(s);
    }
    let fd = Arc::new(fd);
    let name = broker_name(pool.pool_id(), std::process::id());
    let broker = FdBroker::serve(&name, fd.clone(), pool.admission()?).map_err(|e| DeviceError::Backend {
        op: "serve the device descriptor",
        detail: e.to_string(),
    })?;
    let s = Arc::new(Served { broker, fd });
    map.insert(pool.pool_id(), Arc::downgrade(&s));
    Ok(s)
}

/// The abstract socket name at which process `pid` serves pool `pool_id`'s descriptor.
pub fn broker_name(pool_id: u64, pid: u32) -> String {
    format!("xmem-device/{pool_id:016x}/{pid}")
}

impl DevicePool {
    /// Allocates the device memory for `builder`'s buffers on `backend` and creates the pool.
    pub fn create(builder: PoolBuilder, backend: impl DeviceBackend + 'static) -> Result<DevicePool> {
        let backend: Box<dyn DeviceBackend> = Box::new(backend);
        let builder = builder.alignment_at_least(backend.min_alignment());
        let need = builder.device_bytes_needed()?;
        let g = backend.granularity().max(1);
        let bytes = need.div_ceil(g) * g;
        let fd = backend.allocate(bytes)?;
        let mapping = backend.import(&fd, bytes, false)?;
        let record = DeviceRecord {
            kind: backend.kind(),
            uuid: backend.uuid(),
            bytes,
        };
        let pool = builder.device_storage(record).create()?;
        Self::finish(pool, backend, fd, mapping, None)
    }

    /// Opens a device pool on `backend`, which must be the pool's kind and device.
    pub fn open(builder: PoolBuilder, backend: impl DeviceBackend + 'static) -> Result<DevicePool> {
        let pool = builder.open()?;
        Self::attach(pool, Box::new(backend), false)
    }

    /// Opens a device pool on the backend its header names: the host stand-in, or the CUDA
    /// device with the recorded UUID (with the `cuda` feature).
    pub fn open_auto(builder: PoolBuilder) -> Result<DevicePool> {
        Self::open_auto_as(builder, false)
    }

    /// [`open_auto`](Self::open_auto) for a process that only reads the buffers (a stream's
    /// subscriber): the allocation is mapped read-only here (`PROT_READ` pages for the host
    /// stand-in; `CU_MEM_ACCESS_FLAGS_PROT_READ` on CUDA where the driver grants it, else
    /// read-write with a warning), so a stray write faults instead of changing a frame others
    /// read. It guards against mistakes, not against a hostile process of the same user.
    pub fn open_auto_read_only(builder: PoolBuilder) -> Result<DevicePool> {
        Self::open_auto_as(builder, true)
    }

    fn open_auto_as(builder: PoolBuilder, read_only: bool) -> Result<DevicePool> {
        let pool = builder.open()?;
        let record = device_record(&pool)?;
        let backend: Box<dyn DeviceBackend> = match record.kind {
            DeviceKind::HostStandIn => Box::new(HostStandIn::new(pool.name())),
            #[cfg(feature = "cuda")]
            DeviceKind::Cuda => Box::new(CudaDevice::by_uuid(record.uuid)?),
            kind => {
                return Err(DeviceError::Unavailable {
                    kind,
                    reason: "this build has no support for it (build with the `cuda` feature)".into(),
                })
            }
        };
        Self::attach(pool, backend, read_only)
    }

    fn attach(pool: BufferPool, backend: Box<dyn DeviceBackend>, read_only: bool) -> Result<DevicePool> {
        let record = device_record(&pool)?;
        if record.kind != backend.kind() || record.uuid != backend.uuid() {
            return Err(DeviceError::WrongDevice {
                pool: pool.name().to_string(),
                want: format!("{} {}", record.kind, record.uuid_text()),
                have: backend.describe(),
            });
        }
        let (fd, answered_by) = match served(pool.pool_id()) {
            Some(s) => (
                s.fd.try_clone().map_err(|e| DeviceError::Backend {
                    op: "dup",
                    detail: e.to_string(),
                })?,
                std::process::id(),
            ),
            None => receive_descriptor(&pool)?,
        };
        let mapping = backend.import(&fd, record.bytes, read_only)?;
        Self::finish(pool, backend, fd, mapping, Some(answered_by))
    }

    fn finish(
        pool: BufferPool,
        backend: Box<dyn DeviceBackend>,
        fd: OwnedFd,
        mapping: Box<dyn DeviceMapping>,
        answered_by: Option<u32>,
    ) -> Result<DevicePool> {
        let record = device_record(&pool)?;
        let served = serve(&pool, fd)?;
        Ok(DevicePool {
            mapping,
            served,
            backend,
            record,
            answered_by,
            pool,
        })
    }

    /// The pool: acquire, get, tokens, as for host pools.
    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }

    /// The allocation as the pool records it.
    pub fn record(&self) -> DeviceRecord {
        self.record
    }

    /// The pid of the holder that handed this process the descriptor (`None` for the creator).
    pub fn received_from(&self) -> Option<u32> {
        self.answered_by
    }

    /// The device, in words.
    pub fn describe_device(&self) -> String {
        self.backend.describe()
    }

    /// The buffer's address in this process (a device pointer for CUDA). The buffer must be
    /// of this pool: from its handle, or from a stream subscriber's attachment to it.
    pub fn device_ptr(&self, buffer: &Buffer) -> Result<u64> {
        self.same_pool(buffer.token().pool_tag())?;
        Ok(self.mapping.base() + self.offset_of(buffer.index()))
    }

    /// The writable buffer's address in this process.
    pub fn device_ptr_mut(&self, buffer: &BufferMut) -> Result<u64> {
        self.same_pool(buffer.token().pool_tag())?;
        Ok(self.mapping.base() + self.offset_of(buffer.index()))
    }

    /// Checks a buffer's pool tag (the low half of its pool's id, which its token carries).
    fn same_pool(&self, tag: u32) -> Result<()> {
        if tag != self.pool.pool_id() as u32 {
            return Err(DeviceError::Pool(xmem_core::Error::WrongPool {
                reference: format!("a buffer of the pool tagged {tag:08x}"),
                pool: self.pool.name().to_string(),
            }));
        }
        Ok(())
    }

    fn offset_of(&self, index: u32) -> u64 {
        u64::from(index) * self.pool.stride()
    }

    fn check(&self, at: u64, len: u64) -> Result<()> {
        let size = self.pool.buffer_size();
        match at.checked_add(len) {
            Some(end) if end <= size => Ok(()),
            _ => Err(DeviceError::OutOfRange {
                offset: at,
                len,
                size,
            }),
        }
    }

    /// Copies `src` into the writable buffer at byte `at`.
    pub fn write(&self, buffer: &BufferMut, at: u64, src: &[u8]) -> Result<()> {
        self.same_pool(buffer.token().pool_tag())?;
        self.check(at, src.len() as u64)?;
        self.mapping
            .copy_from_host(self.offset_of(buffer.index()) + at, src)
    }

    /// Sets every byte of the writable buffer to `byte`.
    pub fn fill(&self, buffer: &BufferMut, byte: u8) -> Result<()> {
        self.same_pool(buffer.token().pool_tag())?;
        let size = self.pool.buffer_size();
        self.mapping.fill(self.offset_of(buffer.index()), size, byte)
    }

    /// Copies the buffer's bytes from `at` into `dst`.
    pub fn read(&self, buffer: &Buffer, at: u64, dst: &mut [u8]) -> Result<()> {
        self.same_pool(buffer.token().pool_tag())?;
        self.check(at, dst.len() as u64)?;
        self.mapping
            .copy_to_host(self.offset_of(buffer.index()) + at, dst)
    }

    /// Copies the writable buffer's bytes from `at` into `dst` (a writer checking its work).
    pub fn read_own(&self, buffer: &BufferMut, at: u64, dst: &mut [u8]) -> Result<()> {
        self.same_pool(buffer.token().pool_tag())?;
        self.check(at, dst.len() as u64)?;
        self.mapping
            .copy_to_host(self.offset_of(buffer.index()) + at, dst)
    }

    /// Waits until this process's queued writes to the allocation are complete: call it before
    /// a frame's token goes to anyone (a stream publish, a token sent by hand).
    pub fn synchronize(&self) -> Result<()> {
        self.mapping.synchronize()
    }

    /// DLPack's `(device_type, device_id)` of the buffers in this process.
    pub fn dlpack_device(&self) -> (i32, i32) {
        self.backend.dlpack_device()
    }

    /// Waits until the work queued on a consumer's CUDA `stream` is complete (see
    /// [`DeviceMapping::wait_stream`]).
    pub fn wait_stream(&self, stream: usize) -> Result<()> {
        self.mapping.wait_stream(stream)
    }

    /// The descriptor this process holds and serves (a borrowed view: it stays open).
    pub fn descriptor(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.served.fd.as_fd()
    }

    /// The name this process serves the descriptor at.
    pub fn broker(&self) -> &str {
        self.served.broker.name()
    }
}

fn device_record(pool: &BufferPool) -> Result<DeviceRecord> {
    pool.device().ok_or_else(|| DeviceError::NotADevicePool {
        pool: pool.name().to_string(),
    })
}

/// Asks the pool's other live holders, in turn, for the allocation's descriptor, until one
/// answers or [`HAND_OVER_TIMEOUT`] passes (a holder may be between creating the pool and
/// serving; holders may die while asked).
fn receive_descriptor(pool: &BufferPool) -> Result<(OwnedFd, u32)> {
    let deadline = Instant::now() + HAND_OVER_TIMEOUT;
    let mut pause = Duration::from_micros(100);
    loop {
        let mut tried = Vec::new();
        let peers = pool.attached_peers();
        if peers.is_empty() {
            return Err(DeviceError::MemoryGone {
                pool: pool.name().to_string(),
            });
        }
        for pid in peers {
            let name = broker_name(pool.pool_id(), pid);
            match fdpass::request_fd(&name, pid, Duration::from_secs(1)) {
                Ok(fd) => return Ok((fd, pid)),
                // Refusals and impostors will not change by asking again.
                Err(e @ (FdPassError::Refused { .. } | FdPassError::Impostor { .. })) => {
                    return Err(DeviceError::Backend {
                        op: "receive the device descriptor",
                        detail: e.to_string(),
                    })
                }
                Err(e) => tried.push(format!("pid {pid}: {e}")),
            }
        }
        if Instant::now() >= deadline {
            return Err(DeviceError::NoHolderAnswered {
                pool: pool.name().to_string(),
                tried: tried.join("; "),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_are_read_alike_everywhere() {
        assert_eq!(
            backend_named("host", "t").unwrap().kind(),
            DeviceKind::HostStandIn
        );
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "CUDA", ""] {
            let e = backend_named(bad, "t").err().unwrap();
            assert!(matches!(e, DeviceError::UnknownDevice { .. }), "{bad}: {e}");
            assert!(e.to_string().contains("cuda:N"), "{e}");
        }
        // Without the feature, or without a driver or device, `cuda` says why it cannot.
        for name in ["cuda", "cuda:0"] {
            match backend_named(name, "t") {
                Ok(b) => assert_eq!(b.kind(), DeviceKind::Cuda),
                Err(e) => assert!(
                    matches!(
                        e,
                        DeviceError::Unavailable {
                            kind: DeviceKind::Cuda,
                            ..
                        }
                    ),
                    "{name}: {e}"
                ),
            }
        }
    }
}
