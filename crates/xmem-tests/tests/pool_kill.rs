//! Processes killed with SIGKILL (or at named crash points) while they change references:
//! after reclamation every count is exact, every buffer is reusable, nothing is left behind.

use std::time::{Duration, Instant};

use xmem_core::os::process::wait_exit;
use xmem_core::{Buffer, BufferPool, Error};
use xmem_tests::{token_hex, PeerProcess, Rng, ShmScope};

const PEER: &str = env!("CARGO_BIN_EXE_xmem-test-peer");
const BUFFERS: u32 = 8;

/// Iterations of the random-kill test: 200 by default, `XMEM_KILL_ITERATIONS` for more.
fn iterations() -> u64 {
    std::env::var("XMEM_KILL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// The invariants after every reclaim (see [`xmem_tests::assert_exact`]).
fn assert_exact(pool: &BufferPool, shared: &Buffer, context: &str) {
    xmem_tests::assert_exact(pool, shared, BUFFERS, context);
}

fn setup(scope: &ShmScope) -> (BufferPool, Buffer, String) {
    let name = scope.name("pool");
    let pool = BufferPool::builder(&name)
        .buffers(BUFFERS)
        .buffer_size(512)
        .create()
        .unwrap();
    let shared = pool.acquire().unwrap().freeze();
    (pool, shared, name)
}

fn churn(name: &str, shared: &Buffer, seed: u64, env: &[(&str, &str)]) -> PeerProcess {
    PeerProcess::spawn(
        PEER,
        &["churn", name, &seed.to_string(), &token_hex(shared.token())],
        env,
    )
}

/// Waits for a peer that is expected to exit by itself (at a crash point).
fn exit_code(peer: &mut PeerProcess, point: &str) -> Option<i32> {
    assert!(
        wait_exit(peer.pid, Duration::from_secs(20)).unwrap(),
        "peer {} never reached crash point {point}",
        peer.pid
    );
    peer.wait().code()
}

#[test]
fn sigkill_at_random_points_returns_every_reference() {
    let scope = ShmScope::new("kill");
    let (pool, shared, name) = setup(&scope);
    let mut rng = Rng::from_env("sigkill_at_random_points_returns_every_reference");
    let n = iterations();
    let mut reclaimed = 0;
    for i in 0..n {
        let mut child = churn(&name, &shared, rng.next_u64(), &[]);
        assert_eq!(child.line(), "ready");
        // Let it run for a random moment, then kill it wherever it is.
        let until = Instant::now() + Duration::from_micros(rng.below(3000));
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        child.kill();
        let report = pool.reclaim();
        assert_eq!(report.dead_processes, vec![child.pid], "iteration {i}");
        reclaimed += report.references;
        assert_exact(&pool, &shared, &format!("iteration {i}"));
    }
    assert!(
        reclaimed > 0,
        "no kill ever landed while the child held a reference"
    );
    eprintln!("{n} kills, {reclaimed} references reclaimed");
}

#[test]
fn a_crash_at_every_named_point_is_reclaimed_exactly() {
    let scope = ShmScope::new("points");
    let (pool, shared, name) = setup(&scope);
    let points = [
        "acquire.after_hint",
        "acquire.after_take",
        "get.after_take",
        "release.after_local",
        "release.after_empty",
        "attach.after_claim",
    ];
    let mut rng = Rng::from_env("a_crash_at_every_named_point_is_reclaimed_exactly");
    for point in points {
        // A process attaches once; the other points are hit again and again.
        let nths: &[u32] = if point.starts_with("attach") {
            &[1]
        } else {
            &[1, 2, 3, 7, 20]
        };
        for &nth in nths {
            let at = format!("{point}:{nth}");
            let mut child = churn(&name, &shared, rng.next_u64(), &[("XMEM_CRASH_AT", &at)]);
            assert_eq!(exit_code(&mut child, &at), Some(137), "{at}");
            pool.reclaim();
            assert_exact(&pool, &shared, &at);
        }
    }
}

#[test]
fn a_reclaimer_killed_halfway_is_taken_over_by_the_next() {
    let scope = ShmScope::new("reclaimer");
    let (pool, shared, name) = setup(&scope);
    let mut rng = Rng::from_env("a_reclaimer_killed_halfway_is_taken_over_by_the_next");
    for point in ["reclaim.after_claim", "reclaim.after_clear"] {
        for _ in 0..5 {
            // A victim dies holding references...
            let mut victim = churn(&name, &shared, rng.next_u64(), &[]);
            assert_eq!(victim.line(), "ready");
            let until = Instant::now() + Duration::from_micros(200 + rng.below(1000));
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            victim.kill();
            // ... a second process starts reclaiming them when it opens the pool, and dies too.
            let mut reclaimer = churn(&name, &shared, rng.next_u64(), &[("XMEM_CRASH_AT", point)]);
            assert_eq!(exit_code(&mut reclaimer, point), Some(137), "{point}");
            let report = pool.reclaim();
            assert!(
                report.dead_processes.contains(&reclaimer.pid),
                "{point}: {report:?}"
            );
            assert_exact(&pool, &shared, point);
        }
    }
}

#[test]
fn a_creator_killed_before_publishing_leaves_nothing_and_the_name_free() {
    let scope = ShmScope::new("creator");
    let name = scope.name("pool");
    for point in ["object.before_ready", "object.before_publish"] {
        let mut creator = PeerProcess::spawn(PEER, &[], &[("XMEM_CRASH_AT", point)]);
        creator.send(&format!("create {name} 4 64"));
        assert_eq!(exit_code(&mut creator, point), Some(137));
        assert!(scope.leftovers().is_empty(), "{point}: {:?}", scope.leftovers());
        match BufferPool::open(&name) {
            Err(Error::NotFound { .. }) => {}
            other => panic!("{point}: expected NotFound, got {other:?}"),
        }
    }
    let pool = BufferPool::builder(&name)
        .buffers(4)
        .buffer_size(64)
        .create()
        .unwrap();
    assert_eq!(pool.free_count(), 4);
}

#[test]
fn a_pool_whose_processes_all_died_is_replaced_by_create() {
    let scope = ShmScope::new("orphan");
    let name = scope.name("pool");
    let mut owner = PeerProcess::spawn(PEER, &[], &[]);
    owner.ok(&format!("create {name} 4 64"));
    owner.ok("acquire 0");
    owner.kill();
    // Nobody alive uses it: create takes the name over.
    let pool = BufferPool::builder(&name)
        .buffers(2)
        .buffer_size(32)
        .create()
        .unwrap();
    assert_eq!(pool.buffer_count(), 2);
    // A live user keeps it, though.
    let mut user = PeerProcess::spawn(PEER, &[], &[]);
    user.ok(&format!("open {name}"));
    drop(pool);
    match BufferPool::builder(&name).buffers(2).buffer_size(32).create() {
        Err(e @ Error::AlreadyExists { .. }) => assert!(e.to_string().contains(&user.pid.to_string()), "{e}"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert!(user.wait().success());
}
