//! Buffers handed between real processes.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use xmem_core::{BufferPool, DType, Error, TensorDesc};
use xmem_tests::{checksum, parse_token, token_hex, PeerProcess, ShmScope};

const PEER: &str = env!("CARGO_BIN_EXE_xmem-test-peer");

fn peer() -> PeerProcess {
    PeerProcess::spawn(PEER, &[], &[])
}

/// A pool of `count` buffers of `size` bytes in `scope`, a peer process that opened it, and the
/// peer's pid.
fn pool_with_peer(scope: &ShmScope, count: u32, size: u64) -> (BufferPool, PeerProcess, u32) {
    let name = scope.name("pool");
    let pool = BufferPool::builder(&name)
        .buffers(count)
        .buffer_size(size)
        .create()
        .unwrap();
    let mut peer = peer();
    let pid = peer.ok(&format!("open {name}"))[0].parse().unwrap();
    (pool, peer, pid)
}

#[test]
fn hand_off_across_processes_outlives_the_producers_reference() {
    let scope = ShmScope::new("handoff");
    let (pool, mut consumer, _pid) = pool_with_peer(&scope, 4, 4096);

    let mut b = pool.acquire().unwrap();
    b.set_tensor(&TensorDesc::contiguous(DType::F32, &[32, 32]).unwrap())
        .unwrap();
    for (i, v) in b.as_mut_slice::<f32>().unwrap().iter_mut().enumerate() {
        *v = i as f32 * 0.5;
    }
    b.set_sequence(7);
    b.set_content_type("tensor/f32").unwrap();
    let b = b.freeze();
    let sum = checksum(b.bytes());
    let token = b.token();

    let got = consumer.ok(&format!("get {}", token_hex(token)));
    assert_eq!(got, [b.index().to_string(), sum.to_string()]);
    assert_eq!(
        consumer.ok(&format!("tensor {}", b.index())),
        ["float32", "[32,", "32]"]
    );

    // The producer lets go; the consumer's reference keeps the buffer alive and unchanged.
    let index = b.index();
    drop(b);
    assert_eq!(pool.free_count(), 3);
    assert_eq!(consumer.ok(&format!("sum {index}")), [sum.to_string()]);

    // The last reference anywhere frees it, and the token is stale from then on.
    consumer.ok(&format!("release {index}"));
    assert_eq!(pool.free_count(), 4);
    assert_eq!(consumer.err(&format!("get {}", token_hex(token))), "StaleRef");
    assert!(consumer.wait().success());
}

#[test]
fn send_moves_exclusive_ownership_to_another_process() {
    let scope = ShmScope::new("send");
    let (pool, mut worker, pid) = pool_with_peer(&scope, 2, 1024);

    let mut b = pool.acquire().unwrap();
    b.bytes_mut().fill(3);
    let token = b.send(&[pool.peer(pid).unwrap()]).unwrap();
    // The producer holds nothing now; the worker holds a reference it has not taken up yet.
    assert_eq!(pool.free_count(), 1);
    // A reader may still join; then the worker is not the only holder, so it cannot write.
    let joined = pool.get(token).unwrap();
    assert_eq!(worker.err(&format!("get_mut {}", token_hex(token))), "Busy");
    drop(joined);

    // Alone again: the worker takes write access, rewrites the buffer in place and publishes it.
    let index = worker.ok(&format!("get_mut {}", token_hex(token)))[0].clone();
    let published = worker.ok(&format!("fill {index} 9"));
    let seen = pool.get(parse_token(&published[0])).unwrap();
    assert!(seen.bytes().iter().all(|&x| x == 9));
    assert_eq!(checksum(seen.bytes()).to_string(), published[1]);
    worker.ok(&format!("release {index}"));
    drop(seen);
    assert_eq!(pool.free_count(), 2);
    assert!(worker.wait().success());
}

#[test]
fn a_reference_handed_to_a_process_that_dies_untaken_is_returned() {
    let scope = ShmScope::new("sendkill");
    let (pool, mut worker, pid) = pool_with_peer(&scope, 2, 64);
    let b = pool.acquire().unwrap().freeze();
    b.share_with(&[pool.peer(pid).unwrap()]).unwrap();
    drop(b);
    assert_eq!(pool.free_count(), 1, "the worker's pending reference keeps it");
    worker.kill();
    let report = pool.reclaim();
    assert_eq!(report.dead_processes, vec![pid]);
    assert_eq!(report.references, 1);
    assert_eq!(pool.free_count(), 2);
}

#[test]
fn stale_and_foreign_tokens_are_rejected_across_processes() {
    let scope = ShmScope::new("stale");
    let name = scope.name("pool");
    let other_name = scope.name("other");
    let pool = BufferPool::builder(&name)
        .buffers(1)
        .buffer_size(64)
        .create()
        .unwrap();
    let other = BufferPool::builder(&other_name)
        .buffers(1)
        .buffer_size(64)
        .create()
        .unwrap();
    let mut reader = peer();
    reader.ok(&format!("open {name}"));

    let first = pool.acquire().unwrap().freeze();
    let old = first.token();
    drop(first);
    // Same index, next life.
    let second = pool.acquire().unwrap();
    assert_eq!(second.index(), old.index());
    let new = second.token();
    assert_ne!(new.generation(), old.generation());
    assert_eq!(reader.err(&format!("get {}", token_hex(old))), "StaleRef");
    assert_eq!(
        reader.err(&format!("get {}", token_hex(new))),
        "Busy",
        "not frozen yet"
    );
    let second = second.freeze();
    reader.ok(&format!("get {}", token_hex(new)));
    assert_eq!(reader.err(&format!("get {}", token_hex(old))), "StaleRef");

    let foreign = other.acquire().unwrap().freeze();
    assert_eq!(
        reader.err(&format!("get {}", token_hex(foreign.token()))),
        "WrongPool"
    );
    let bad_index = xmem_core::BufferRef::new(new.pool_tag(), 5, new.generation());
    assert_eq!(
        reader.err(&format!("get {}", token_hex(bad_index))),
        "InvalidIndex"
    );
    drop((second, foreign));
    assert!(reader.wait().success());
}

#[test]
fn blocking_acquire_is_woken_when_another_process_releases() {
    let scope = ShmScope::new("wake");
    let (pool, mut holder, _pid) = pool_with_peer(&scope, 2, 64);
    assert_eq!(holder.ok("acquire_all"), ["2"]);
    let holder_slot_index = {
        let snap = pool.snapshot();
        snap.buffers[0].index
    };

    let waiter = {
        let pool = pool.clone();
        std::thread::spawn(move || pool.acquire_timeout(Duration::from_secs(60)))
    };
    // Wait until the waiter has parked (spin exhausted, futex wait entered or about to be).
    let my_slot = pool.process_slot();
    while pool
        .snapshot()
        .processes
        .iter()
        .find(|p| p.slot == my_slot)
        .unwrap()
        .waits
        == 0
    {
        std::thread::yield_now();
    }
    holder.ok(&format!("release {holder_slot_index}"));
    let got = waiter
        .join()
        .unwrap()
        .expect("woken by the release, long before the timeout");
    assert_eq!(got.index(), holder_slot_index);
    drop(got);
    assert!(holder.wait().success());
}

#[test]
fn an_exhausted_pool_fails_try_acquire_and_times_out_naming_the_holders() {
    let scope = ShmScope::new("exhaust");
    let (pool, mut holder, pid) = pool_with_peer(&scope, 3, 64);
    let pid = pid.to_string();
    assert_eq!(holder.ok("acquire_all"), ["3"]);
    assert!(matches!(
        pool.try_acquire(),
        Err(Error::PoolExhausted { count: 3, .. })
    ));
    match pool.acquire_timeout(Duration::from_millis(30)) {
        Err(e @ Error::Timeout { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&format!("pid {pid}")) && text.contains("holds 3"),
                "{text}"
            );
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(holder.wait().success());
    // The holder exited: everything is free again.
    assert_eq!(pool.free_count(), 3);
}

#[test]
fn dropping_the_pool_handle_before_its_guards_is_safe() {
    let scope = ShmScope::new("dropfirst");
    let (pool, mut other, _pid) = pool_with_peer(&scope, 2, 256);

    let mut b = pool.acquire().unwrap();
    drop(pool);
    b.bytes_mut().fill(5); // the guard keeps the mapping alive
    let b = b.freeze();
    let token = token_hex(b.token());
    let got = other.ok(&format!("get {token}"));
    other.ok("drop_pool");
    assert_eq!(other.ok(&format!("sum {}", got[0])), [got[1].clone()]);
    other.ok(&format!("release {}", got[0]));
    assert!(other.wait().success());
    drop(b);
    // The last reference of the last process is gone: so is the pool.
    assert!(scope.leftovers().is_empty(), "{:?}", scope.leftovers());
}

#[test]
fn a_double_release_is_detected_and_reported() {
    let scope = ShmScope::new("double");
    let (pool, mut other, _pid) = pool_with_peer(&scope, 2, 64);
    let token = parse_token(&other.ok("acquire 0")[0]);
    let raw = other.ok(&format!("freeze {}", token.index()));
    let raw = other.ok(&format!("into_raw {}", parse_token(&raw[0]).index()))[0].clone();
    other.ok(&format!("release_raw {raw}"));
    assert_eq!(other.err(&format!("release_raw {raw}")), "DoubleRelease");
    assert_eq!(pool.free_count(), 2);
    // Nothing is corrupted: the whole pool is still usable.
    let all: Vec<_> = (0..2).map(|_| pool.try_acquire().unwrap()).collect();
    drop(all);
    assert!(other.wait().success());
}

#[test]
fn an_anonymous_pool_is_shared_by_descriptor() {
    let scope = ShmScope::new("anon");
    let pool = BufferPool::anonymous()
        .buffers(2)
        .buffer_size(128)
        .create_anonymous()
        .unwrap();
    let fd = pool.fd().unwrap();
    let raw = fd.as_raw_fd();
    let mut cmd = Command::new(PEER);
    // SAFETY: fcntl is async-signal-safe; it clears close-on-exec so the child inherits the fd.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(raw, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = PeerProcess::from_command(cmd);
    drop(fd);
    child.ok(&format!("open_fd {raw}"));
    let mut b = pool.acquire().unwrap();
    b.bytes_mut().fill(42);
    let b = b.freeze();
    let got = child.ok(&format!("get {}", token_hex(b.token())));
    assert_eq!(got[1], checksum(b.bytes()).to_string());
    assert!(child.wait().success());
    assert!(scope.leftovers().is_empty());
}

#[test]
fn eight_processes_read_one_buffer_and_the_last_one_frees_it() {
    let scope = ShmScope::new("eight");
    let name = scope.name("pool");
    let pool = BufferPool::builder(&name)
        .buffers(2)
        .buffer_size(1 << 16)
        .create()
        .unwrap();
    let mut b = pool.acquire().unwrap();
    for (i, x) in b.bytes_mut().iter_mut().enumerate() {
        *x = (i * 7) as u8;
    }
    let b = b.freeze();
    let sum = checksum(b.bytes()).to_string();
    let token = token_hex(b.token());
    let mut readers: Vec<PeerProcess> = (0..8).map(|_| peer()).collect();
    for r in &mut readers {
        r.ok(&format!("open {name}"));
        assert_eq!(r.ok(&format!("get {token}"))[1], sum);
    }
    drop(b);
    assert_eq!(pool.snapshot().buffers[0].holder_pids.len(), 8);
    for r in &mut readers {
        r.ok("release 0");
    }
    assert_eq!(pool.free_count(), 2);
    for r in &mut readers {
        assert!(r.wait().success());
    }
}

#[test]
fn the_last_process_to_close_a_pool_removes_it_whoever_created_it() {
    let scope = ShmScope::new("lastout");
    let name = scope.name("pool");
    let mut creator = peer();
    creator.ok(&format!("create {name} 2 64"));
    let pool = BufferPool::open(&name).unwrap();
    assert!(creator.wait().success());
    // The creator is gone; the pool lives on for us.
    let b = pool.acquire().unwrap();
    assert_eq!(scope.leftovers().len(), 1);
    drop((pool, b));
    assert!(scope.leftovers().is_empty());
    assert!(matches!(BufferPool::open(&name), Err(Error::NotFound { .. })));
}

#[test]
fn a_full_process_table_refuses_the_next_process_until_a_holder_dies() {
    // A pool has one slot per attached process (63): the process after the last is refused
    // with the limit and what to do, and the slot of a killed process is free again for it.
    let scope = ShmScope::new("full-table");
    let name = scope.name("pool");
    let pool = BufferPool::builder(&name)
        .buffers(2)
        .buffer_size(64)
        .create()
        .unwrap();
    let mut peers: Vec<PeerProcess> = Vec::new();
    let refused = loop {
        let mut p = peer();
        let answer = p.cmd(&format!("open {name}"));
        if answer.starts_with("err ") {
            break (p, answer);
        }
        assert!(answer.starts_with("ok "), "{answer}");
        peers.push(p);
        assert!(peers.len() < 200, "no limit on attached processes");
    };
    let (mut late, answer) = refused;
    // This process and the peers fill the table.
    assert_eq!(peers.len() + 1, 63, "{answer}");
    assert!(
        answer.starts_with("err TooManyProcesses ")
            && answer.contains("63 processes attached")
            && answer.contains("close a handle in another process"),
        "{answer}"
    );
    // A holder dies: its slot is reclaimed when the next process looks for one.
    let mut victim = peers.pop().unwrap();
    victim.kill();
    late.ok(&format!("open {name}"));
    let b = pool.acquire().unwrap().freeze();
    assert_eq!(
        late.ok(&format!("get {}", token_hex(b.token())))[0],
        b.index().to_string()
    );
    late.ok("release_all");
    drop(b);
    for mut p in peers.into_iter().chain([late]) {
        p.send("exit");
        assert!(p.wait().success());
    }
    assert_eq!(pool.free_count(), 2);
}

#[test]
fn a_group_mode_lets_another_uid_of_the_group_in_and_0600_keeps_it_out() {
    // Pools are 0600 unless asked: a process of another uid (`nobody`) is refused one and told
    // how to share; a pool made 0660 whose group is nobody's opens for it, and a buffer's
    // bytes cross.
    use std::os::unix::process::CommandExt;
    if !rustix::process::geteuid().is_root() {
        println!("skipped: switching to another uid needs root");
        return;
    }
    let scope = ShmScope::new("group-mode");
    let private = BufferPool::builder(&scope.name("private"))
        .buffers(2)
        .buffer_size(64)
        .create()
        .unwrap();
    let shared = BufferPool::builder(&scope.name("shared"))
        .buffers(2)
        .buffer_size(64)
        .mode(0o660)
        .create()
        .unwrap();
    std::os::unix::fs::chown(shared.path(), None, Some(65534)).unwrap();
    let mut cmd = Command::new(PEER);
    cmd.uid(65534).gid(65534);
    let mut nobody = PeerProcess::from_command(cmd);
    let answer = nobody.cmd(&format!("open {}", scope.name("private")));
    assert!(
        answer.starts_with("err PermissionDenied ") && answer.contains("group mode (e.g. 0o660)"),
        "{answer}"
    );
    nobody.ok(&format!("open {}", scope.name("shared")));
    let mut b = shared.acquire().unwrap();
    b.bytes_mut().fill(7);
    let b = b.freeze();
    assert_eq!(
        nobody.ok(&format!("get {}", token_hex(b.token()))),
        [b.index().to_string(), checksum(b.bytes()).to_string()]
    );
    nobody.ok("release_all");
    nobody.send("exit");
    assert!(nobody.wait().success());
    drop((b, private));
    assert_eq!(shared.free_count(), 2);
}
