//! Streams against their peers, between two processes pinned to different cores: xmem streams,
//! Unix-domain sockets, iceoryx2 (feature `peers`), and the floor of any shared-memory transport
//! (a bare ring, see [`Transport::Floor`]), measured in the same run.
//!
//! - **Latency**: ping-pong. Process A sends a message carrying a time stamp, process B sends it
//!   back as soon as it has it, A takes the round trip; one way is half of it. Both sides
//!   busy-poll (a socket is read with `MSG_DONTWAIT`), as iceoryx2's own benchmark does.
//! - **Throughput**: A sends as fast as it can, B receives; messages (or frames) per second at B,
//!   nothing dropped (xmem `Block`, iceoryx2 `RetryUntilDelivered`, a socket's own flow control).
//!
//! A message of `size` bytes is written whole (`Write::Full`, a `memset`) or only its first 64
//! bytes (`Write::Header`): a zero-copy transport then moves a frame without touching it, a socket
//! still copies every byte.

use std::io::{Read, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use xmem_core::stream::{Policy, Publisher, Subscriber};

use crate::segment::{histogram, ticks, Clock, Percentiles};
use crate::{Peer, PeerProgram};

/// The transports compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// xmem streams.
    Xmem,
    /// A Unix-domain stream socket.
    UnixSocket,
    /// iceoryx2 publish-subscribe (feature `peers`).
    Iceoryx2,
    /// The floor: a bare ring of message slots in shared memory, each a sequence word (its own
    /// cache line) and the message, and nothing else (no pool, no references, no crash safety,
    /// no wake-ups). What any transport that hands over a message in shared memory pays at
    /// least: the signal's line and the message's lines cross between the cores.
    Floor,
}

impl Transport {
    /// Every transport, xmem first.
    pub const ALL: [Transport; 4] = [
        Transport::Xmem,
        Transport::Iceoryx2,
        Transport::UnixSocket,
        Transport::Floor,
    ];

    /// Its name in tables and peer arguments.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Xmem => "xmem",
            Transport::UnixSocket => "unix-socket",
            Transport::Iceoryx2 => "iceoryx2",
            Transport::Floor => "floor",
        }
    }

    fn parse(s: &str) -> Transport {
        match s {
            "xmem" => Transport::Xmem,
            "unix-socket" => Transport::UnixSocket,
            "iceoryx2" => Transport::Iceoryx2,
            "floor" => Transport::Floor,
            other => panic!("unknown transport {other}"),
        }
    }

    /// Whether it is measured for messages of `size` bytes written as `write`. The floor
    /// measures what handing a message over costs; for a frame written in full, the cost of
    /// writing it is the floor instead (the memset bound), and a ring's slots taken in turn
    /// would be no floor for a pool that hands back the buffer still in cache.
    pub fn measures(self, size: usize, write: Write) -> bool {
        self != Transport::Floor || size < PRELOAN_BELOW || write == Write::Header
    }

    /// Whether this build can run it.
    pub fn available(self) -> bool {
        self != Transport::Iceoryx2 || cfg!(feature = "peers")
    }
}

/// How much of each message the sender writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// The first 64 bytes (a header and a time stamp).
    Header,
    /// Every byte.
    Full,
}

impl Write {
    fn arg(self) -> &'static str {
        match self {
            Write::Header => "header",
            Write::Full => "full",
        }
    }

    fn parse(s: &str) -> Write {
        if s == "full" {
            Write::Full
        } else {
            Write::Header
        }
    }
}

/// Sends messages.
pub trait Tx {
    /// Sends one message of the configured size carrying `stamp` in its first 8 bytes.
    fn send(&mut self, stamp: u64);
}

/// Receives messages.
pub trait Rx {
    /// The stamp of the next message, if one is there (never blocks).
    fn try_recv(&mut self) -> Option<u64>;
}

/// Writes a message: the stamp, and the rest as `write` says.
#[inline]
fn write_message(bytes: &mut [u8], stamp: u64, write: Write) {
    if write == Write::Full {
        bytes.fill(stamp as u8);
    }
    bytes[..8].copy_from_slice(&stamp.to_le_bytes());
}

fn stamp_of(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
}

/// Pins the calling thread to `cpu` (if the machine has it).
pub fn pin_to(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// The CPUs this process could use before any pinning.
fn original_cpus() -> rustix::thread::CpuSet {
    static SET: std::sync::OnceLock<rustix::thread::CpuSet> = std::sync::OnceLock::new();
    *SET.get_or_init(|| {
        rustix::thread::sched_getaffinity(None).unwrap_or_else(|_| rustix::thread::CpuSet::new())
    })
}

/// The CPUs to pin A and B to: the first two this process could use before any pinning.
pub(crate) fn cpus() -> (usize, usize) {
    static CPUS: std::sync::OnceLock<(usize, usize)> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| {
        let set = original_cpus();
        let mine: Vec<usize> = (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&c| set.is_set(c))
            .collect();
        match mine.as_slice() {
            [a, b, ..] => (*a, *b),
            [a] => (*a, *a),
            [] => (0, 0),
        }
    })
}

// ---- xmem ------------------------------------------------------------------------------

struct XmemTx {
    publisher: Publisher,
    write: Write,
    /// The next message, loaned ahead (see [`PRELOAN_BELOW`]).
    next: Option<xmem_core::BufferMut>,
    preload: bool,
}

/// Messages smaller than this are loaned ahead, right after the previous send, by every
/// zero-copy transport here (as iceoryx2's own benchmark does): a sender knows it will send
/// again. Frames are loaned when they are written, so that a frame just let go by the receiver
/// is the one written next, still in cache.
const PRELOAN_BELOW: usize = 1 << 20;

impl Tx for XmemTx {
    #[inline]
    fn send(&mut self, stamp: u64) {
        let mut frame = match self.next.take() {
            Some(f) => f,
            None => self.publisher.loan().expect("loan"),
        };
        write_message(frame.bytes_mut(), stamp, self.write);
        self.publisher.publish(frame).expect("publish");
        if self.preload {
            self.next = self.publisher.loan().ok();
        }
    }
}

struct XmemRx {
    subscriber: Subscriber,
    /// The last frame received, let go at the next poll: off the path of the reply.
    held: Option<xmem_core::Buffer>,
}

impl Rx for XmemRx {
    #[inline]
    fn try_recv(&mut self) -> Option<u64> {
        self.held = None;
        match self.subscriber.try_receive() {
            Ok(Some(frame)) => {
                let stamp = stamp_of(frame.bytes());
                self.held = Some(frame);
                Some(stamp)
            }
            Ok(None) => None,
            Err(xmem_core::Error::PublisherGone { .. }) => None, // the run is over
            Err(e) => panic!("receive: {e}"),
        }
    }
}

/// Buffers and queue depth: small for big frames (to stay in cache), deep for small messages.
fn xmem_shape(size: usize) -> (u32, u32) {
    if size >= 1 << 20 {
        (4, 2)
    } else {
        (256, 128)
    }
}

fn xmem_tx(name: &str, size: usize, write: Write) -> XmemTx {
    let (buffers, depth) = xmem_shape(size);
    let publisher = Publisher::builder(name)
        .buffer_size(size as u64)
        .buffers(buffers)
        .depth(depth)
        .max_subscribers(1)
        .policy(Policy::Block {
            timeout: Duration::from_secs(60),
        })
        .create()
        .expect("create stream");
    XmemTx {
        publisher,
        write,
        next: None,
        preload: size < PRELOAN_BELOW,
    }
}

fn xmem_rx(name: &str) -> XmemRx {
    XmemRx {
        subscriber: Subscriber::open(name).expect("subscribe"),
        held: None,
    }
}

// ---- the floor: a bare ring ------------------------------------------------------------

/// A ring of `depth` slots in a shared-memory file: slot `i` is a sequence word alone in its
/// cache line, then the message. The sender writes position `p` into a slot reading `2p`, then
/// stores `2p + 1`; the receiver reads it and stores `2(p + depth)`.
struct FloorRing {
    map: xmem_core::os::Mapping,
    depth: u64,
    /// `depth - 1` (a power of two): no division per message.
    mask: u64,
    stride: usize,
    size: usize,
    pos: u64,
    /// The sender's file, removed when it is dropped.
    created: Option<std::path::PathBuf>,
}

impl FloorRing {
    /// In the directory xmem's own objects go to (`$XMEM_SHM_DIR` or `/dev/shm`).
    fn path(name: &str) -> std::path::PathBuf {
        xmem_core::os::ShmDir::default()
            .path()
            .join(format!("{name}.floor"))
    }

    fn open(name: &str, size: usize, create: bool) -> FloorRing {
        // As many slots as xmem's pool has buffers: the same memory in circulation.
        let depth = xmem_shape(size).0 as usize;
        assert!(depth.is_power_of_two(), "a floor ring of {depth} slots");
        let stride = 64 + size.div_ceil(64) * 64;
        let path = FloorRing::path(name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(create)
            .open(&path)
            .expect("floor ring file");
        if create {
            file.set_len((depth * stride) as u64)
                .expect("size the floor ring");
        }
        let options = xmem_core::os::map::MapOptions {
            writable: true,
            populate: true,
        };
        let map =
            xmem_core::os::Mapping::map(&file, depth * stride, options, &path).expect("map the floor ring");
        if create {
            for i in 0..depth {
                let seq = map.at::<std::sync::atomic::AtomicU64>(i * stride).expect("slot");
                seq.store(2 * i as u64, std::sync::atomic::Ordering::Relaxed);
            }
        }
        FloorRing {
            map,
            depth: depth as u64,
            mask: depth as u64 - 1,
            stride,
            size,
            pos: 0,
            created: create.then_some(path),
        }
    }

    #[inline(always)]
    fn slot(&self) -> (&std::sync::atomic::AtomicU64, *mut u8) {
        let offset = (self.pos & self.mask) as usize * self.stride;
        let seq = self.map.at(offset).expect("slot inside the ring");
        // SAFETY: the message area (`size` bytes after the sequence line) lies inside the
        // mapping: `stride` covers it.
        (seq, unsafe { self.map.base().add(offset + 64) })
    }
}

impl Drop for FloorRing {
    fn drop(&mut self) {
        if let Some(path) = &self.created {
            let _ = std::fs::remove_file(path);
        }
    }
}

struct FloorTx {
    ring: FloorRing,
    write: Write,
}

impl Tx for FloorTx {
    #[inline]
    fn send(&mut self, stamp: u64) {
        use std::sync::atomic::Ordering::{Acquire, Release};
        let p = self.ring.pos;
        let (seq, msg) = self.ring.slot();
        while seq.load(Acquire) != 2 * p {
            std::hint::spin_loop(); // full: the receiver has not read this slot's last message
        }
        // SAFETY: the slot reads `2p`: the receiver is done with it and will not look at it
        // before the store below; the area is `size` bytes inside the mapping (`slot`).
        let bytes = unsafe { std::slice::from_raw_parts_mut(msg, self.ring.size) };
        write_message(bytes, stamp, self.write);
        seq.store(2 * p + 1, Release);
        self.ring.pos += 1;
    }
}

struct FloorRx {
    ring: FloorRing,
}

impl Rx for FloorRx {
    #[inline]
    fn try_recv(&mut self) -> Option<u64> {
        use std::sync::atomic::Ordering::{Acquire, Release};
        let p = self.ring.pos;
        let (seq, msg) = self.ring.slot();
        if seq.load(Acquire) != 2 * p + 1 {
            return None;
        }
        // SAFETY: the slot reads `2p + 1`: the sender wrote the message before that store
        // (Release/Acquire) and will not write it again before the store below.
        let stamp = stamp_of(unsafe { std::slice::from_raw_parts(msg, 8) });
        seq.store(2 * (p + self.ring.depth), Release);
        self.ring.pos += 1;
        Some(stamp)
    }
}

// ---- Unix sockets ----------------------------------------------------------------------

struct SocketTx {
    stream: UnixStream,
    buf: Vec<u8>,
    write: Write,
}

impl Tx for SocketTx {
    fn send(&mut self, stamp: u64) {
        write_message(&mut self.buf, stamp, self.write);
        // The socket is non-blocking (its reading half polls): spin while it is full.
        let mut at = 0;
        while at < self.buf.len() {
            match self.stream.write(&self.buf[at..]) {
                Ok(n) => at += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                Err(e) => panic!("socket write: {e}"),
            }
        }
    }
}

struct SocketRx {
    stream: UnixStream,
    buf: Vec<u8>,
    have: usize,
}

impl Rx for SocketRx {
    fn try_recv(&mut self) -> Option<u64> {
        loop {
            match self.stream.read(&mut self.buf[self.have..]) {
                Ok(0) => panic!("socket closed"),
                Ok(n) => {
                    self.have += n;
                    if self.have == self.buf.len() {
                        self.have = 0;
                        return Some(stamp_of(&self.buf));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if self.have == 0 {
                        return None; // nothing begun: let the caller poll again
                    }
                }
                Err(e) => panic!("socket read: {e}"),
            }
        }
    }
}

fn socket_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{name}.sock"))
}

/// A connected socket pair: A listens, B connects. Returns (tx, rx) halves of one stream.
fn socket_ends(stream: UnixStream, size: usize, write: Write) -> (SocketTx, SocketRx) {
    // Both halves share one non-blocking file description: both sides busy-poll.
    let reader = stream.try_clone().expect("clone socket");
    reader.set_nonblocking(true).expect("nonblocking");
    let tx = SocketTx {
        stream,
        buf: vec![0; size],
        write,
    };
    let rx = SocketRx {
        stream: reader,
        buf: vec![0; size],
        have: 0,
    };
    (tx, rx)
}

// ---- iceoryx2 --------------------------------------------------------------------------

#[cfg(feature = "peers")]
mod iox {
    use super::*;
    use iceoryx2::port::backpressure_strategy::BackpressureStrategy;
    use iceoryx2::prelude::*;

    type Svc = iceoryx2::service::ipc::Service;

    type Loan = iceoryx2::sample_mut_uninit::SampleMutUninit<Svc, [std::mem::MaybeUninit<u8>], ()>;

    pub(super) struct IoxTx {
        publisher: iceoryx2::port::publisher::Publisher<Svc, [u8], ()>,
        size: usize,
        write: Write,
        next: Option<Loan>,
        _node: Node<Svc>,
    }

    impl Tx for IoxTx {
        #[inline]
        fn send(&mut self, stamp: u64) {
            let mut sample = match self.next.take() {
                Some(s) => s,
                None => self.publisher.loan_slice_uninit(self.size).expect("loan"),
            };
            let payload = sample.payload_mut();
            if self.write == Write::Full {
                // SAFETY: `payload` is `size` writable bytes; u8 has no invalid values.
                unsafe { std::ptr::write_bytes(payload.as_mut_ptr(), stamp as u8, payload.len()) };
            }
            for (d, s) in payload[..8].iter_mut().zip(stamp.to_le_bytes()) {
                d.write(s);
            }
            // SAFETY: as iceoryx2's own benchmark does for a header-only message: the bytes are
            // never read as anything but u8, for which every bit pattern is valid.
            let sample = unsafe { sample.assume_init() };
            sample.send().expect("send");
            if self.size < PRELOAN_BELOW {
                self.next = self.publisher.loan_slice_uninit(self.size).ok();
            }
        }
    }

    pub(super) struct IoxRx {
        subscriber: iceoryx2::port::subscriber::Subscriber<Svc, [u8], ()>,
        /// The last sample, let go at the next poll (as xmem's side does).
        held: Option<iceoryx2::sample::Sample<Svc, [u8], ()>>,
        _node: Node<Svc>,
    }

    impl Rx for IoxRx {
        #[inline]
        fn try_recv(&mut self) -> Option<u64> {
            self.held = None;
            let sample = self.subscriber.receive().expect("receive")?;
            let stamp = stamp_of(sample.payload());
            self.held = Some(sample);
            Some(stamp)
        }
    }

    fn service(
        node: &Node<Svc>,
        name: &str,
        depth: usize,
    ) -> iceoryx2::service::port_factory::publish_subscribe::PortFactory<Svc, [u8], ()> {
        node.service_builder(&ServiceName::new(name).expect("service name"))
            .publish_subscribe::<[u8]>()
            .max_publishers(1)
            .max_subscribers(1)
            .history_size(0)
            .subscriber_max_buffer_size(depth)
            .enable_safe_overflow(false)
            .open_or_create()
            .expect("iceoryx2 service")
    }

    /// Keeps iceoryx2's warnings (no config file found) out of the tables.
    fn quiet() {
        iceoryx2::prelude::set_log_level(iceoryx2::prelude::LogLevel::Error);
    }

    fn depth(size: usize) -> usize {
        super::xmem_shape(size).1 as usize
    }

    pub(super) fn tx(name: &str, size: usize, write: Write) -> IoxTx {
        quiet();
        let node = NodeBuilder::new().create::<Svc>().expect("iceoryx2 node");
        let publisher = service(&node, name, depth(size))
            .publisher_builder()
            .initial_max_slice_len(size)
            .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
            .create()
            .expect("iceoryx2 publisher");
        IoxTx {
            publisher,
            size,
            write,
            next: None,
            _node: node,
        }
    }

    pub(super) fn rx(name: &str, size: usize) -> IoxRx {
        quiet();
        let node = NodeBuilder::new().create::<Svc>().expect("iceoryx2 node");
        let subscriber = service(&node, name, depth(size))
            .subscriber_builder()
            .create()
            .expect("iceoryx2 subscriber");
        IoxRx {
            subscriber,
            held: None,
            _node: node,
        }
    }

    /// Removes what iceoryx2 keeps in /dev/shm and the temp directory across runs.
    pub(super) fn clean_up() {
        if let Ok(entries) = std::fs::read_dir("/dev/shm") {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("iox2_") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join("iceoryx2"));
    }
}

/// Removes what a transport leaves behind across runs (iceoryx2's global files).
pub fn clean_up(t: Transport) {
    #[cfg(feature = "peers")]
    if t == Transport::Iceoryx2 {
        iox::clean_up();
    }
    let _ = t;
}

fn make_tx(t: Transport, name: &str, size: usize, write: Write) -> Box<dyn Tx> {
    match t {
        Transport::Xmem => Box::new(xmem_tx(name, size, write)),
        Transport::Floor => Box::new(FloorTx {
            ring: FloorRing::open(name, size, true),
            write,
        }),
        #[cfg(feature = "peers")]
        Transport::Iceoryx2 => Box::new(iox::tx(name, size, write)),
        _ => unreachable!("socket ends are made in pairs"),
    }
}

fn make_rx(t: Transport, name: &str, size: usize) -> Box<dyn Rx> {
    match t {
        Transport::Xmem => Box::new(xmem_rx(name)),
        Transport::Floor => Box::new(FloorRx {
            ring: FloorRing::open(name, size, false),
        }),
        #[cfg(feature = "peers")]
        Transport::Iceoryx2 => Box::new(iox::rx(name, size)),
        _ => {
            let _ = size;
            unreachable!("socket ends are made in pairs")
        }
    }
}

// ---- the two sides ---------------------------------------------------------------------

/// A name no earlier case of this run used.
fn unique(what: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("xmem-bench-{what}-{}-{n}", std::process::id())
}

/// A's side of a ping-pong: `n` round trips of `size`-byte messages. Returns one-way latency.
pub fn latency(
    program: &PeerProgram,
    t: Transport,
    size: usize,
    write: Write,
    n: usize,
    clock: &Clock,
) -> Percentiles {
    let (cpu_a, cpu_b) = cpus();
    pin_to(cpu_a);
    let (a2b, b2a) = (unique("a2b"), unique("b2a"));
    let (mut tx, mut rx, mut peer): (Box<dyn Tx>, Box<dyn Rx>, Peer) = if t == Transport::UnixSocket {
        let path = socket_path(&a2b);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind");
        let peer = Peer::start(
            program,
            "echo",
            &[
                t.name(),
                &a2b,
                &b2a,
                &size.to_string(),
                write.arg(),
                &cpu_b.to_string(),
            ],
        )
        .expect("peer");
        let (stream, _) = listener.accept().expect("accept");
        let _ = std::fs::remove_file(&path);
        let (tx, rx) = socket_ends(stream, size, write);
        (Box::new(tx), Box::new(rx), peer)
    } else {
        let tx = make_tx(t, &a2b, size, write);
        let mut peer = Peer::start(
            program,
            "echo",
            &[
                t.name(),
                &a2b,
                &b2a,
                &size.to_string(),
                write.arg(),
                &cpu_b.to_string(),
            ],
        )
        .expect("peer");
        assert_eq!(peer.line(), "ready");
        let rx = make_rx(t, &b2a, size);
        (tx, rx, peer)
    };
    peer.send("go");
    let mut h = histogram();
    for i in 0..n + n / 10 + 1 {
        let t0 = ticks();
        tx.send(t0);
        let back = loop {
            if let Some(s) = rx.try_recv() {
                break s;
            }
            std::hint::spin_loop();
        };
        let t1 = ticks();
        assert_eq!(back, t0, "the echo carries the stamp sent");
        if i > n / 10 {
            h.record((clock.ns(t1 - t0) / 2).max(1)).unwrap();
        }
    }
    peer.finish();
    drop((tx, rx));
    clean_up(t);
    Percentiles::of(&h)
}

/// A's side of a throughput run: sends `n` messages; returns messages per second at B.
pub fn throughput(program: &PeerProgram, t: Transport, size: usize, write: Write, n: u64) -> f64 {
    let (cpu_a, cpu_b) = cpus();
    pin_to(cpu_a);
    let name = unique("tput");
    let args = [
        t.name().to_string(),
        name.clone(),
        size.to_string(),
        n.to_string(),
        cpu_b.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (mut tx, mut peer): (Box<dyn Tx>, Peer) = if t == Transport::UnixSocket {
        let path = socket_path(&name);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind");
        let peer = Peer::start(program, "sink", &args).expect("peer");
        let (stream, _) = listener.accept().expect("accept");
        let _ = std::fs::remove_file(&path);
        (Box::new(socket_ends(stream, size, write).0), peer)
    } else {
        let tx = make_tx(t, &name, size, write);
        let mut peer = Peer::start(program, "sink", &args).expect("peer");
        assert_eq!(peer.line(), "ready");
        (tx, peer)
    };
    peer.send("go");
    for i in 0..n {
        tx.send(i);
    }
    let line = peer.line();
    let ns: f64 = line
        .strip_prefix("done ")
        .expect("sink reports")
        .parse()
        .expect("ns");
    peer.finish();
    drop(tx);
    clean_up(t);
    (n - 1) as f64 / (ns / 1e9)
}

/// The fill bound: frames of `size` bytes per second that one core can `memset` into `buffers`
/// pre-faulted shared-memory buffers taken in turn, with no transport around them. A pipelined
/// stream needs two (the publisher writes one while the subscriber reads the other), so the
/// bound a stream is held to is `fill_bound(size, n, 2)`; with one buffer the frame never leaves
/// the cache, which only a publisher that waits for its subscriber could match.
pub fn fill_bound(size: usize, frames: u64, buffers: u32) -> f64 {
    let (cpu_a, _) = cpus();
    pin_to(cpu_a);
    let pool = xmem_core::BufferPool::anonymous()
        .buffers(buffers)
        .buffer_size(size as u64)
        .create_anonymous()
        .expect("pool for the fill bound");
    let mut held: Vec<xmem_core::BufferMut> = (0..buffers)
        .map(|_| pool.try_acquire().expect("buffer"))
        .collect();
    let start = Instant::now();
    for i in 0..frames {
        let b = held[i as usize % buffers as usize].bytes_mut();
        b.fill(i as u8);
        std::hint::black_box(&b[..8]);
    }
    frames as f64 / start.elapsed().as_secs_f64()
}

/// Peer role `echo TRANSPORT A2B B2A SIZE WRITE CPU`: sends every message back.
pub(crate) fn echo_role(args: &[&str]) -> i32 {
    let [t, a2b, b2a, size, write, cpu] = args else {
        return 2;
    };
    let (t, size, write) = (Transport::parse(t), size.parse().unwrap(), Write::parse(write));
    pin_to(cpu.parse().unwrap());
    let (mut tx, mut rx): (Box<dyn Tx>, Box<dyn Rx>) = if t == Transport::UnixSocket {
        let stream = UnixStream::connect(socket_path(a2b)).expect("connect");
        let (tx, rx) = socket_ends(stream, size, write);
        (Box::new(tx), Box::new(rx))
    } else {
        let rx = make_rx(t, a2b, size);
        let tx = make_tx(t, b2a, size, write);
        println!("ready");
        std::io::stdout().flush().unwrap();
        (tx, rx)
    };
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    let stop = stop_on_stdin_close();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if let Some(s) = rx.try_recv() {
            tx.send(s);
        } else {
            std::hint::spin_loop();
        }
    }
    0
}

/// Peer role `sink TRANSPORT NAME SIZE N CPU`: receives N messages, prints `done NS` (from the
/// first to the last).
pub(crate) fn sink_role(args: &[&str]) -> i32 {
    let [t, name, size, n, cpu] = args else {
        return 2;
    };
    let (t, size, n): (Transport, usize, u64) =
        (Transport::parse(t), size.parse().unwrap(), n.parse().unwrap());
    pin_to(cpu.parse().unwrap());
    let mut rx: Box<dyn Rx> = if t == Transport::UnixSocket {
        let stream = UnixStream::connect(socket_path(name)).expect("connect");
        Box::new(socket_ends(stream, size, Write::Header).1)
    } else {
        let rx = make_rx(t, name, size);
        println!("ready");
        std::io::stdout().flush().unwrap();
        rx
    };
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    let mut got = 0;
    let mut first = None;
    while got < n {
        if rx.try_recv().is_some() {
            got += 1;
            first.get_or_insert_with(Instant::now);
        } else {
            std::hint::spin_loop();
        }
    }
    let ns = first.map_or(0, |f| f.elapsed().as_nanos());
    println!("done {ns}");
    std::io::stdout().flush().unwrap();
    crate::wait_for_stdin_to_close();
    0
}

/// A flag set when stdin closes (how A tells B to stop).
pub(crate) fn stop_on_stdin_close() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    std::thread::spawn(move || {
        crate::wait_for_stdin_to_close();
        s.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    stop
}

// ---- the report ------------------------------------------------------------------------

/// A 1920×1080 RGB frame.
pub const FRAME_1080P: usize = 1920 * 1080 * 3;

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Run the latency table.
    pub latency: bool,
    /// Run the throughput table.
    pub throughput: bool,
    /// Scales every iteration count (1.0: about a minute in all).
    pub scale: f64,
    /// The transports, xmem first.
    pub transports: Vec<Transport>,
}

impl Plan {
    /// Everything this build can run; `XMEM_BENCH_ONLY=latency|throughput`,
    /// `XMEM_BENCH_TRANSPORTS=xmem,unix-socket` and `XMEM_BENCH_SCALE` (default 1) narrow it.
    pub fn from_env() -> Plan {
        let only = std::env::var("XMEM_BENCH_ONLY").unwrap_or_default();
        Plan {
            latency: only != "throughput",
            throughput: only != "latency",
            scale: std::env::var("XMEM_BENCH_SCALE")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1.0),
            transports: Transport::ALL
                .into_iter()
                .filter(|t| t.available())
                .filter(|t| {
                    std::env::var("XMEM_BENCH_TRANSPORTS")
                        .map_or(true, |only| only.split(',').any(|o| o == t.name()))
                })
                .collect(),
        }
    }

    fn n(&self, base: u64) -> u64 {
        ((base as f64 * self.scale) as u64).max(10)
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "-".into()
    }
}

/// One latency case of a run: a message, and each transport's percentiles (`None`: not
/// measured for that transport).
#[derive(Debug, Clone)]
pub struct LatencyResult {
    /// What was sent.
    pub message: &'static str,
    /// Its size in bytes.
    pub bytes: usize,
    /// Per transport, in [`Run::transports`] order.
    pub results: Vec<Option<Percentiles>>,
}

/// One throughput case of a run.
#[derive(Debug, Clone)]
pub struct ThroughputResult {
    /// What was sent.
    pub message: &'static str,
    /// Its size in bytes.
    pub bytes: usize,
    /// Messages per second per transport, in [`Run::transports`] order (`None`: not measured).
    pub rates: Vec<Option<f64>>,
    /// The memset bound of the same run (two buffers written in turn), for large messages.
    pub bound: Option<f64>,
}

/// What [`report`] measured, for `xmem bench --json`.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// The transports, xmem first.
    pub transports: Vec<&'static str>,
    /// The two CPUs the processes were pinned to.
    pub cpus: (usize, usize),
    /// The latency table.
    pub latency: Vec<LatencyResult>,
    /// The throughput table.
    pub throughput: Vec<ThroughputResult>,
    /// memset of one 1080p buffer over and over (the cache-resident ceiling), per second.
    pub hot_memset: Option<f64>,
}

/// Runs `plan`, prints its tables (Markdown) and returns what it measured.
pub fn report(program: &PeerProgram, plan: &Plan, clock: &Clock) -> Run {
    let names: Vec<&str> = plan.transports.iter().map(|t| t.name()).collect();
    let mut run = Run {
        transports: names.clone(),
        cpus: cpus(),
        ..Run::default()
    };
    println!(
        "streams: {} · two processes pinned to CPUs {:?} · busy-polling",
        names.join(" vs "),
        cpus()
    );
    if plan.latency {
        println!("\none-way latency, ns (ping-pong ÷ 2): p50 / p99 / p99.9\n");
        let mut head = "| message |".to_string();
        for t in &plan.transports {
            head += &format!(" {} |", t.name());
        }
        for t in plan.transports.iter().skip(1) {
            head += &format!(" p50 ÷ {} |", t.name());
        }
        println!("{head}");
        println!("|{}", "---|".repeat(1 + 2 * plan.transports.len() - 1));
        let cases = [
            ("8 B", 8, Write::Full, 100_000),
            ("4 KiB", 4096, Write::Full, 50_000),
            ("1080p, header only", FRAME_1080P, Write::Header, 2_000),
            ("1080p, fully written", FRAME_1080P, Write::Full, 1_000),
        ];
        for (label, size, write, n) in cases {
            let results: Vec<Option<Percentiles>> = plan
                .transports
                .iter()
                .map(|&t| {
                    t.measures(size, write)
                        .then(|| latency(program, t, size, write, plan.n(n) as usize, clock))
                })
                .collect();
            let mut row = format!("| {label} |");
            for p in &results {
                row += &match p {
                    Some(p) => format!(" {} / {} / {} |", p.p50, p.p99, p.p999),
                    None => " — |".into(),
                };
            }
            let first = results[0].as_ref().map_or(0.0, |p| p.p50 as f64);
            for p in results.iter().skip(1) {
                row += &format!(" {} |", ratio(first, p.as_ref().map_or(0.0, |p| p.p50 as f64)));
            }
            println!("{row}");
            run.latency.push(LatencyResult {
                message: label,
                bytes: size,
                results,
            });
        }
    }
    if plan.throughput {
        let mut hot = None;
        println!("\nthroughput, messages per second (nothing dropped)\n");
        let mut head = "| message |".to_string();
        for t in &plan.transports {
            head += &format!(" {} |", t.name());
        }
        for t in plan.transports.iter().skip(1) {
            head += &format!(" ÷ {} |", t.name());
        }
        head += " memset bound (2 buffers), same run |";
        println!("{head}");
        println!("|{}", "---|".repeat(2 * plan.transports.len() + 1));
        let cases = [
            ("8 B", 8, Write::Full, 2_000_000u64),
            (
                "1080p, publisher fills every frame",
                FRAME_1080P,
                Write::Full,
                1_000,
            ),
        ];
        for (label, size, write, n) in cases {
            // The bound is taken before and after the transports (the best of the two), so a
            // noisy neighbour cannot flatter the ratio.
            let bound_before = (size >= 1 << 20).then(|| fill_bound(size, plan.n(n), 2));
            let rates: Vec<f64> = plan
                .transports
                .iter()
                .map(|&t| {
                    if t.measures(size, write) {
                        throughput(program, t, size, write, plan.n(n))
                    } else {
                        0.0
                    }
                })
                .collect();
            let mut row = format!("| {label} |");
            for r in &rates {
                row += &if *r > 0.0 {
                    format!(" {} |", rate(*r))
                } else {
                    " — |".into()
                };
            }
            for r in rates.iter().skip(1) {
                row += &format!(" {} |", ratio(rates[0], *r));
            }
            let mut bound = None;
            if let Some(before) = bound_before {
                let b = before.max(fill_bound(size, plan.n(n), 2));
                hot = Some(fill_bound(size, plan.n(n), 1));
                row += &format!(" {} (xmem: {:.1} %) |", rate(b), 100.0 * rates[0] / b);
                bound = Some(b);
            } else {
                row += " |";
            }
            println!("{row}");
            run.throughput.push(ThroughputResult {
                message: label,
                bytes: size,
                rates: rates.iter().map(|&r| (r > 0.0).then_some(r)).collect(),
                bound,
            });
        }
        if let Some(hot) = hot {
            println!(
                "\nmemset of one 1080p buffer over and over (never leaves the cache): {}",
                rate(hot)
            );
        }
        run.hot_memset = hot;
    }
    run
}

fn rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2} M/s", r / 1e6)
    } else if r >= 1e3 {
        format!("{:.1} k/s", r / 1e3)
    } else {
        format!("{r:.0}/s")
    }
}
