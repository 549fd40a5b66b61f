//! The join barrier, named after its conformance items (tensor-pool digest §7, JB-5-1 … JB-10-1).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

use xmem_aeron::{Client, ClientOptions, DriverOptions, MediaDriver};
use xmem_tp_join::map::{decode_request, encode_request};
use xmem_tp_join::{
    Authority, LatestValue, MapError, ObserveError, Readiness, SeqRule, SequenceBarrier, SequenceMap,
    TimeRule, TimestampBarrier, TimestampMap, TimestampSource,
};

/// Counts this thread's allocations while `COUNTING` is set.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counters are thread-local cells.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.with(|a| a.set(a.get() + 1));
        }
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: memory System gave out, with its layout.
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn allocations(f: impl FnOnce()) -> u64 {
    ALLOCS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCS.with(Cell::get)
}

fn stereo(stale: Option<u64>) -> SequenceMap {
    SequenceMap::new(
        30,
        7,
        stale,
        vec![(10, SeqRule::Offset(0)), (11, SeqRule::Offset(-1))],
    )
    .unwrap()
}

#[test]
fn jb_5_1_the_barrier_allocates_nothing_and_never_blocks() {
    let mut b = SequenceBarrier::new(stereo(None), true);
    let mut t = TimestampBarrier::new(
        TimestampMap::new(
            31,
            7,
            None,
            1,
            Some(5),
            vec![(10, TimestampSource::SlotHeader, TimeRule::OffsetNs(0))],
        )
        .unwrap(),
    );
    let mut l = LatestValue::new(&[10, 11], 7);
    let start = Instant::now();
    let n = allocations(|| {
        for seq in 0..10_000u64 {
            b.observe(10, 7, seq, seq).unwrap();
            b.observe(11, 7, seq, seq).unwrap();
            b.processed(10, seq).unwrap();
            b.processed(11, seq).unwrap();
            let _ = b.ready(seq, seq);
            t.observe(10, 7, 1, Some(seq * 10), seq).unwrap();
            let _ = t.ready(seq * 10, seq);
            l.observe(10, 7, seq).unwrap();
            let _ = l.select();
        }
    });
    assert_eq!(n, 0, "observations and readiness allocate nothing");
    // Never blocks: 10 000 rounds of every call take well under a second even in a debug build.
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn jb_6_1_each_rule_has_exactly_its_one_parameter() {
    assert!(matches!(
        SequenceMap::new(1, 1, None, vec![]),
        Err(MapError::Rules(0))
    ));
    assert!(matches!(
        SequenceMap::new(1, 1, None, vec![(5, SeqRule::Window(0))]),
        Err(MapError::Rule { .. })
    ));
    // On the wire: an OFFSET rule carrying a window, both, neither.
    let good = SequenceMap::new(1, 1, None, vec![(5, SeqRule::Offset(2))])
        .unwrap()
        .encode()
        .unwrap();
    // The rules group: header 8 + block 20 + group header 4; entry: input u32, type u8,
    // offset i32 at +5, window u32 at +9.
    let entry = 8 + 20 + 4;
    let mut both = good.clone();
    both[entry + 9..entry + 13].copy_from_slice(&3u32.to_le_bytes());
    assert!(matches!(SequenceMap::decode(&both), Err(MapError::Rule { why, .. }) if why.contains("both")));
    let mut neither = good.clone();
    neither[entry + 5..entry + 9].copy_from_slice(&i32::MIN.to_le_bytes());
    assert!(
        matches!(SequenceMap::decode(&neither), Err(MapError::Rule { why, .. }) if why.contains("neither"))
    );
    let mut wrong = good.clone();
    wrong[entry + 4] = 1; // WINDOW with an offset
    assert!(matches!(SequenceMap::decode(&wrong), Err(MapError::Rule { .. })));
    assert!(SequenceMap::decode(&good).is_ok());
}

#[test]
fn jb_7_1_sequence_readiness_and_staleness() {
    let mut b = SequenceBarrier::new(stereo(None), false);
    // OFFSET −1 on input 11: out 0 needs in −1, which never exists.
    assert_eq!(b.ready(0, 0), Readiness::NotApplicable);
    assert_eq!(b.ready(5, 0), Readiness::Waiting { rule: 0 });
    b.observe(10, 7, 5, 1).unwrap();
    assert_eq!(b.ready(5, 1), Readiness::Waiting { rule: 1 });
    b.observe(11, 7, 3, 1).unwrap();
    assert_eq!(
        b.ready(5, 1),
        Readiness::Waiting { rule: 1 },
        "input 11 must reach 4"
    );
    b.observe(11, 7, 4, 2).unwrap();
    assert_eq!(b.ready(5, 2), Readiness::Ready { stale: 0 });
    assert!(
        b.ready(4, 2).is_ready(),
        "the cursor is ≥: earlier outputs are ready too"
    );
    assert_eq!(b.observe(12, 7, 1, 2), Err(ObserveError::UnknownInput(12)));
    assert_eq!(
        b.observe(10, 8, 1, 2),
        Err(ObserveError::Epoch { got: 8, want: 7 })
    );
    // WINDOW 3: [out − 2, out], ready on the upper bound; not while out + 1 < 3.
    let mut w = SequenceBarrier::new(
        SequenceMap::new(30, 7, None, vec![(10, SeqRule::Window(3))]).unwrap(),
        false,
    );
    assert_eq!(w.ready(1, 0), Readiness::NotApplicable);
    w.observe(10, 7, 2, 0).unwrap();
    assert!(w.ready(2, 0).is_ready());
    assert_eq!(w.ready(3, 0), Readiness::Waiting { rule: 0 });
    // The processed cursor, when tracked, must be there too.
    let mut p = SequenceBarrier::new(stereo(None), true);
    p.observe(10, 7, 9, 0).unwrap();
    p.observe(11, 7, 9, 0).unwrap();
    assert_eq!(p.ready(5, 0), Readiness::Waiting { rule: 0 });
    p.processed(10, 5).unwrap();
    p.processed(11, 4).unwrap();
    assert!(p.ready(5, 0).is_ready());
    // A stalled input, with staleTimeoutNs, is left out (reported), not waited on.
    let mut s = SequenceBarrier::new(stereo(Some(1_000)), false);
    s.observe(10, 7, 9, 10_000).unwrap();
    s.observe(11, 7, 2, 1_000).unwrap();
    assert_eq!(s.ready(5, 10_500), Readiness::Ready { stale: 0b10 });
    assert_eq!(
        s.ready(5, 1_500),
        Readiness::Waiting { rule: 1 },
        "not stale yet: waited on"
    );
}

#[test]
fn jb_8_1_timestamp_readiness_clock_domain_and_monotonic_times() {
    let map = TimestampMap::new(
        31,
        7,
        None,
        1,
        Some(100),
        vec![
            (10, TimestampSource::SlotHeader, TimeRule::OffsetNs(-1_000)),
            (11, TimestampSource::FrameDescriptor, TimeRule::WindowNs(500)),
        ],
    )
    .unwrap();
    let mut b = TimestampBarrier::new(map);
    assert_eq!(
        b.observe(10, 7, 2, Some(5), 0),
        Err(ObserveError::ClockDomain(2)),
        "one clock domain"
    );
    b.observe(10, 7, 1, Some(9_000), 0).unwrap();
    // A null timestamp is never ready.
    b.observe(11, 7, 1, None, 0).unwrap();
    assert_eq!(b.ready(10_000, 0), Readiness::Waiting { rule: 1 });
    // Window: ready on the upper bound, less the lateness (100 ns).
    b.observe(11, 7, 1, Some(9_950), 0).unwrap();
    assert!(b.ready(10_000, 0).is_ready(), "9950 ≥ 10000 − 100");
    // Offset −1000: for 10 200, input 10 needs 10 200 − 1000 − 100 = 9100.
    assert_eq!(b.ready(10_200, 0), Readiness::Waiting { rule: 0 });
    b.observe(10, 7, 1, Some(9_100), 0).unwrap();
    assert_eq!(
        b.ready(10_200, 0),
        Readiness::Waiting { rule: 1 },
        "9950 < 10 200 − 100"
    );
    assert_eq!(
        b.observe(10, 7, 1, Some(8_000), 0),
        Err(ObserveError::NotMonotonic)
    );
    // Output times may not go backwards.
    assert_eq!(b.ready(9_000, 0), Readiness::NotApplicable);
}

#[test]
fn jb_9_1_latest_value_and_epoch_gating() {
    let mut l = LatestValue::new(&[10, 11, 12], 3);
    l.observe(10, 3, 100).unwrap();
    l.observe(11, 3, 7).unwrap();
    assert_eq!(l.select(), None, "input 12 has no value yet");
    l.observe(12, 3, 1).unwrap();
    assert_eq!(l.select(), Some(&[Some(100), Some(7), Some(1)][..]));
    l.overwritten(11).unwrap();
    assert_eq!(l.select(), None, "an overwritten input counts as absent");
    l.observe(11, 3, 8).unwrap();
    assert!(l.select().is_some());
    assert_eq!(
        l.observe(10, 4, 101),
        Err(ObserveError::Epoch { got: 4, want: 3 })
    );
    l.new_epoch(4);
    assert_eq!(l.select(), None, "a new epoch starts empty");
}

#[test]
fn jb_10_1_merge_maps_round_trip_and_an_authority_answers_requests() {
    let seq = SequenceMap::new(
        30,
        7,
        Some(5_000),
        vec![(10, SeqRule::Offset(-2)), (11, SeqRule::Window(4))],
    )
    .unwrap();
    assert_eq!(SequenceMap::decode(&seq.encode().unwrap()).unwrap(), seq);
    let ts = TimestampMap::new(
        31,
        7,
        None,
        2,
        None,
        vec![(12, TimestampSource::FrameDescriptor, TimeRule::WindowNs(9))],
    )
    .unwrap();
    assert_eq!(TimestampMap::decode(&ts.encode().unwrap()).unwrap(), ts);
    // Over a real media driver: a request for (30, 7) is answered with the map.
    let dir = std::path::PathBuf::from(format!("/dev/shm/xmem-tpj-aeron-{}", std::process::id()));
    let media = MediaDriver::launch(&DriverOptions {
        dir: Some(dir.clone()),
        ..DriverOptions::default()
    })
    .unwrap();
    let client = Client::connect(&ClientOptions {
        dir: Some(dir.clone()),
        ..ClientOptions::default()
    })
    .unwrap();
    let ch = "aeron:ipc?term-length=4m";
    let mut auth = Authority::new(&client, ch, 1000).unwrap();
    auth.set_sequence(&seq).unwrap();
    auth.set_timestamp(&ts).unwrap();
    let asker = client.publication(ch, 1000).unwrap();
    let mut answers = client.subscription(ch, 1000).unwrap();
    let request = encode_request(false, 30, 7).unwrap();
    assert_eq!(decode_request(&request), Some((false, 30, 7)));
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = None;
    while got.is_none() {
        assert!(Instant::now() < deadline, "no answer");
        let _ = asker.offer(&request);
        auth.poll().unwrap();
        answers
            .poll(16, |m| {
                if let Ok(map) = SequenceMap::decode(m.bytes) {
                    got = Some(map);
                }
            })
            .unwrap();
    }
    assert_eq!(got.unwrap(), seq);
    assert!(auth.answered >= 1);
    drop((auth, asker, answers, client, media));
    let _ = std::fs::remove_dir_all(&dir);
}
