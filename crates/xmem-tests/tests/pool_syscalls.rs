//! The hot paths make no system call: a peer runs acquire, freeze, get (of its own and of
//! another process's buffer), clone and drop under a seccomp filter that kills it on any system
//! call but `write` and `exit_group`.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

use xmem_core::BufferPool;
use xmem_tests::{token_hex, ShmScope};

const PEER: &str = env!("CARGO_BIN_EXE_xmem-test-peer");

fn run_peer(name: &str, token: &str, iterations: &str) -> std::process::Output {
    Command::new(PEER)
        .args(["nosyscall", name, token, iterations])
        .output()
        .unwrap()
}

#[test]
fn acquire_get_clone_and_drop_make_no_system_call() {
    let scope = ShmScope::new("nosys");
    let name = scope.name("pool");
    let pool = BufferPool::builder(&name)
        .buffers(4)
        .buffer_size(4096)
        .create()
        .unwrap();
    let shared = pool.acquire().unwrap().freeze();
    let out = run_peer(&name, &token_hex(shared.token()), "200000");
    assert!(
        out.status.success() && out.stdout == b"ok\n",
        "the peer made a system call (signal {:?}) or failed: {}",
        out.status.signal(),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(shared);
    // The peer died without detaching (it could not: that takes system calls); reclaim it.
    assert_eq!(pool.reclaim().dead_processes.len(), 1);
    assert_eq!(pool.free_count(), 4);
}

#[test]
fn the_filter_does_catch_a_system_call() {
    // Negative control: the same run, but the peer makes one system call after the filter.
    let scope = ShmScope::new("nosysctl");
    let name = scope.name("pool");
    let pool = BufferPool::builder(&name)
        .buffers(4)
        .buffer_size(64)
        .create()
        .unwrap();
    let shared = pool.acquire().unwrap().freeze();
    let out = run_peer(&name, &token_hex(shared.token()), "control");
    assert_eq!(out.status.signal(), Some(libc::SIGSYS), "{:?}", out.status);
    drop(shared);
    pool.reclaim();
}
