//! Streams between processes: each delivery policy, order, many subscribers, late joiners,
//! joining and leaving, dead publishers and subscribers, event-loop notification, bad input.

use std::time::{Duration, Instant};

use xmem_core::stream::{Policy, Publisher, Subscriber};
use xmem_core::{BufferPool, Error};
use xmem_tests::stream_peer::{fill_frame, frame_seq};
use xmem_tests::{PeerProcess, ShmScope};

const PEER: &str = env!("CARGO_BIN_EXE_xmem-test-peer");

/// What a `streamsub` peer reported.
#[derive(Debug, PartialEq, Eq)]
struct Report {
    received: u64,
    dropped: u64,
    gaps: u64,
    bad: u64,
    first: Option<u64>,
    last: Option<u64>,
}

fn report(line: &str) -> Report {
    let w: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(w.first(), Some(&"done"), "{line}");
    let n = |i: usize| w[i].parse::<u64>().unwrap();
    let o = |i: usize| w[i].parse::<u64>().ok();
    Report {
        received: n(1),
        dropped: n(2),
        gaps: n(3),
        bad: n(4),
        first: o(5),
        last: o(6),
    }
}

/// A publisher peer and subscriber peers joined before the first frame; runs them to the end.
struct Run {
    publisher: PeerProcess,
    subscribers: Vec<PeerProcess>,
}

impl Run {
    fn start(name: &str, policy: &str, depth: u32, count: u64, subs: &[(u64, u64)]) -> Run {
        Run::start_with(name, policy, depth, 8, count, subs)
    }

    /// As [`Run::start`], with a pool of `buffers` buffers.
    fn start_with(
        name: &str,
        policy: &str,
        depth: u32,
        buffers: u32,
        count: u64,
        subs: &[(u64, u64)],
    ) -> Run {
        let mut publisher = PeerProcess::spawn(
            PEER,
            &[
                "streampub",
                name,
                policy,
                &depth.to_string(),
                &buffers.to_string(),
                "256",
                &count.to_string(),
                "0",
            ],
            &[],
        );
        assert_eq!(publisher.line(), "ready");
        let subscribers = subs
            .iter()
            .enumerate()
            .map(|(i, (hold_us, max_held))| {
                let mut s = PeerProcess::spawn(
                    PEER,
                    &[
                        "streamsub",
                        name,
                        &(i + 1).to_string(),
                        &hold_us.to_string(),
                        &max_held.to_string(),
                    ],
                    &[],
                );
                assert_eq!(s.line(), "ready");
                s
            })
            .collect();
        let mut run = Run {
            publisher,
            subscribers,
        };
        run.publisher.send("go");
        run
    }

    /// Waits for the publisher to finish, closes the stream, collects every report.
    fn finish(mut self, count: u64) -> Vec<Report> {
        assert_eq!(self.publisher.line(), format!("done {count}"));
        assert!(self.publisher.wait().success());
        self.subscribers
            .iter_mut()
            .map(|s| {
                let r = report(&s.line());
                assert!(s.wait().success());
                r
            })
            .collect()
    }
}

#[test]
fn block_loses_nothing_and_keeps_order_even_for_a_slow_subscriber() {
    let scope = ShmScope::new("stblock");
    let name = scope.name("s");
    let count = 3000;
    let run = Run::start(&name, "block", 4, count, &[(0, 0), (300, 2)]);
    for r in run.finish(count) {
        assert_eq!(
            r,
            Report {
                received: count,
                dropped: 0,
                gaps: 0,
                bad: 0,
                first: Some(0),
                last: Some(count - 1)
            }
        );
    }
}

/// Small frames in a pool of 16: subscribers publish the hints of the buffers they free in
/// batches and the publisher claims them a word at a time (the pool's "hints kept back").
/// Subscribers holding up to 8 frames each behind queues of 8 exhaust the pool again and again:
/// the publisher must then find buffers whose hints are kept back, or be woken for them.
#[test]
fn block_loses_nothing_when_subscribers_keep_free_hints_back_from_an_exhausted_pool() {
    let scope = ShmScope::new("stkeep");
    let name = scope.name("s");
    let count = 3000;
    let run = Run::start_with(&name, "block", 8, 16, count, &[(50, 8), (20, 8)]);
    for r in run.finish(count) {
        assert_eq!(
            (r.received, r.dropped, r.gaps, r.bad, r.first, r.last),
            (count, 0, 0, 0, Some(0), Some(count - 1))
        );
    }
}

#[test]
fn drop_oldest_counts_every_drop_exactly_and_keeps_order() {
    let scope = ShmScope::new("stdrop");
    let name = scope.name("s");
    let count = 3000;
    let run = Run::start(&name, "drop", 4, count, &[(0, 0), (2000, 1)]);
    let reports = run.finish(count);
    for r in &reports {
        assert_eq!(r.bad, 0, "{r:?}");
        assert_eq!(
            r.received + r.dropped,
            count,
            "every frame received or counted dropped: {r:?}"
        );
        assert_eq!(
            r.gaps, r.dropped,
            "the frames missing are the frames dropped: {r:?}"
        );
        assert_eq!(r.last, Some(count - 1), "the newest frames stay queued: {r:?}");
    }
    assert!(
        reports[1].dropped > 0,
        "the slow subscriber must have lost frames: {:?}",
        reports[1]
    );
}

#[test]
fn latest_hands_a_slow_subscriber_only_the_newest_frame() {
    let scope = ShmScope::new("stlatest");
    let name = scope.name("s");
    let count = 2000;
    let run = Run::start(&name, "latest", 1, count, &[(3000, 1)]);
    let r = &run.finish(count)[0];
    assert_eq!(r.bad, 0, "{r:?}");
    assert_eq!(r.received + r.dropped, count, "{r:?}");
    assert_eq!(r.gaps, r.dropped, "{r:?}");
    assert_eq!(r.last, Some(count - 1), "{r:?}");
    assert!(r.dropped > r.received, "a slow subscriber sees few frames: {r:?}");
}

#[test]
fn eight_subscribers_at_once_receive_every_frame() {
    let scope = ShmScope::new("st8");
    let name = scope.name("s");
    let count = 1000;
    let subs: Vec<(u64, u64)> = (0..8).map(|i| (i * 50, 1)).collect();
    let run = Run::start(&name, "block", 8, count, &subs);
    for r in run.finish(count) {
        assert_eq!((r.received, r.gaps, r.bad, r.dropped), (count, 0, 0, 0), "{r:?}");
    }
}

fn publisher(name: &str, policy: Policy, history: u32) -> Publisher {
    Publisher::builder(name)
        .buffer_size(64)
        .buffers(8)
        .depth(4)
        .history(history)
        .policy(policy)
        .create()
        .unwrap()
}

fn publish(p: &mut Publisher) -> u64 {
    let mut f = p.loan().unwrap();
    let seq = p.published();
    fill_frame(seq, f.bytes_mut());
    p.publish(f).unwrap()
}

const WAIT: Duration = Duration::from_secs(10);

fn block() -> Policy {
    Policy::Block { timeout: WAIT }
}

#[test]
fn late_joiners_receive_the_history_first_then_what_follows() {
    let scope = ShmScope::new("sthist");
    let name = scope.name("s");
    let mut p = publisher(&name, Policy::DropOldest, 3);
    for _ in 0..5 {
        publish(&mut p);
    }
    assert_eq!(p.pool().free_count(), 8 - 3, "the history keeps three frames");
    let mut s = Subscriber::open(&name).unwrap();
    publish(&mut p);
    let seqs: Vec<u64> = (0..4)
        .map(|_| {
            let f = s.receive_timeout(WAIT).unwrap().unwrap();
            assert_eq!(frame_seq(f.bytes()), Some(f.sequence()));
            f.sequence()
        })
        .collect();
    assert_eq!(seqs, [2, 3, 4, 5]);
    assert!(s.try_receive().unwrap().is_none());
    drop(s);
    drop(p);
}

#[test]
fn subscribers_join_and_leave_while_frames_flow() {
    let scope = ShmScope::new("stchurn");
    let name = scope.name("s");
    let mut p = publisher(&name, block(), 0);
    let mut subs: Vec<(Subscriber, Option<u64>)> = Vec::new();
    for round in 0..200u64 {
        if round % 3 == 0 && subs.len() < 6 {
            subs.push((Subscriber::open(&name).unwrap(), None));
        }
        if round % 5 == 2 && !subs.is_empty() {
            subs.remove(round as usize % subs.len()); // leaves with frames still queued
        }
        publish(&mut p);
        for (s, last) in &mut subs {
            // Everyone present receives every frame, in order, from the moment it joined.
            while let Some(f) = s.try_receive().unwrap() {
                let seq = f.sequence();
                assert_eq!(frame_seq(f.bytes()), Some(seq));
                if let Some(l) = *last {
                    assert_eq!(seq, l + 1);
                }
                *last = Some(seq);
            }
        }
    }
    assert_eq!(p.subscriber_count(), subs.len());
    drop(subs);
    assert_eq!(p.subscriber_count(), 0);
    publish(&mut p);
    assert_eq!(p.pool().free_count(), 8, "left subscribers hold nothing");
    // The departed subscribers' pool slots are free again: only the publisher is attached.
    assert_eq!(p.pool().snapshot().processes.len(), 1);
}

#[test]
fn a_killed_publisher_lets_subscribers_drain_then_reports_it_gone() {
    let scope = ShmScope::new("stpubkill");
    let name = scope.name("s");
    let mut publisher = PeerProcess::spawn(
        PEER,
        &["streampub", &name, "block", "4", "8", "64", "0", "0"],
        &[],
    );
    assert_eq!(publisher.line(), "ready");
    let observer = BufferPool::open(&format!("{name}.pool")).unwrap();
    let mut s = Subscriber::open(&name).unwrap();
    publisher.send("go");
    let mut next = 0;
    while next < 1000 {
        let f = s.receive_timeout(WAIT).unwrap().expect("frames flow");
        assert_eq!((f.sequence(), frame_seq(f.bytes())), (next, Some(next)));
        next += 1;
    }
    publisher.kill();
    // What was published before the kill arrives, in order, then the stream is over.
    loop {
        match s.receive_timeout(WAIT) {
            Ok(Some(f)) => {
                assert_eq!((f.sequence(), frame_seq(f.bytes())), (next, Some(next)));
                next += 1;
            }
            Ok(None) => panic!("neither a frame nor the publisher's death within {WAIT:?}"),
            Err(Error::PublisherGone { pid, .. }) => {
                assert_eq!(pid, publisher.pid);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    drop(s);
    observer.reclaim();
    assert_eq!(observer.free_count(), 8, "every frame is back in the pool");
    assert_eq!(
        observer.snapshot().processes.len(),
        1,
        "only the observer is attached"
    );
    // The dead publisher's stream is an orphan that cleaning removes.
    let path = xmem_core::object::path_of(&xmem_core::os::ShmDir::default(), &name).unwrap();
    let entry = xmem_core::discovery::entry(&path).unwrap().unwrap();
    assert!(entry.is_orphan(), "{entry:?}");
    assert!(xmem_core::stream::clean_path(&path, false).unwrap());
}

fn killed_subscriber_returns_everything(policy: Policy) {
    let scope = ShmScope::new("stsubkill");
    let name = scope.name("s");
    let mut p = publisher(&name, policy, 0);
    let mut sub = PeerProcess::spawn(PEER, &["streamsub", &name, "1", "1000000", "3"], &[]);
    assert_eq!(sub.line(), "ready");
    assert_eq!(p.subscriber_count(), 1);
    for _ in 0..4 {
        publish(&mut p);
    }
    sub.kill(); // holding frames, with frames queued
    let deadline = Instant::now() + WAIT;
    while p.subscriber_count() > 0 {
        publish(&mut p);
        assert!(Instant::now() < deadline, "the dead subscriber was never noticed");
    }
    publish(&mut p);
    assert_eq!(p.pool().free_count(), 8, "{policy:?}: its frames came back");
    assert_eq!(
        p.pool().snapshot().processes.len(),
        1,
        "{policy:?}: its slot is free"
    );
}

#[test]
fn a_killed_subscriber_returns_what_it_held_and_what_was_queued() {
    killed_subscriber_returns_everything(Policy::DropOldest);
    killed_subscriber_returns_everything(Policy::Block {
        timeout: Duration::from_secs(30),
    });
}

#[test]
fn the_notification_descriptor_becomes_readable_when_a_frame_arrives() {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let scope = ShmScope::new("stfd");
    let name = scope.name("s");
    let mut p = publisher(&name, Policy::DropOldest, 0);
    let mut s = Subscriber::builder(&name).notify_fd(true).open().unwrap();
    let readable = |s: &Subscriber, ms: i64| {
        let fd = s.notify_fd().unwrap();
        let mut fds = [PollFd::new(&fd, PollFlags::IN)];
        let t = Timespec {
            tv_sec: ms / 1000,
            tv_nsec: (ms % 1000) * 1_000_000,
        };
        poll(&mut fds, Some(&t)).unwrap() == 1
    };
    assert!(
        s.try_receive().unwrap().is_none(),
        "nothing yet: this arms the descriptor"
    );
    assert!(!readable(&s, 0));
    for round in 0..3 {
        publish(&mut p);
        assert!(readable(&s, 10_000), "round {round}");
        assert_eq!(s.try_receive().unwrap().unwrap().sequence(), round);
        assert!(s.try_receive().unwrap().is_none());
        assert!(!readable(&s, 0), "drained and re-armed");
    }
}

/// The hook of `receive_timeout_with` runs while a receive polls, never when a frame is there
/// or while it sleeps, and `Break` ends the receive with nothing taken.
#[test]
fn a_receive_calls_its_hook_only_while_it_polls_and_stops_when_told() {
    use std::ops::ControlFlow;
    let scope = ShmScope::new("sthook");
    let name = scope.name("s");
    let mut p = publisher(&name, Policy::DropOldest, 0);

    let mut polling = Subscriber::builder(&name).spin(WAIT).open().unwrap();
    let mut calls = 0;
    let got = polling.receive_timeout_with(WAIT, &mut || {
        calls += 1;
        if calls == 3 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    assert!(got.unwrap().is_none(), "told to stop: nothing received");
    assert_eq!(calls, 3, "called while polling until it said stop");

    let mut sleeping = Subscriber::builder(&name).spin(Duration::ZERO).open().unwrap();
    let mut calls = 0;
    let got = sleeping.receive_timeout_with(Duration::from_millis(20), &mut || {
        calls += 1;
        ControlFlow::Continue(())
    });
    assert!(got.unwrap().is_none());
    assert_eq!(calls, 0, "never called while the receive sleeps");

    publish(&mut p);
    for s in [&mut polling, &mut sleeping] {
        let got = s.receive_timeout_with(WAIT, &mut || panic!("a frame was there: no polling"));
        assert_eq!(
            got.unwrap().unwrap().sequence(),
            0,
            "each subscriber receives the frame"
        );
    }
}

/// A subscriber's attachment maps the buffers read-only (a write through a raw pointer faults
/// rather than changing what others read), and it refuses every way to write access.
#[test]
fn a_subscriber_sees_the_buffers_mapped_read_only_and_gets_no_write_access() {
    let scope = ShmScope::new("stro");
    let name = scope.name("s");
    let mut p = publisher(&name, Policy::DropOldest, 0);
    let mut s = Subscriber::open(&name).unwrap();
    publish(&mut p);
    let frame = s.receive_timeout(WAIT).unwrap().unwrap();

    // This process maps the pool twice: the publisher's attachment read-write, the
    // subscriber's with its buffers (the arena) read-only.
    let permissions = |addr: usize| -> String {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps
            .lines()
            .find(|l| {
                let (range, _) = l.split_once(' ').unwrap();
                let (lo, hi) = range.split_once('-').unwrap();
                let (lo, hi) = (
                    usize::from_str_radix(lo, 16).unwrap(),
                    usize::from_str_radix(hi, 16).unwrap(),
                );
                (lo..hi).contains(&addr)
            })
            .unwrap_or_else(|| panic!("no mapping holds {addr:#x}:\n{maps}"));
        line.split_whitespace().nth(1).unwrap().to_string()
    };
    assert_eq!(permissions(frame.bytes().as_ptr() as usize), "r--s");
    let mut loaned = p.loan().unwrap();
    assert_eq!(permissions(loaned.bytes_mut().as_mut_ptr() as usize), "rw-s");
    drop(loaned);

    match s.pool().try_acquire() {
        Err(Error::ReadOnly { pool }) => assert_eq!(pool, format!("{name}.pool")),
        other => panic!("a subscriber's attachment handed out write access: {other:?}"),
    }
    assert!(matches!(
        frame.pool().acquire_timeout(WAIT),
        Err(Error::ReadOnly { .. })
    ));
    assert!(matches!(
        s.pool().get_mut(frame.token()),
        Err(Error::ReadOnly { .. })
    ));
    let frame = frame
        .try_into_mut()
        .expect_err("a received frame never becomes writable");
    assert_eq!(
        frame_seq(frame.bytes()),
        Some(0),
        "and it still reads as published"
    );
}

/// Frames at a steady 50 Hz: a subscriber with `wake_ahead` is awake when most of them come (the
/// publisher seldom has to wake it), one without is woken for every frame (the control).
#[test]
fn a_subscriber_that_wakes_ahead_is_seldom_woken_by_a_steady_publisher() {
    let scope = ShmScope::new("stpace");
    let name = scope.name("s");
    let mut p = publisher(&name, block(), 0);
    let join = |lead_us: &str| {
        let mut s = PeerProcess::spawn(PEER, &["streamwait", &name, lead_us], &[]);
        assert_eq!(s.line(), "ready");
        s
    };
    let mut paced = join("3000");
    let mut plain = join("0");
    let frames = 50;
    let period = Duration::from_millis(20);
    let start = Instant::now();
    // Frames this process published more than 2 ms after their time (descheduled on a busy
    // machine): each may cost a wake-up the pace could not foresee (that frame, overdue, and
    // the next, early against the projection), and a burst of them lets the control catch
    // frames while it is still awake. The bounds allow for them.
    let mut late = 0u64;
    for i in 0..frames {
        // The publisher's own schedule (a camera's frame clock), not a synchronisation.
        let due = start + period * i;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        if Instant::now() > due + Duration::from_millis(2) {
            late += 1;
        }
        publish(&mut p);
    }
    drop(p);
    let done = |s: &mut PeerProcess| {
        let line = s.line();
        assert!(s.wait().success());
        let w: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(w[..2], [u64::from(frames), 0], "received, bad: {line}");
        w[2]
    };
    let (paced_woken, plain_woken) = (done(&mut paced), done(&mut plain));
    eprintln!(
        "woken for {paced_woken} (waking ahead) and {plain_woken} (not) of {frames} frames, \
         {late} published late"
    );
    assert!(
        plain_woken + late >= u64::from(frames) * 4 / 5,
        "the control slept through only {plain_woken} of {frames} frames ({late} late)"
    );
    assert!(
        paced_woken <= u64::from(frames) / 2 + 2 * late,
        "woken for {paced_woken} of {frames} frames despite waking ahead ({late} late)"
    );
}

/// Pools and streams are not laid out in huge pages: on a hugetlbfs mount they are refused
/// with a reason, not with the file system's bare EINVAL.
#[test]
fn a_stream_or_pool_on_hugetlbfs_is_refused_saying_what_to_use() {
    let Some(mount) = xmem_core::os::placement::hugetlbfs_mounts().into_iter().next() else {
        eprintln!("skipped: no hugetlbfs mounted here");
        return;
    };
    let name = format!("sthuge{}", std::process::id());
    let stream = Publisher::builder(&name)
        .directory(&mount.path)
        .buffer_size(64)
        .create();
    let pool = BufferPool::builder(&name)
        .directory(&mount.path)
        .buffer_size(64)
        .create();
    for e in [stream.err(), pool.err()] {
        match e {
            Some(e @ Error::Placement { .. }) => assert!(e.to_string().contains("/dev/shm"), "{e}"),
            other => panic!("expected Placement, got {other:?}"),
        }
    }
    let left: Vec<_> = std::fs::read_dir(&mount.path)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(&name))
        .collect();
    assert!(left.is_empty(), "left {left:?}");
}

#[test]
fn bad_input_gives_typed_errors() {
    let scope = ShmScope::new("stbad");
    let name = scope.name("s");
    let kind = |e: Error| {
        format!("{e:?}")
            .split([' ', '{', '('])
            .next()
            .unwrap()
            .to_string()
    };
    assert_eq!(kind(Subscriber::open(&name).unwrap_err()), "NotFound");
    assert_eq!(kind(Subscriber::open("../x").unwrap_err()), "InvalidName");
    let bad = |b: xmem_core::stream::PublisherBuilder| kind(b.create().unwrap_err());
    assert_eq!(
        bad(Publisher::builder(&name).buffer_size(64).depth(3)),
        "InvalidConfig"
    );
    assert_eq!(
        bad(Publisher::builder(&name).buffer_size(64).max_subscribers(0)),
        "InvalidConfig"
    );
    assert_eq!(bad(Publisher::builder(&name)), "InvalidConfig");
    let mut p = Publisher::builder(&name)
        .buffer_size(64)
        .max_subscribers(1)
        .create()
        .unwrap();
    // One publisher at a time, even in another process.
    let mut other = PeerProcess::spawn(PEER, &["streampub", &name, "drop", "4", "8", "64", "1", "0"], &[]);
    assert!(matches!(other.wait().code(), Some(c) if c != 0));
    assert_eq!(
        kind(
            Publisher::builder(&name)
                .buffer_size(64)
                .max_subscribers(1)
                .create()
                .unwrap_err()
        ),
        "PublisherExists"
    );
    // Also when asking for another pool shape: the live publisher is the reason, not the pool.
    assert_eq!(
        kind(
            Publisher::builder(&name)
                .buffer_size(128)
                .buffers(3)
                .create()
                .unwrap_err()
        ),
        "PublisherExists"
    );
    let s = Subscriber::open(&name).unwrap();
    assert_eq!(kind(Subscriber::open(&name).unwrap_err()), "TooManySubscribers");
    // A frame from another pool cannot be published.
    let foreign = BufferPool::builder(&scope.name("other"))
        .buffer_size(64)
        .create()
        .unwrap();
    assert_eq!(
        kind(p.publish(foreign.acquire().unwrap()).unwrap_err().into()),
        "InvalidConfig"
    );
    // A segment is not a stream.
    let seg = xmem_core::segment::SegmentWriter::create(&scope.name("seg"), 4096).unwrap();
    assert_eq!(
        kind(Subscriber::open(&scope.name("seg")).unwrap_err()),
        "WrongKind"
    );
    drop((s, p, seg, foreign));
}

#[test]
fn a_frame_kept_by_its_publisher_outlives_every_subscriber_reference() {
    let scope = ShmScope::new("stkeep");
    let name = scope.name("s");
    for history in [0, 2] {
        let mut p = publisher(&name, Policy::DropOldest, history);
        let mut s = Subscriber::open(&name).unwrap();
        assert_eq!(p.subscriber_count(), 1);
        let mut f = p.loan().unwrap();
        fill_frame(0, f.bytes_mut());
        let (seq, kept) = p.publish_and_keep(f).unwrap();
        assert_eq!((seq, kept.sequence()), (0, 0));
        drop(s.try_receive().unwrap().expect("delivered"));
        assert_eq!(frame_seq(kept.bytes()), Some(0), "still the frame published");
        let free = p.pool().free_count();
        drop(kept);
        // Without history the kept reference was the last one; with history the ring keeps it.
        let expect = if history == 0 { free + 1 } else { free };
        assert_eq!(p.pool().free_count(), expect, "history {history}");
        drop(s);
        drop(p);
    }
}
