//! Between processes (W-15.13, W-15.3-1, W-15.4-1, W-8.3-1a): a producer writes 1920×1080×3
//! frames at full speed into an 8-slot ring while two consumer processes follow it and check
//! every frame they accept (a checksum inside the payload); a killed producer or consumer
//! leaves the others correct. Peer: `src/bin/tp-peer.rs`.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

const PEER: &str = env!("CARGO_BIN_EXE_tp-peer");

struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
}

impl Peer {
    fn start(args: &[&str]) -> Peer {
        let mut child = Command::new(PEER)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        Peer {
            stdin: child.stdin.take(),
            out: BufReader::new(child.stdout.take().unwrap()),
            child,
        }
    }
    fn line(&mut self) -> String {
        let mut l = String::new();
        self.out.read_line(&mut l).unwrap();
        l.trim().to_string()
    }
    fn send(&mut self, l: &str) {
        writeln!(self.stdin.as_mut().unwrap(), "{l}").unwrap();
    }
    fn close_stdin(&mut self) {
        self.stdin.take();
    }
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private directory for the regions, removed at the end (the test fails if it cannot be).
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let p = PathBuf::from("/dev/shm").join(format!("xmem-tp-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Dir(p)
    }
    fn s(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).expect("remove the test's regions");
    }
}

#[derive(Debug)]
#[allow(dead_code)] // `late` is printed, not asserted: how often a frame is caught depends on timing
struct Report {
    accepted: u64,
    gap: u64,
    late: u64,
    invalid: u64,
    bad: u64,
}

fn report(line: &str) -> Report {
    let w: Vec<u64> = line
        .strip_prefix("done ")
        .unwrap_or_else(|| panic!("{line}"))
        .split(' ')
        .map(|x| x.parse().unwrap())
        .collect();
    Report {
        accepted: w[0],
        gap: w[1],
        late: w[2],
        invalid: w[3],
        bad: w[4],
    }
}

fn start(dir: &Dir, count: u64, consumers: usize) -> (Peer, Vec<Peer>) {
    let mut producer = Peer::start(&["produce", dir.s(), &count.to_string()]);
    let ready = producer.line();
    let epoch = ready
        .strip_prefix("ready ")
        .unwrap_or_else(|| panic!("{ready}"))
        .to_string();
    let consumers = (0..consumers)
        .map(|_| {
            let mut c = Peer::start(&["consume", dir.s(), &epoch]);
            assert_eq!(c.line(), "ready");
            c
        })
        .collect();
    producer.send("go");
    (producer, consumers)
}

fn finish(consumers: &mut [Peer]) -> Vec<Report> {
    consumers
        .iter_mut()
        .map(|c| {
            c.close_stdin();
            let r = report(&c.line());
            assert!(c.child.wait().unwrap().success());
            r
        })
        .collect()
}

#[test]
fn w_15_13_two_consumers_never_accept_a_torn_frame_under_full_speed_overwrite() {
    let dir = Dir::new("torn");
    let count = 400;
    let (mut producer, mut consumers) = start(&dir, count, 2);
    assert_eq!(producer.line(), format!("done {count}"));
    producer.close_stdin();
    for r in finish(&mut consumers) {
        assert_eq!((r.bad, r.invalid), (0, 0), "{r:?}");
        assert!(r.accepted > 0, "{r:?}");
        assert!(r.accepted + r.gap <= count, "{r:?}");
        println!("{r:?}");
    }
}

#[test]
fn a_producer_killed_mid_commit_leaves_consumers_correct() {
    let dir = Dir::new("pkill");
    let mut rng = std::collections::hash_map::RandomState::new();
    for round in 0..3u64 {
        let (mut producer, mut consumers) = start(&dir, 0, 2);
        // A random moment of a producer that never stops publishing: almost surely mid-frame.
        use std::hash::{BuildHasher, Hasher};
        let mut h = rng.build_hasher();
        h.write_u64(round);
        std::thread::sleep(Duration::from_millis(20 + h.finish() % 200));
        producer.kill();
        for r in finish(&mut consumers) {
            assert_eq!((r.bad, r.invalid), (0, 0), "round {round}: {r:?}");
        }
        rng = std::collections::hash_map::RandomState::new();
    }
}

#[test]
fn a_consumer_killed_mid_read_leaves_the_others_correct() {
    let dir = Dir::new("ckill");
    let count = 300;
    let (mut producer, mut consumers) = start(&dir, count, 3);
    std::thread::sleep(Duration::from_millis(50)); // a random moment of its reading
    consumers[0].kill();
    assert_eq!(producer.line(), format!("done {count}"));
    producer.close_stdin();
    for r in finish(&mut consumers[1..]) {
        assert_eq!((r.bad, r.invalid), (0, 0), "{r:?}");
        assert!(r.accepted > 0, "{r:?}");
    }
}
