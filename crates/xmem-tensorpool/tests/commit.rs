//! The commit protocol in one process, step by step (W-8.3-1a, W-15.3-1, W-15.4-1, W-15.5-1,
//! W-15.18-1), and region checks when mapping (W-7.1-1, W-15.1-1).

use std::path::PathBuf;

use xmem_tensorpool::commit::{Consumer, Drop, FrameSpec, Producer};
use xmem_tensorpool::layout::{Dtype, Superblock, TensorHeader};
use xmem_tensorpool::region::Region;
use xmem_tensorpool::Error;

struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = PathBuf::from("/dev/shm").join(format!("xmem-tp-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Dir(p)
    }
}

impl std::ops::Drop for Dir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).expect("remove the test's regions");
    }
}

const N: u32 = 4;

fn setup(dir: &Dir) -> (Producer, Consumer, Superblock) {
    let ring_sb = Superblock::header_ring(7, 99, N, 1, 0);
    let pool_sb = Superblock::payload_pool(7, 99, 1, N, 128, 1, 0);
    let ring = Region::create(&dir.0.join("header.ring"), &ring_sb, 0o600).unwrap();
    let pool = Region::create(&dir.0.join("1.pool"), &pool_sb, 0o600).unwrap();
    let c = Consumer::new(
        Region::open(&dir.0.join("header.ring"), &ring_sb).unwrap(),
        vec![Region::open(&dir.0.join("1.pool"), &pool_sb).unwrap()],
    );
    (Producer::new(ring, vec![pool]), c, ring_sb)
}

fn spec(len: u32) -> FrameSpec {
    FrameSpec {
        tensor: TensorHeader::row_major(Dtype::Uint8, &[len as i32]),
        values_len: len,
        timestamp_ns: 5,
        meta_version: 1,
    }
}

#[test]
fn w_8_3_1a_frames_round_trip_and_nothing_is_visible_before_the_commit() {
    let dir = Dir::new("rt");
    let (mut p, mut c, _) = setup(&dir);
    let mut buf = Vec::new();
    assert_eq!(c.read(0, &mut buf).unwrap_err(), Drop::NotYet);
    let seq = p.publish(&spec(100), |b| b.fill(7)).unwrap().unwrap();
    let a = c.read(seq, &mut buf).unwrap();
    assert_eq!(
        (a.seq, a.slot.payload_slot, a.slot.timestamp_ns, buf.len()),
        (0, 0, 5, 100)
    );
    assert!(buf.iter().all(|&x| x == 7));
    // A frame too large for every pool is dropped by the producer, without blocking.
    assert_eq!(p.publish(&spec(129), |_| unreachable!()).unwrap(), None);
    // Empty payloads are committed too.
    let s = p.publish(&spec(0), |_| {}).unwrap().unwrap();
    assert_eq!(c.read(s, &mut buf).unwrap().slot.values_len_bytes, 0);
}

#[test]
fn w_15_3_1_an_overwritten_slot_is_late_never_served_as_another_frame() {
    let dir = Dir::new("late");
    let (mut p, mut c, _) = setup(&dir);
    let mut buf = Vec::new();
    for _ in 0..=N {
        p.publish(&spec(8), |b| b.fill(1)).unwrap();
    }
    // Slot 0 now holds frame N: a descriptor for frame 0 is stale.
    assert_eq!(c.read(0, &mut buf).unwrap_err(), Drop::Late);
    assert_eq!(c.read(u64::from(N), &mut buf).unwrap().seq, u64::from(N));
    assert_eq!(c.counters().drops_late, 1);
}

#[test]
fn w_15_4_1_gaps_are_counted_and_a_lapped_follower_resumes_at_the_oldest_frame() {
    let dir = Dir::new("gap");
    let (mut p, mut c, _) = setup(&dir);
    let mut buf = Vec::new();
    p.publish(&spec(8), |_| {}).unwrap();
    assert_eq!(c.next(0, &mut buf).unwrap().seq, 0);
    for _ in 0..10 {
        p.publish(&spec(8), |_| {}).unwrap(); // frames 1..=10; the ring keeps 7..=10
    }
    let resumed = c.next(0, &mut buf).unwrap().seq;
    assert_eq!(resumed, 7);
    assert_eq!(c.counters().drops_gap, 6, "frames 1..=6 were lost");
    for want in 8..=10 {
        assert_eq!(c.next(0, &mut buf).unwrap().seq, want);
    }
    assert_eq!(c.next(0, &mut buf).unwrap_err(), Drop::NotYet);
    assert_eq!(c.counters().accepted, 5);
}

#[test]
fn w_15_1_1_a_region_whose_superblock_differs_from_the_announce_is_not_mapped() {
    let dir = Dir::new("sb");
    let (_p, _c, ring_sb) = setup(&dir);
    let path = dir.0.join("header.ring");
    let mut other_epoch = ring_sb;
    other_epoch.epoch += 1;
    assert!(matches!(
        Region::open(&path, &other_epoch),
        Err(Error::Mismatch { field: "epoch", .. })
    ));
    let mut other_stream = ring_sb;
    other_stream.stream_id += 1;
    assert!(matches!(
        Region::open(&path, &other_stream),
        Err(Error::Mismatch {
            field: "streamId",
            ..
        })
    ));
    // A file too short for its slots, or for a superblock, is refused.
    std::fs::write(dir.0.join("short"), [0u8; 10]).unwrap();
    assert!(matches!(
        Region::open(&dir.0.join("short"), &ring_sb),
        Err(Error::Truncated { .. })
    ));
    // A symlink to a region is never followed.
    std::os::unix::fs::symlink(&path, dir.0.join("link")).unwrap();
    assert!(matches!(
        Region::open(&dir.0.join("link"), &ring_sb),
        Err(Error::Io { .. })
    ));
}

#[test]
fn in_place_reads_see_the_payload_where_it_lies_and_are_late_if_it_is_overwritten_meanwhile() {
    use std::sync::atomic::Ordering;
    let dir = Dir::new("inplace");
    let (mut p, mut c, _) = setup(&dir);
    let seq = p.publish(&spec(100), |b| b.fill(9)).unwrap().unwrap();
    let (a, sum) = c
        .read_in_place(seq, |bytes| {
            bytes
                .iter()
                .map(|b| u32::from(b.load(Ordering::Relaxed)))
                .sum::<u32>()
        })
        .unwrap();
    assert_eq!((a.seq, sum), (0, 900));
    // Twice: the view is of the mapping, not a copy taken once.
    let first = c.read_in_place(seq, |bytes| bytes.as_ptr() as usize).unwrap().1;
    assert_eq!(
        c.read_in_place(seq, |bytes| bytes.as_ptr() as usize).unwrap().1,
        first
    );
    // The producer laps the slot while the reader looks at it: the result is refused, counted.
    let seq = p.publish(&spec(100), |b| b.fill(1)).unwrap().unwrap();
    let late_before = c.counters().drops_late;
    let r = c.read_in_place(seq, |bytes| {
        for _ in 0..N {
            p.publish(&spec(100), |b| b.fill(2)).unwrap();
        }
        bytes[0].load(Ordering::Relaxed)
    });
    assert_eq!(r.unwrap_err(), Drop::Late);
    assert_eq!(c.counters().drops_late, late_before + 1);
}
