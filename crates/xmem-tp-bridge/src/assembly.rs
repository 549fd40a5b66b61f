//! Reassembling frames from chunks (tensor-pool digest §6, receiver): by offset, so chunks may
//! come in any order; identical duplicates are fine, overlapping or conflicting ones drop the
//! frame; a frame not complete within the timeout is dropped; memory is bounded by the caps
//! (one frame in assembly per stream, at most `max_payload_bytes`).

use std::time::{Duration, Instant};

use xmem_tensorpool::layout::SLOT_SIZE;

use crate::chunk::Chunk;

/// Why an assembly dropped a frame or a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Past `max_payload_bytes` (or the caller's stride cap).
    TooLarge,
    /// A chunk disagreeing with the frame's (count, length, trace id) or with bytes already
    /// received at the same place.
    Conflict,
    /// A chunk overlapping another of the frame at a different offset or length.
    Overlap,
    /// A bad CRC32C (integrity on).
    Crc,
    /// Not complete within the timeout, or replaced by a newer frame before it was.
    Incomplete,
    /// A chunk of an older frame than the one in assembly.
    Stale,
}

/// A frame complete: its slot header and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assembled {
    /// The frame.
    pub seq: u64,
    /// Its epoch at the source.
    pub epoch: u64,
    /// Its trace id.
    pub trace_id: u64,
    /// The raw 256-byte slot header chunk 0 carried.
    pub header: [u8; SLOT_SIZE],
    /// The payload.
    pub payload: Vec<u8>,
}

struct InProgress {
    epoch: u64,
    seq: u64,
    trace_id: u64,
    count: u32,
    header: Option<[u8; SLOT_SIZE]>,
    payload: Vec<u8>,
    /// (offset, length) of each chunk index received.
    got: Vec<Option<(u32, u32)>>,
    /// The same ranges by offset, to find an overlap in O(log n).
    ranges: std::collections::BTreeMap<u32, u32>,
    received: u32,
    started: Instant,
}

/// One stream's assembly.
pub struct Assembly {
    max_payload: u32,
    timeout: Duration,
    integrity: bool,
    current: Option<InProgress>,
    /// The newest (epoch, seq) completed or dropped: older chunks are stale.
    last: Option<(u64, u64)>,
    /// Frames abandoned because a newer one began before they completed.
    pub replaced: u64,
    /// The last frame's buffers, reused for the next (a 1080p frame is 6 MB: allocating and
    /// zeroing it anew for every frame costs as much as a copy). Only one frame's worth of
    /// memory is ever held, in assembly or here.
    spare: Vec<u8>,
    spare_got: Vec<Option<(u32, u32)>>,
}

impl Assembly {
    /// Frames up to `max_payload` bytes, `timeout` to complete one, CRC32C checked when
    /// `integrity`.
    pub fn new(max_payload: u32, timeout: Duration, integrity: bool) -> Assembly {
        Assembly {
            max_payload,
            timeout,
            integrity,
            current: None,
            last: None,
            replaced: 0,
            spare: Vec::new(),
            spare_got: Vec::new(),
        }
    }

    /// Takes back a completed frame's payload buffer, for the next frame.
    pub fn recycle(&mut self, payload: Vec<u8>) {
        if self.current.is_none() {
            self.spare = payload;
        }
    }

    /// Drops a frame whose time is up; returns whether one was.
    pub fn expire(&mut self, now: Instant) -> Option<Dropped> {
        if self
            .current
            .as_ref()
            .is_some_and(|c| now.duration_since(c.started) > self.timeout)
        {
            self.abandon();
            return Some(Dropped::Incomplete);
        }
        None
    }

    fn abandon(&mut self) {
        if let Some(c) = self.current.take() {
            self.last = Some((c.epoch, c.seq));
            (self.spare, self.spare_got) = (c.payload, c.got);
        }
    }

    /// Takes one chunk: `Ok(Some(frame))` when it completed one, `Ok(None)` when more are
    /// needed, `Err` when it or its frame was dropped (a dropped frame's later chunks are then
    /// stale).
    pub fn push(&mut self, c: &Chunk<'_>, now: Instant) -> Result<Option<Assembled>, Dropped> {
        if let Some((epoch, seq)) = self.last {
            if (c.epoch, c.seq) <= (epoch, seq) {
                return Err(Dropped::Stale);
            }
        }
        if self.integrity && (c.crc32c == 0 || c.crc32c != Chunk::checksum(c.header, c.payload)) {
            self.abandon_if(c);
            return Err(Dropped::Crc);
        }
        let newer = self
            .current
            .as_ref()
            .is_none_or(|cur| (c.epoch, c.seq) > (cur.epoch, cur.seq));
        if newer {
            if self.current.is_some() {
                // A newer frame began before this one completed: it will not.
                self.abandon();
                self.replaced += 1;
            }
            if c.payload_length > self.max_payload {
                self.last = Some((c.epoch, c.seq));
                return Err(Dropped::TooLarge);
            }
            // The reused buffer keeps the last frame's bytes where this one is no longer: they
            // are never seen, since a frame completes only once its chunks cover every byte.
            let mut payload = std::mem::take(&mut self.spare);
            payload.resize(c.payload_length as usize, 0);
            let mut got = std::mem::take(&mut self.spare_got);
            got.clear();
            got.resize(c.count as usize, None);
            self.current = Some(InProgress {
                epoch: c.epoch,
                seq: c.seq,
                trace_id: c.trace_id,
                count: c.count,
                header: None,
                payload,
                got,
                ranges: std::collections::BTreeMap::new(),
                received: 0,
                started: now,
            });
        }
        let cur = self.current.as_mut().expect("set above");
        if (c.epoch, c.seq) < (cur.epoch, cur.seq) {
            return Err(Dropped::Stale);
        }
        if c.count != cur.count
            || c.payload_length as usize != cur.payload.len()
            || c.trace_id != cur.trace_id
        {
            self.abandon();
            return Err(Dropped::Conflict);
        }
        let (off, len) = (c.offset, c.payload.len() as u32);
        let at = off as usize..(off + len) as usize;
        match cur.got[c.index as usize] {
            Some(prev) if prev == (off, len) => {
                // A duplicate: fine if identical.
                let same = cur.payload[at] == *c.payload
                    && c.header.is_none_or(|h| cur.header.is_some_and(|ch| ch[..] == *h));
                if !same {
                    self.abandon();
                    return Err(Dropped::Conflict);
                }
                return Ok(None);
            }
            Some(_) => {
                self.abandon();
                return Err(Dropped::Conflict);
            }
            None => {}
        }
        // Ranges received never overlap one another, so only the neighbours can overlap this one
        // (an empty chunk overlaps nothing).
        let before = cur.ranges.range(..=off).next_back();
        let after = cur.ranges.range(off..).next();
        let overlaps = len > 0
            && (before.is_some_and(|(&o, &l)| o + l > off)
                || after.is_some_and(|(&o, &l)| o < off + len && l > 0));
        if overlaps {
            self.abandon();
            return Err(Dropped::Overlap);
        }
        cur.payload[at].copy_from_slice(c.payload);
        if let Some(h) = c.header {
            let mut header = [0u8; SLOT_SIZE];
            header.copy_from_slice(h);
            cur.header = Some(header);
        }
        cur.got[c.index as usize] = Some((off, len));
        if len > 0 {
            cur.ranges.insert(off, len);
        }
        cur.received += 1;
        if cur.received == cur.count {
            let covered: u64 = cur.got.iter().flatten().map(|&(_, l)| u64::from(l)).sum();
            let done = self.current.take().expect("in assembly");
            self.last = Some((done.epoch, done.seq));
            self.spare_got = done.got;
            // Every index came, none overlapping: they cover the payload iff the lengths sum
            // (and a frame without its header chunk is no frame).
            let Some(header) = done.header.filter(|_| covered == done.payload.len() as u64) else {
                self.spare = done.payload;
                return Err(Dropped::Conflict);
            };
            return Ok(Some(Assembled {
                seq: done.seq,
                epoch: done.epoch,
                trace_id: done.trace_id,
                header,
                payload: done.payload,
            }));
        }
        Ok(None)
    }

    fn abandon_if(&mut self, c: &Chunk<'_>) {
        if self
            .current
            .as_ref()
            .is_some_and(|cur| (cur.epoch, cur.seq) == (c.epoch, c.seq))
        {
            self.abandon();
        }
    }

    /// Bytes of the frame in assembly now (at most one frame's payload; between frames its
    /// buffer is kept for the next, and never more than one is).
    pub fn held(&self) -> usize {
        self.current.as_ref().map_or(0, |c| c.payload.len())
    }
}
