//! Publishers and subscribers killed with SIGKILL at random moments while frames flow: no
//! subscriber ever sees a frame change under it, and every buffer comes back to the pool.

use std::time::{Duration, Instant};

use xmem_core::BufferPool;
use xmem_tests::{PeerProcess, Rng, ShmScope};

const PEER: &str = env!("CARGO_BIN_EXE_xmem-test-peer");
/// Enough for subscribers to keep free hints back (the pool's "hints kept back": a batch is an
/// eighth of the pool), few enough that the subscribers' held frames exhaust it.
const BUFFERS: u32 = 16;

/// Kills: 200 by default, `XMEM_KILL_ITERATIONS` for more.
fn iterations() -> u64 {
    std::env::var("XMEM_KILL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

fn spin_for(d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

struct Stage {
    name: String,
    rng: Rng,
    publisher: PeerProcess,
    subscribers: Vec<PeerProcess>,
}

impl Stage {
    /// A publisher (of a random policy) that waits for `go`.
    fn start_publisher(name: &str, rng: &mut Rng) -> PeerProcess {
        let policy = ["block", "drop", "latest"][rng.below(3) as usize];
        let depth = if policy == "latest" { "1" } else { "2" };
        let mut p = PeerProcess::spawn(
            PEER,
            &[
                "streampub",
                name,
                policy,
                depth,
                &BUFFERS.to_string(),
                "512",
                "0",
                &rng.below(3).to_string(),
            ],
            &[],
        );
        assert_eq!(p.line(), "ready", "publisher {}", p.pid);
        p
    }

    /// A subscriber that holds up to 6 frames for up to 300 µs each.
    fn start_subscriber(&mut self, wait_ready: bool) -> PeerProcess {
        let seed = self.rng.next_u64().to_string();
        let mut s = PeerProcess::spawn(PEER, &["streamsub", &self.name, &seed, "300", "6"], &[]);
        if wait_ready {
            assert_eq!(s.line(), "ready", "subscriber {}", s.pid);
        }
        s
    }

    /// Every subscriber of a dead publisher drains, reports, and exits; none saw a bad frame.
    fn drain_subscribers(&mut self, context: &str) {
        for mut s in self.subscribers.drain(..) {
            let line = s.line();
            let words: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(words.first(), Some(&"done"), "{context}: {line}");
            assert_eq!(
                words[4], "0",
                "{context}: a subscriber saw a frame change under it: {line}"
            );
            assert!(s.wait().success(), "{context}");
        }
    }
}

/// After everyone is gone: only the observer is attached and every buffer is free.
fn assert_all_returned(observer: &BufferPool, context: &str) {
    observer.reclaim();
    let snap = observer.snapshot();
    assert_eq!(
        snap.processes.iter().map(|p| p.pid).collect::<Vec<_>>(),
        [std::process::id()],
        "{context}: slots not released: {:?}",
        snap.processes
    );
    assert_eq!(
        observer.free_count(),
        BUFFERS,
        "{context}: buffers not returned: {:?}",
        snap.buffers
    );
}

#[test]
fn sigkill_of_publishers_and_subscribers_at_random_moments_loses_no_buffer() {
    let scope = ShmScope::new("stkill");
    let name = scope.name("s");
    let mut rng = Rng::from_env("sigkill_of_publishers_and_subscribers_at_random_moments_loses_no_buffer");
    let publisher = Stage::start_publisher(&name, &mut rng);
    // The observer keeps the pool alive across publishers, to check it.
    let observer = BufferPool::open(&format!("{name}.pool")).unwrap();
    let mut stage = Stage {
        name: name.clone(),
        rng,
        publisher,
        subscribers: Vec::new(),
    };
    for _ in 0..2 {
        let s = stage.start_subscriber(true);
        stage.subscribers.push(s);
    }
    stage.publisher.send("go");
    let n = iterations();
    let mut publisher_kills = 0;
    for i in 0..n {
        let context = format!("iteration {i}");
        spin_for(Duration::from_micros(stage.rng.below(3000)));
        let victim = stage.rng.below(3) as usize;
        if victim == 0 {
            stage.publisher.kill();
            publisher_kills += 1;
            stage.drain_subscribers(&context);
            assert_all_returned(&observer, &context);
            // A new publisher takes the dead one's stream over and re-uses its pool.
            stage.publisher = Stage::start_publisher(&name, &mut stage.rng);
            for _ in 0..2 {
                let s = stage.start_subscriber(true);
                stage.subscribers.push(s);
            }
            stage.publisher.send("go");
        } else {
            stage.subscribers[victim - 1].kill();
            // Its replacement joins while frames flow; now and then it is killed while joining.
            if stage.rng.below(4) == 0 {
                let mut s = stage.start_subscriber(false);
                spin_for(Duration::from_micros(stage.rng.below(5000)));
                s.kill();
            }
            stage.subscribers[victim - 1] = stage.start_subscriber(true);
        }
    }
    stage.publisher.kill();
    stage.drain_subscribers("the end");
    assert_all_returned(&observer, "the end");
    assert!(publisher_kills > 0);
    let path = xmem_core::object::path_of(&xmem_core::os::ShmDir::default(), &name).unwrap();
    assert!(
        xmem_core::stream::clean_path(&path, false).unwrap(),
        "the last publisher's stream is an orphan"
    );
    drop(observer);
}
