//! References to buffers: RAII guards for this process, and tokens for other processes.

use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU8, Ordering::*};

use super::layout::{
    BufferMeta, Storage, MAX_CONTENT_TYPE, MAX_PRODUCER, MAX_USER_METADATA, META_CONTENT_TYPE, META_PRODUCER,
    META_SEQUENCE, META_TENSOR, META_TIMESTAMP, META_USER,
};
use super::lifetime::{self, InnerPtr};
use super::protocol::{self, Access, TransferError};
use super::{BufferPool, PoolInner};
use crate::error::{Error, Result};
use crate::tensor::{DType, Element, TensorDesc, MAX_DIMS};

/// Names one life of one buffer of one pool: 16 bytes that any channel can carry to another
/// process, where [`BufferPool::get`] turns it back into a guard.
///
/// A token is not a reference: it does not keep the buffer alive. Once every holder has let go
/// and the buffer is reused, the token is stale and `get` fails with [`Error::StaleRef`]: it
/// never yields another life's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BufferRef {
    pool_tag: u32,
    index: u32,
    generation: u64,
}

impl BufferRef {
    /// Size of the serialized form.
    pub const SIZE: usize = 16;

    /// A token from its parts (the pool tag is the low 32 bits of [`BufferPool::pool_id`]).
    pub fn new(pool_tag: u32, index: u32, generation: u64) -> Self {
        BufferRef {
            pool_tag,
            index,
            generation,
        }
    }

    /// The buffer's index in its pool.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The life of the buffer this token names.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The low 32 bits of the pool's identity.
    pub fn pool_tag(&self) -> u32 {
        self.pool_tag
    }

    /// Little-endian `index:u32 | pool_tag:u32 | generation:u64`.
    pub fn to_bytes(&self) -> [u8; Self::SIZE] {
        let mut b = [0u8; Self::SIZE];
        b[0..4].copy_from_slice(&self.index.to_le_bytes());
        b[4..8].copy_from_slice(&self.pool_tag.to_le_bytes());
        b[8..16].copy_from_slice(&self.generation.to_le_bytes());
        b
    }

    /// Parses [`to_bytes`](Self::to_bytes) output.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let b: &[u8; Self::SIZE] = bytes
            .try_into()
            .map_err(|_| Error::MalformedRef(format!("{} bytes, expected {}", bytes.len(), Self::SIZE)))?;
        let word = |r: std::ops::Range<usize>| b[r].try_into().expect("fixed range");
        let token = BufferRef {
            index: u32::from_le_bytes(word(0..4)),
            pool_tag: u32::from_le_bytes(word(4..8)),
            generation: u64::from_le_bytes(b[8..16].try_into().expect("fixed range")),
        };
        if token.pool_tag == 0 || token.generation == 0 {
            return Err(Error::MalformedRef("zero pool tag or generation".into()));
        }
        Ok(token)
    }
}

impl fmt::Display for BufferRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}/{}@{}", self.pool_tag, self.index, self.generation)
    }
}

/// Another process attached to the same pool, to hand buffers to (see [`BufferPool::peer`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    slot: usize,
    pid: u32,
    owner: u64,
}

impl Peer {
    pub(crate) fn new(slot: usize, pid: u32, owner: u64) -> Self {
        Peer { slot, pid, owner }
    }

    /// The peer's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

/// Shared, read-only access to one buffer. Cloning adds a reference (no shared-memory write);
/// dropping the last one in any process frees the buffer.
///
/// A guard keeps its pool attached and mapped by itself: dropping every [`BufferPool`] handle
/// first is fine.
pub struct Buffer {
    ptr: InnerPtr,
    index: u32,
    generation: u64,
}

/// Exclusive, read-write access to one buffer: no other reference to it exists anywhere.
pub struct BufferMut {
    ptr: InnerPtr,
    index: u32,
    generation: u64,
}

impl Buffer {
    pub(crate) fn new(ptr: InnerPtr, index: u32, generation: u64) -> Self {
        Buffer {
            ptr,
            index,
            generation,
        }
    }

    /// Turns this reference into exclusive write access, if it is the only one anywhere (and
    /// not a frame received by a stream subscriber: those are mapped read-only).
    pub fn try_into_mut(self) -> std::result::Result<BufferMut, Buffer> {
        let pool = self.inner();
        if !pool.read_only && protocol::try_upgrade(&pool.map, pool, pool.me, self.index) {
            let this = std::mem::ManuallyDrop::new(self);
            Ok(BufferMut {
                ptr: this.ptr,
                index: this.index,
                generation: this.generation,
            })
        } else {
            Err(self)
        }
    }

    /// Gives each of `peers` its own reference, keeping this one. Each peer adopts it with
    /// [`BufferPool::get`] (or [`BufferPool::get_mut`]) on the token; its exit releases it.
    pub fn share_with(&self, peers: &[Peer]) -> Result<()> {
        transfer(self.inner(), self.index, peers, false)
    }

    /// Moves this reference to `peers` (each gets one) and returns the token they use.
    pub fn send(self, peers: &[Peer]) -> Result<BufferRef> {
        transfer(self.inner(), self.index, peers, true)?;
        let token = self.token();
        std::mem::forget(self); // the reference went to the peers
        after_release();
        Ok(token)
    }

    /// Keeps the reference without a guard; [`BufferPool::release_raw`] drops it later (for
    /// foreign-function interfaces). It is returned anyway when this process detaches or dies.
    ///
    /// The reference keeps this process attached to the pool until it is released.
    pub fn into_raw(self) -> BufferRef {
        let token = self.token();
        std::mem::forget(self);
        token
    }
}

impl Clone for Buffer {
    fn clone(&self) -> Self {
        let pool = self.inner();
        // Our own reference pins this life, so only the 2^30 local-reference limit can fail.
        protocol::get(
            &pool.map,
            pool,
            pool.me,
            self.index,
            self.generation,
            Access::Read,
        )
        .expect("too many references to one buffer in this process");
        Buffer::new(self.ptr, self.index, self.generation)
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        release(self.ptr, self.index);
    }
}

impl BufferMut {
    /// A buffer just taken from the free set: its metadata is reset to "raw bytes".
    #[inline]
    pub(crate) fn fresh(ptr: InnerPtr, index: u32, generation: u64) -> Self {
        // SAFETY: the caller's handle keeps the attachment alive.
        unsafe { ptr.0.as_ref() }.map.meta(index).flags.store(0, Relaxed);
        BufferMut {
            ptr,
            index,
            generation,
        }
    }

    /// The attachment this guard belongs to.
    pub(crate) fn pool_ptr(&self) -> std::ptr::NonNull<super::PoolInner> {
        self.ptr.0
    }

    /// Exclusive access obtained by `get_mut`: the metadata is what the previous holder left.
    pub(crate) fn adopt(ptr: InnerPtr, index: u32, generation: u64) -> Self {
        BufferMut {
            ptr,
            index,
            generation,
        }
    }

    /// Ends writing: from now on the buffer is read-only and other processes can `get` it.
    pub fn freeze(self) -> Buffer {
        let this = std::mem::ManuallyDrop::new(self);
        let pool = this.inner();
        protocol::freeze(&pool.map, pool, pool.me, this.index);
        Buffer::new(this.ptr, this.index, this.generation)
    }

    /// Moves this buffer to `peers` (each gets a reference) and returns their token. Sending to
    /// one peer passes exclusive ownership: it may take write access with `get_mut`.
    pub fn send(self, peers: &[Peer]) -> Result<BufferRef> {
        let pool = self.inner();
        let to = peer_bits(pool, peers)?;
        let token = self.token();
        protocol::transfer_writer(&pool.map, pool, self.index, to);
        std::mem::forget(self); // the write guard went to the peers
        after_release();
        Ok(token)
    }

    /// All of the buffer's bytes, writable; empty for a device pool (see
    /// [`Buffer::device_offset`]).
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        if self.inner().map.storage == Storage::Device {
            return &mut [];
        }
        let len = self.len();
        // SAFETY: WRITER in the holder word (set when this guard was made) excludes every other
        // reference in every process, and `&mut self` excludes other uses of this guard; the
        // range is this buffer's, inside the arena.
        unsafe { std::slice::from_raw_parts_mut(self.inner().map.buffer_ptr(self.index), len) }
    }

    /// The tensor's elements as a mutable slice (contiguous tensors of dtype `T` only).
    pub fn as_mut_slice<T: Element>(&mut self) -> Result<&mut [T]> {
        self.host_only()?;
        let desc = self.tensor()?;
        let base = self.inner().map.buffer_ptr(self.index);
        let n = desc.check_view::<T>(base as usize)?;
        // SAFETY: check_view verified dtype, contiguity and alignment; tensor() validated that
        // the elements lie inside this buffer; exclusivity as in `bytes_mut`.
        Ok(unsafe { std::slice::from_raw_parts_mut(base.add(desc.byte_offset() as usize).cast::<T>(), n) })
    }

    /// Describes the buffer's contents as a tensor; it must fit the buffer.
    pub fn set_tensor(&mut self, desc: &TensorDesc) -> Result<()> {
        desc.validate_for(self.len() as u64)?;
        let m = self.meta();
        m.dtype.store(u32::from(desc.dtype().code()), Relaxed);
        m.ndim.store(desc.ndim() as u32, Relaxed);
        m.byte_offset.store(desc.byte_offset(), Relaxed);
        for d in 0..MAX_DIMS {
            m.shape[d].store(desc.shape().get(d).copied().unwrap_or(0), Relaxed);
            m.strides[d].store(desc.strides().get(d).copied().unwrap_or(0), Relaxed);
        }
        self.set_flag(META_TENSOR, true);
        Ok(())
    }

    /// Forgets the tensor description: the buffer is raw bytes again.
    pub fn clear_tensor(&mut self) {
        self.set_flag(META_TENSOR, false);
    }

    /// Sets the producer's timestamp (nanoseconds; the clock is the producer's choice).
    pub fn set_timestamp_ns(&mut self, ns: u64) {
        self.meta().timestamp_ns.store(ns, Relaxed);
        self.set_flag(META_TIMESTAMP, true);
    }

    /// Whether a timestamp was set since the buffer was acquired.
    pub fn has_timestamp(&self) -> bool {
        self.meta().flags.load(Relaxed) & META_TIMESTAMP != 0
    }

    /// Sets the producer's sequence number.
    pub fn set_sequence(&mut self, seq: u64) {
        self.meta().sequence.store(seq, Relaxed);
        self.set_flag(META_SEQUENCE, true);
    }

    /// Sets the content type (at most 32 bytes of UTF-8), e.g. `image/rgb`.
    pub fn set_content_type(&mut self, content_type: &str) -> Result<()> {
        let m = self.meta();
        let bytes = content_type.as_bytes();
        write_field(
            &m.content_type,
            &m.content_type_len,
            bytes,
            "content type",
            MAX_CONTENT_TYPE,
        )?;
        self.set_flag(META_CONTENT_TYPE, true);
        Ok(())
    }

    /// Sets the producer's name (at most 32 bytes of UTF-8).
    pub fn set_producer(&mut self, producer: &str) -> Result<()> {
        let m = self.meta();
        write_field(
            &m.producer,
            &m.producer_len,
            producer.as_bytes(),
            "producer name",
            MAX_PRODUCER,
        )?;
        self.set_flag(META_PRODUCER, true);
        Ok(())
    }

    /// Sets the user metadata (at most 192 bytes).
    pub fn set_user_metadata(&mut self, bytes: &[u8]) -> Result<()> {
        let m = self.meta();
        write_field(&m.user, &m.user_len, bytes, "user metadata", MAX_USER_METADATA)?;
        self.set_flag(META_USER, true);
        Ok(())
    }

    /// Marks a metadata field set or unset. Only the writer changes the flags: load and store do.
    fn set_flag(&mut self, bit: u32, on: bool) {
        let flags = &self.meta().flags;
        let old = flags.load(Relaxed);
        flags.store(if on { old | bit } else { old & !bit }, Relaxed);
    }
}

impl Drop for BufferMut {
    fn drop(&mut self) {
        // SAFETY: this guard keeps the attachment alive until its write access is given up.
        let pool = unsafe { self.ptr.0.as_ref() };
        protocol::release_writer(&pool.map, pool, self.index);
        // From here on the attachment may be gone (see `lifetime`): only statics are touched.
        after_release();
    }
}

fn release(ptr: InnerPtr, index: u32) {
    // SAFETY: the guard being dropped keeps the attachment alive until its reference is gone.
    let pool = unsafe { ptr.0.as_ref() };
    if protocol::release(&pool.map, pool, pool.me, index).is_err() {
        // Unreachable through the guards; reported rather than ignored if the table was damaged.
        tracing::error!(pool = %pool.map.label, index, "released a buffer this process did not hold");
        return;
    }
    // From here on the attachment may be gone (see `lifetime`): only statics are touched.
    after_release();
}

/// After a reference was given up: finalise attachments whose handles and guards are all gone.
#[inline(always)]
pub(crate) fn after_release() {
    if lifetime::ORPHANS_PENDING.load(Relaxed) {
        lifetime::sweep_orphans();
    }
}

/// The holder bits of `peers`, each checked to still be the process it was when looked up
/// (slots are reused).
fn peer_bits(pool: &PoolInner, peers: &[Peer]) -> Result<u64> {
    if peers.is_empty() {
        return Err(Error::InvalidConfig("a hand-off needs at least one peer".into()));
    }
    let mut to = 0u64;
    for p in peers {
        let now = pool.map.slots()[p.slot].owner.load(Acquire);
        if now != p.owner || p.slot == pool.slot {
            return Err(Error::PeerNotAttached {
                pid: p.pid,
                pool: pool.map.label.clone(),
            });
        }
        to |= protocol::slot_bit(p.slot);
    }
    Ok(to)
}

fn transfer(pool: &PoolInner, index: u32, peers: &[Peer], consume: bool) -> Result<()> {
    let to = peer_bits(pool, peers)?;
    protocol::transfer(&pool.map, pool, pool.me, index, to, consume).map_err(|e| match e {
        TransferError::NotHeld => Error::DoubleRelease {
            index,
            pool: pool.map.label.clone(),
        },
        TransferError::RecipientHolds(_) => Error::Busy {
            index,
            reason: "a recipient already holds it (or was already handed it); it can get() it",
        },
    })
}

fn write_field(
    dst: &[AtomicU8],
    len: &std::sync::atomic::AtomicU32,
    src: &[u8],
    field: &'static str,
    max: usize,
) -> Result<()> {
    if src.len() > max {
        return Err(Error::MetadataTooLong {
            field,
            len: src.len(),
            max,
        });
    }
    for (d, s) in dst.iter().zip(src) {
        d.store(*s, Relaxed);
    }
    len.store(src.len() as u32, Relaxed);
    Ok(())
}

fn read_field(src: &[AtomicU8], len: &std::sync::atomic::AtomicU32) -> Vec<u8> {
    let n = (len.load(Relaxed) as usize).min(src.len());
    src[..n].iter().map(|b| b.load(Relaxed)).collect()
}

/// Reads and validates a buffer's tensor description.
pub(crate) fn read_tensor(m: &BufferMeta, buffer_len: u64) -> std::result::Result<TensorDesc, String> {
    if m.flags.load(Relaxed) & META_TENSOR == 0 {
        return Ok(TensorDesc::bytes(buffer_len));
    }
    let code = m.dtype.load(Relaxed);
    let dtype = DType::from_code(code).ok_or_else(|| format!("unknown dtype code {code}"))?;
    let ndim = m.ndim.load(Relaxed) as usize;
    if ndim > MAX_DIMS {
        return Err(format!("{ndim} dimensions"));
    }
    // On the stack: this runs for every frame a subscriber receives, and an allocation there
    // is measurable when frames are far apart (the allocator's state is out of cache by then).
    let shape: [u64; MAX_DIMS] = std::array::from_fn(|d| m.shape[d].load(Relaxed));
    let strides: [i64; MAX_DIMS] = std::array::from_fn(|d| m.strides[d].load(Relaxed));
    let desc = TensorDesc::strided(
        dtype,
        &shape[..ndim],
        &strides[..ndim],
        m.byte_offset.load(Relaxed),
    )
    .map_err(|e| e.to_string())?;
    desc.validate_for(buffer_len).map_err(|e| e.to_string())?;
    Ok(desc)
}

/// Read access shared by [`Buffer`] and [`BufferMut`].
macro_rules! read_access {
    ($t:ty) => {
        impl $t {
            /// The buffer's index in its pool.
            pub fn index(&self) -> u32 {
                self.index
            }

            /// The life of the buffer this guard holds.
            pub fn generation(&self) -> u64 {
                self.generation
            }

            /// The token naming this buffer's current life, for other processes.
            pub fn token(&self) -> BufferRef {
                BufferRef::new(self.inner().map.pool_id as u32, self.index, self.generation)
            }

            /// A handle to the pool this buffer belongs to.
            pub fn pool(&self) -> BufferPool {
                lifetime::handle_from_guard(self.ptr);
                BufferPool { ptr: self.ptr }
            }

            /// Where the buffer starts in a device pool's allocation (`index × stride`);
            /// `None` for host storage.
            pub fn device_offset(&self) -> Option<u64> {
                let map = &self.inner().map;
                (map.storage == Storage::Device).then(|| u64::from(self.index) * map.layout.stride)
            }

            fn host_only(&self) -> Result<()> {
                if self.inner().map.storage == Storage::Device {
                    return Err(Error::DeviceStorage {
                        pool: self.inner().map.label.clone(),
                    });
                }
                Ok(())
            }

            /// The buffer's size in bytes (the pool's buffer size).
            pub fn len(&self) -> usize {
                self.inner().map.layout.config.size as usize
            }

            /// Never true: buffers have at least one byte.
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            /// All of the buffer's bytes; empty for a device pool, whose bytes are not in host
            /// memory (see [`device_offset`](Self::device_offset)).
            pub fn bytes(&self) -> &[u8] {
                if self.inner().map.storage == Storage::Device {
                    return &[];
                }
                // SAFETY: while this guard lives the buffer cannot be freed (our holder bit), and
                // no writer exists besides, at most, this very guard (then `&self` excludes
                // `&mut` uses); the range is this buffer's, inside the arena.
                unsafe { std::slice::from_raw_parts(self.inner().map.buffer_ptr(self.index), self.len()) }
            }

            /// The buffer's tensor description (raw `U8` bytes if none was set). Validated: a
            /// description that does not fit the buffer is reported as corrupt.
            pub fn tensor(&self) -> Result<TensorDesc> {
                read_tensor(self.meta(), self.len() as u64).map_err(|detail| Error::Corrupt {
                    path: self.inner().map.path_buf(),
                    detail: format!("buffer {}'s tensor description: {detail}", self.index),
                })
            }

            /// The tensor's elements as a slice (contiguous tensors of dtype `T` only).
            pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
                self.host_only()?;
                let desc = self.tensor()?;
                let base = self.inner().map.buffer_ptr(self.index);
                let n = desc.check_view::<T>(base as usize)?;
                // SAFETY: dtype, contiguity, alignment checked; elements inside the buffer
                // (validated); no writer while we read, as in `bytes`.
                Ok(unsafe {
                    std::slice::from_raw_parts(base.add(desc.byte_offset() as usize).cast::<T>(), n)
                })
            }

            /// The producer's timestamp in nanoseconds (0 if unset).
            pub fn timestamp_ns(&self) -> u64 {
                let m = self.meta();
                if m.flags.load(Relaxed) & META_TIMESTAMP == 0 {
                    return 0;
                }
                m.timestamp_ns.load(Relaxed)
            }

            /// The producer's sequence number (0 if unset).
            pub fn sequence(&self) -> u64 {
                let m = self.meta();
                if m.flags.load(Relaxed) & META_SEQUENCE == 0 {
                    return 0;
                }
                m.sequence.load(Relaxed)
            }

            /// The content type (empty if unset).
            pub fn content_type(&self) -> String {
                let m = self.meta();
                if m.flags.load(Relaxed) & META_CONTENT_TYPE == 0 {
                    return String::new();
                }
                String::from_utf8_lossy(&read_field(&m.content_type, &m.content_type_len)).into_owned()
            }

            /// The producer's name (empty if unset).
            pub fn producer(&self) -> String {
                let m = self.meta();
                if m.flags.load(Relaxed) & META_PRODUCER == 0 {
                    return String::new();
                }
                String::from_utf8_lossy(&read_field(&m.producer, &m.producer_len)).into_owned()
            }

            /// The user metadata (empty if unset).
            pub fn user_metadata(&self) -> Vec<u8> {
                let m = self.meta();
                if m.flags.load(Relaxed) & META_USER == 0 {
                    return Vec::new();
                }
                read_field(&m.user, &m.user_len)
            }

            fn meta(&self) -> &BufferMeta {
                self.inner().map.meta(self.index)
            }

            fn inner(&self) -> &PoolInner {
                // SAFETY: this guard's reference keeps the attachment alive (see `lifetime`).
                unsafe { self.ptr.0.as_ref() }
            }
        }

        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($t))
                    .field("pool", &self.inner().map.label)
                    .field("index", &self.index)
                    .field("generation", &self.generation)
                    .finish()
            }
        }

        impl Deref for $t {
            type Target = [u8];
            fn deref(&self) -> &[u8] {
                self.bytes()
            }
        }
    };
}

read_access!(Buffer);
read_access!(BufferMut);

impl DerefMut for BufferMut {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.bytes_mut()
    }
}
