//! Nothing per frame allocates: after a warm-up, publishing, reading and validating frames
//! (the producer's and the consumer's hot paths) calls the allocator zero times. A counting
//! global allocator, counting on the test's own thread only, shows it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use xmem_tensorpool::commit::{Consumer, FrameSpec, Producer};
use xmem_tensorpool::layout::{Dtype, Superblock, TensorHeader};
use xmem_tensorpool::region::Region;

struct Counting;

static CALLS: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if COUNTING.with(Cell::get) {
        CALLS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded to the system allocator unchanged; counting touches only an
// atomic and a const-initialised thread-local, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as for alloc and dealloc.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[test]
fn publishing_reading_and_validating_a_frame_allocate_nothing() {
    let dir = PathBuf::from("/dev/shm").join(format!("xmem-tp-noalloc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ring_sb = Superblock::header_ring(7, 99, 8, 1, 0);
    let pool_sb = Superblock::payload_pool(7, 99, 1, 8, 4096, 1, 0);
    let ring = Region::create(&dir.join("header.ring"), &ring_sb, 0o600).unwrap();
    let pool = Region::create(&dir.join("1.pool"), &pool_sb, 0o600).unwrap();
    let mut consumer = Consumer::new(
        Region::open(&dir.join("header.ring"), &ring_sb).unwrap(),
        vec![Region::open(&dir.join("1.pool"), &pool_sb).unwrap()],
    );
    let mut producer = Producer::new(ring, vec![pool]);
    let spec = FrameSpec {
        tensor: TensorHeader::row_major(Dtype::Uint8, &[32, 32, 3]),
        values_len: 32 * 32 * 3,
        timestamp_ns: 1,
        meta_version: 0,
    };
    let mut out = Vec::with_capacity(4096);
    let mut frame = |producer: &mut Producer, consumer: &mut Consumer, i: u64| {
        let seq = producer.publish(&spec, |b| b.fill(i as u8)).unwrap().unwrap();
        let accepted = consumer.read(seq, &mut out).unwrap();
        let tensor = accepted.slot.tensor.validate().unwrap();
        assert_eq!((tensor.dims(), out[0]), (&[32, 32, 3][..], i as u8));
    };
    frame(&mut producer, &mut consumer, 0);
    COUNTING.with(|c| c.set(true));
    for i in 1..1000 {
        frame(&mut producer, &mut consumer, i);
    }
    COUNTING.with(|c| c.set(false));
    drop((producer, consumer));
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(CALLS.load(Ordering::Relaxed), 0, "allocations in 999 frames");
}
