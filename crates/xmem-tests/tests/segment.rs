//! Seqlock segments between real processes: torn values never returned, one writer at a time,
//! writers killed mid-write, a thousand readers, bad input.

use std::time::{Duration, Instant};

use xmem_core::object;
use xmem_core::os::process::wait_exit;
use xmem_core::os::ShmDir;
use xmem_core::segment::{HugePages, OnWriterGone, Segment, SegmentReader, SegmentWriter};
use xmem_core::Error;
use xmem_tests::{check_segment_reads, is_segment_value, segment_value, PeerProcess, Rng, ShmScope};

const PEER: &str = env!("CARGO_BIN_EXE_xmem-test-peer");

fn path(name: &str) -> std::path::PathBuf {
    object::path_of(&ShmDir::default(), name).unwrap()
}

/// Removes a segment whose writer was killed (what `xmem clean` does).
fn clean(name: &str) {
    assert!(
        xmem_core::segment::clean_path(&path(name), false).unwrap(),
        "{name} should be an orphan"
    );
}

fn kind(e: Error) -> String {
    format!("{e:?}")
        .chars()
        .take_while(|c| c.is_alphanumeric())
        .collect()
}

/// "done READS TORN ERRORS LEAST" from a `segreader` peer.
fn tally(peer: &mut PeerProcess) -> [u64; 4] {
    let line = peer.line();
    let words: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|w| w.parse().unwrap())
        .collect();
    assert_eq!(words.len(), 4, "{line}");
    [words[0], words[1], words[2], words[3]]
}

#[test]
fn every_value_read_is_one_complete_write_across_threads_and_processes_and_the_version_wraps() {
    let scope = ShmScope::new("segstress");
    let name = scope.name("seg");
    let start = u64::MAX - 200; // wraps after 100 writes
    let mut writer = PeerProcess::spawn(PEER, &["segwriter", &name, "16384", &start.to_string()], &[]);
    assert_eq!(writer.line(), "ready");
    let run = Duration::from_millis(1500);
    let mut procs: Vec<PeerProcess> = (0..4)
        .map(|_| {
            PeerProcess::spawn(
                PEER,
                &["segreader", &name, "2", &run.as_millis().to_string()],
                &[],
            )
        })
        .collect();
    let end = Instant::now() + run;
    let threads: Vec<_> = (0..16)
        .map(|_| {
            let name = name.clone();
            std::thread::spawn(move || check_segment_reads(&name, end))
        })
        .collect();
    for t in threads {
        let t = t.join().unwrap();
        assert_eq!(t.torn, 0, "a thread read a torn value");
        assert_eq!(t.errors, 0);
        assert!(t.reads > 0);
    }
    for p in &mut procs {
        let [reads, torn, errors, least] = tally(p);
        assert_eq!(torn, 0, "a reader process read a torn value");
        assert_eq!(errors, 0);
        assert!(reads > 0 && least > 0);
    }
    // The counter wraps (100 writes; the writer keeps writing), and readers still work.
    let mut r = SegmentReader::open(&name).unwrap();
    let mut buf = vec![0u8; r.size()];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = r.read_into(&mut buf).unwrap();
        assert!(is_segment_value(&buf));
        if v < start {
            break;
        }
        assert!(Instant::now() < deadline, "the version did not wrap: {v}");
        std::thread::yield_now();
    }
    writer.kill();
    drop(r);
    clean(&name);
}

#[test]
fn a_thousand_readers_in_four_processes_keep_working() {
    let scope = ShmScope::new("segscale");
    let name = scope.name("seg");
    let mut w = SegmentWriter::create(&name, 4096).unwrap();
    let mut value = vec![0u8; 4096];
    segment_value(1, &mut value);
    w.write(&value).unwrap();
    let run = Duration::from_millis(2000);
    let mut procs: Vec<PeerProcess> = (0..4)
        .map(|_| {
            PeerProcess::spawn(
                PEER,
                &["segreader", &name, "250", &run.as_millis().to_string()],
                &[],
            )
        })
        .collect();
    let end = Instant::now() + run + Duration::from_millis(500);
    let mut seq = 1;
    while Instant::now() < end {
        seq += 1;
        segment_value(seq, &mut value);
        w.write(&value).unwrap();
        std::thread::yield_now();
    }
    let mut total = 0;
    for p in &mut procs {
        let [reads, torn, errors, least] = tally(p);
        assert_eq!(torn, 0);
        assert_eq!(errors, 0, "readers must not give up under load");
        assert!(least > 0, "a reader thread never completed a read");
        total += reads;
    }
    eprintln!("1000 readers: {total} checked reads while the writer made {seq} writes");
}

#[test]
fn one_writer_at_a_time_and_a_dead_writers_segment_is_taken_over() {
    let scope = ShmScope::new("segwriter");
    let name = scope.name("seg");
    let mut first = PeerProcess::spawn(PEER, &[], &[]);
    let pid: u32 = first.ok(&format!("segcreate {name} 4096"))[0].parse().unwrap();
    match SegmentWriter::create(&name, 4096) {
        Err(e @ Error::WriterExists { .. }) => {
            assert!(e.to_string().contains(&pid.to_string()), "{e}");
            assert!(matches!(e, Error::WriterExists { pid: p, .. } if p == pid));
        }
        other => panic!("expected WriterExists, got {other:?}"),
    }
    first.ok("segwrite hello");
    let mut r = SegmentReader::open(&name).unwrap();
    assert!(r.writer_alive());
    first.kill();
    assert!(!r.writer_alive(), "the kernel dropped the dead writer's lock");
    // The dead writer's segment is replaced; the old reader keeps the old value.
    let mut w = SegmentWriter::create(&name, 8192).unwrap();
    w.write(b"second").unwrap();
    let mut buf = [0u8; 5];
    r.read_into(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    let mut fresh = SegmentReader::open(&name).unwrap();
    let mut buf = [0u8; 6];
    fresh.read_into(&mut buf).unwrap();
    assert_eq!(&buf, b"second");
    assert_eq!(fresh.size(), 8192);
}

#[test]
fn a_writer_killed_mid_write_never_yields_a_torn_value() {
    let scope = ShmScope::new("segkill");
    // Deterministic: the writer dies between its data and its closing version. In a directory
    // of its own, so that the cleanup below sees no other test's objects.
    let dir = std::path::PathBuf::from("/dev/shm").join(scope.name("dir"));
    std::fs::create_dir(&dir).unwrap();
    for nth in [1, 2, 50] {
        let name = format!("mid{nth}");
        let at = format!("segment.mid_write:{nth}");
        let mut writer = PeerProcess::spawn(
            PEER,
            &["segwriter", &name, "8192", "0"],
            &[("XMEM_CRASH_AT", &at), ("XMEM_SHM_DIR", dir.to_str().unwrap())],
        );
        assert!(
            wait_exit(writer.pid, Duration::from_secs(20)).unwrap(),
            "never reached {at}"
        );
        assert_eq!(writer.wait().code(), Some(137));
        let mut r = SegmentReader::builder(&name).directory(&dir).open().unwrap();
        let mut buf = vec![0u8; 8192];
        assert_eq!(kind(r.read_into(&mut buf).unwrap_err()), "WriterGone", "{at}");
        let removed = xmem_core::discovery::cleanup_in(&ShmDir::new(&dir), Default::default()).unwrap();
        assert_eq!(removed.len(), 1, "{removed:?}");
        assert_eq!(removed[0].name, name, "cleanup_orphans removes it");
        assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
    }
    std::fs::remove_dir(&dir).unwrap();
    // Random: kill it anywhere while readers read.
    let mut rng = Rng::from_env("a_writer_killed_mid_write_never_yields_a_torn_value");
    for i in 0..30 {
        let name = scope.name(&format!("rand{i}"));
        let mut writer = PeerProcess::spawn(PEER, &["segwriter", &name, "65536", "0"], &[]);
        assert_eq!(writer.line(), "ready");
        let mut r = SegmentReader::open(&name).unwrap();
        let mut buf = vec![0u8; 65536];
        let until = Instant::now() + Duration::from_micros(rng.below(3000));
        while Instant::now() < until {
            r.read_into(&mut buf).unwrap();
            assert!(is_segment_value(&buf), "torn read while the writer lived");
        }
        writer.kill();
        match r.read_into(&mut buf) {
            Ok(_) => assert!(is_segment_value(&buf), "torn read after the writer died"),
            Err(e) => assert_eq!(kind(e), "WriterGone"),
        }
        let mut strict = SegmentReader::builder(&name)
            .on_writer_gone(OnWriterGone::Fail)
            .open()
            .unwrap();
        assert_eq!(kind(strict.read_into(&mut buf).unwrap_err()), "WriterGone");
        drop((r, strict));
        clean(&name);
    }
}

#[test]
fn a_killed_reader_leaves_nothing_behind() {
    let scope = ShmScope::new("segreaderkill");
    let name = scope.name("seg");
    let mut w = SegmentWriter::create(&name, 4096).unwrap();
    w.write(b"v1").unwrap();
    let before = scope.leftovers();
    for _ in 0..5 {
        let mut reader = PeerProcess::spawn(PEER, &[], &[]);
        reader.ok(&format!("segopen {name}"));
        reader.kill();
    }
    assert_eq!(scope.leftovers(), before);
    w.write(b"v2").unwrap();
    let mut buf = [0u8; 2];
    SegmentReader::open(&name).unwrap().read_into(&mut buf).unwrap();
    assert_eq!(&buf, b"v2");
}

#[test]
fn sizes_names_collisions_and_damaged_headers_are_typed_errors() {
    let scope = ShmScope::new("segbad");
    let name = scope.name("seg");
    for size in [0, 100, 4095, 4097, 6000, (1 << 30) + 4096] {
        match SegmentWriter::create(&name, size) {
            Err(e @ Error::InvalidSize { .. }) => assert!(e.to_string().contains("4 KiB"), "{e}"),
            other => panic!("{size}: expected InvalidSize, got {other:?}"),
        }
    }
    assert!(matches!(
        SegmentWriter::create("../x", 4096),
        Err(Error::InvalidName { .. })
    ));
    assert!(matches!(
        SegmentReader::open(&scope.name("missing")),
        Err(Error::NotFound { .. })
    ));

    // A pool holds the name: a segment cannot take it, and neither kind opens as the other.
    let pool_name = scope.name("pool");
    let pool = xmem_core::BufferPool::builder(&pool_name)
        .buffers(1)
        .buffer_size(64)
        .create()
        .unwrap();
    match SegmentWriter::create(&pool_name, 4096) {
        Err(e @ Error::AlreadyExists { .. }) => assert!(e.to_string().contains("pool"), "{e}"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert!(matches!(
        SegmentReader::open(&pool_name),
        Err(Error::WrongKind { .. })
    ));
    let w = SegmentWriter::create(&name, 4096).unwrap();
    assert!(matches!(
        xmem_core::BufferPool::open(&name),
        Err(Error::WrongKind { .. })
    ));

    // Damaged copies of a segment's file.
    let image = std::fs::read(path(&name)).unwrap();
    type Damage = fn(&mut Vec<u8>);
    let cases: [(&str, Damage, &str); 5] = [
        (
            "size",
            |b| b[136..144].copy_from_slice(&5000u64.to_le_bytes()),
            "Corrupt",
        ),
        (
            "offset",
            |b| b[128..136].copy_from_slice(&64u64.to_le_bytes()),
            "Corrupt",
        ),
        ("hash", |b| b[176] ^= 1, "VersionMismatch"),
        ("short", |b| b.truncate(5000), "Truncated"),
        ("magic", |b| b[0] = b'Y', "NotXmem"),
    ];
    for (what, damage, expected) in cases {
        let damaged = scope.name(what);
        let mut bytes = image.clone();
        damage(&mut bytes);
        std::fs::write(path(&damaged), &bytes).unwrap();
        let got = SegmentReader::builder(&damaged)
            .open_timeout(Duration::from_millis(50))
            .open();
        assert_eq!(
            got.map(|_| "Ok".to_string()).unwrap_or_else(kind),
            expected,
            "{what}"
        );
        std::fs::remove_file(path(&damaged)).unwrap();
    }
    drop((w, pool));
}

#[test]
fn typed_segments_round_trip_and_refuse_another_type() {
    #[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct Pose {
        x: f64,
        y: f64,
        theta: f64,
    }
    let scope = ShmScope::new("segtyped");
    let name = scope.name("pose");
    let mut w = Segment::<Pose>::create(&name).unwrap();
    w.write(&Pose {
        x: 1.0,
        y: 2.0,
        theta: 0.5,
    })
    .unwrap();
    let mut r = Segment::<Pose>::open(&name).unwrap();
    assert_eq!(
        r.read().unwrap(),
        Pose {
            x: 1.0,
            y: 2.0,
            theta: 0.5
        }
    );
    w.update(|p| p.theta += 1.0).unwrap();
    assert_eq!(r.read().unwrap().theta, 1.5);
    match Segment::<[u32; 6]>::open(&name) {
        Err(e @ Error::TypeMismatch { .. }) => assert!(e.to_string().contains("u32"), "{e}"),
        Err(e) => panic!("expected TypeMismatch, got {e}"),
        Ok(_) => panic!("expected TypeMismatch, got a reader"),
    }
}

#[test]
fn versions_change_tracking_and_in_place_writes() {
    let scope = ShmScope::new("segapi");
    let name = scope.name("seg");
    let mut w = SegmentWriter::create(&name, 4096).unwrap();
    let mut r = SegmentReader::open(&name).unwrap();
    assert_eq!(r.version(), None);
    assert!(r.has_changed());
    let mut buf = [0u8; 16];
    let v0 = r.read_into(&mut buf).unwrap();
    assert!(!r.has_changed());
    w.write_with(|view| {
        view.write_u64(0, 7).unwrap();
        view.write_u64(8, 7).unwrap();
        assert!(view.write(4090, &[0; 7]).is_err(), "out of bounds");
    });
    assert!(r.has_changed());
    let (a, b) = r
        .read_with(|s| (s.read_u64(0).unwrap(), s.read_u64(8).unwrap()))
        .unwrap();
    assert_eq!((a, b), (7, 7));
    assert_eq!(r.version(), Some(v0 + 2));
    w.write_at(4000, b"tail").unwrap();
    assert!(matches!(
        w.write_at(4093, b"tail"),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        r.read_into(&mut [0u8; 4097]),
        Err(Error::OutOfBounds { .. })
    ));
    let all = r.read().unwrap();
    assert_eq!(&all[4000..4004], b"tail");
    assert_eq!(&all[0..8], &7u64.to_ne_bytes());
    // A writer that goes away: the reader keeps the value, or (when asked) says so.
    drop(w);
    assert!(!r.writer_alive());
    assert_eq!(r.read().unwrap(), all);
    assert!(scope.leftovers().is_empty(), "the writer removed the name");
}

#[test]
fn placement_options_work_or_say_how_to_make_them_work() {
    let scope = ShmScope::new("segplace");
    let name = scope.name("seg");
    let huge_ready = xmem_core::os::placement::hugetlbfs_mounts()
        .iter()
        .any(|m| xmem_core::os::placement::free_huge_pages(m.page_size) > 0);
    if huge_ready {
        eprintln!("huge pages are available here: testing their use");
        let w = SegmentWriter::builder(&name)
            .huge_pages(HugePages::Require)
            .create()
            .unwrap();
        let info = xmem_core::segment::inspect_path(w.path(), &name).unwrap();
        assert!(info.huge_pages);
    } else {
        eprintln!("no huge pages here: testing the error and the fallback");
        match SegmentWriter::builder(&name)
            .huge_pages(HugePages::Require)
            .create()
        {
            Err(e @ Error::Placement { .. }) => assert!(e.to_string().contains("nr_hugepages"), "{e}"),
            other => panic!("expected Placement, got {other:?}"),
        }
        let w = SegmentWriter::builder(&name)
            .huge_pages(HugePages::Prefer)
            .create()
            .unwrap();
        assert!(
            !xmem_core::segment::inspect_path(w.path(), &name)
                .unwrap()
                .huge_pages
        );
    }
    match SegmentWriter::builder(&scope.name("numa"))
        .numa_node(999)
        .create()
    {
        Err(e @ Error::Placement { .. }) => assert!(e.to_string().contains("999"), "{e}"),
        other => panic!("expected Placement, got {other:?}"),
    }
    assert!(
        scope.leftovers().iter().all(|f| !f.contains("numa")),
        "a failed creation leaves nothing"
    );
    if xmem_core::os::placement::numa_nodes().contains(&0) {
        let w = SegmentWriter::builder(&scope.name("node0"))
            .numa_node(0)
            .create()
            .unwrap();
        assert_eq!(
            xmem_core::segment::inspect_path(w.path(), &scope.name("node0"))
                .unwrap()
                .numa_node,
            Some(0)
        );
    }
    match SegmentWriter::builder(&scope.name("locked"))
        .lock_in_memory(true)
        .create()
    {
        Ok(w) => assert!(
            xmem_core::segment::inspect_path(w.path(), &scope.name("locked"))
                .unwrap()
                .locked
        ),
        Err(e @ Error::Placement { .. }) => assert!(e.to_string().contains("ulimit -l"), "{e}"),
        Err(e) => panic!("{e}"),
    }
}
