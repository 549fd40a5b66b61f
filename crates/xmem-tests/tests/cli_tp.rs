//! `xmem tp …` against real regions and real messages: decode every vector of the project (and
//! refuse garbage with a one-line reason), a producer process and a consumer process over shared
//! memory with every frame checked, `inspect` of a live and of a killed producer's ring.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use xmem_tests::{PeerProcess, ShmScope};

const PEER: &str = env!("CARGO_BIN_EXE_xmem-test-peer");

fn xmem(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(xmem_tests::xmem_cli(PEER));
    cmd.args(args);
    match stdin {
        None => cmd.output().unwrap(),
        Some(bytes) => {
            use std::io::Write;
            let mut child = cmd
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            child.stdin.take().unwrap().write_all(bytes).unwrap();
            child.wait_with_output().unwrap()
        }
    }
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails_with_one_line(out: Output, what: &str) -> String {
    assert_eq!(out.status.code(), Some(1), "{what} should fail");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err.lines().count(),
        1,
        "{what}: one-line reason expected: {err:?}"
    );
    assert!(err.starts_with("xmem: error: "), "{err}");
    err
}

/// The bytes of one of the tensor-pool crate's own vectors.
fn vector(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).unwrap();
    let hex: String = text
        .lines()
        .map(|l| l.split('#').next().unwrap())
        .collect::<String>()
        .split_whitespace()
        .collect();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn tp_decode_prints_every_message_and_refuses_what_is_not_one() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../xmem-tensorpool/tests/vectors");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = vector(&path);
        let json = ok(
            xmem(&["tp", "decode", "--format", "json", "-"], Some(&bytes)),
            &path.display().to_string(),
        );
        let j: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(j["message"].is_string() && j["fields"].is_object(), "{json}");
        let text = ok(xmem(&["tp", "decode", "-"], Some(&bytes)), "text");
        assert!(text.starts_with(j["schema"].as_str().unwrap()), "{text}");
        n += 1;
    }
    assert!(n >= 25);
    let announce = vector(&dir.join("shm_pool_announce.hex"));
    let text = ok(xmem(&["tp", "decode", "-"], Some(&announce)), "announce");
    assert!(text.contains("announceClockDomain: 1 (MONOTONIC)"), "{text}");
    // Not messages: a truncation, an unknown schema, nothing at all, a missing file.
    let err = fails_with_one_line(
        xmem(&["tp", "decode", "-"], Some(&announce[..announce.len() - 1])),
        "truncated",
    );
    assert!(err.contains("truncated"), "{err}");
    let err = fails_with_one_line(xmem(&["tp", "decode", "-"], Some(b"GET / HTTP/1.1\r\n")), "text");
    assert!(err.contains("unknown schema id"), "{err}");
    fails_with_one_line(xmem(&["tp", "decode", "-"], Some(b"")), "empty");
    fails_with_one_line(
        xmem(&["tp", "decode", "/nonexistent/message.bin"], None),
        "missing file",
    );
}

/// `inspect`'s "slots: C committed, W being written, N never written".
fn slot_counts(inspect: &str) -> (u32, u32, u32) {
    let line = inspect
        .lines()
        .find_map(|l| l.trim().strip_prefix("slots: "))
        .unwrap_or_else(|| panic!("no slot counts: {inspect}"));
    let n: Vec<u32> = line
        .split(", ")
        .map(|part| part.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(n.len(), 3, "{inspect}");
    (n[0], n[1], n[2])
}

/// A base directory for regions, removed after the test.
struct Base(PathBuf);

impl Drop for Base {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn producer(base: &Path, extra: &[&str]) -> (PeerProcess, PathBuf) {
    let mut cmd = Command::new(xmem_tests::xmem_cli(PEER));
    cmd.args([
        "tp",
        "produce",
        "--base",
        base.to_str().unwrap(),
        "--stream",
        "10007",
        "--shape",
        "270x480x3",
    ])
    .args(extra);
    let mut p = PeerProcess::from_command(cmd);
    assert!(p.line().starts_with("producing stream 10007"));
    let ring = p.line();
    let ring = ring
        .split("path=")
        .nth(1)
        .unwrap()
        .split('|')
        .next()
        .unwrap()
        .to_string();
    assert!(p.line().contains("announce"));
    (p, PathBuf::from(ring))
}

#[test]
fn tp_produce_and_consume_processes_check_every_frame_and_leave_nothing() {
    let scope = ShmScope::new("cli-tp");
    let base = Base(PathBuf::from("/dev/shm").join(scope.name("base")));
    std::fs::create_dir(&base.0).unwrap();
    let (mut p, ring) = producer(&base.0, &["--fps", "2000"]);
    let out = ok(
        xmem(
            &[
                "tp",
                "consume",
                "--base",
                base.0.to_str().unwrap(),
                "--stream",
                "10007",
                "--count",
                "300",
            ],
            None,
        ),
        "consume",
    );
    assert!(
        out.contains("accepted 300 frames") || out.contains("accepted 301 frames"),
        "{out}"
    );
    assert!(out.contains("0 with wrong bytes"), "{out}");
    // Inspected while the producer is stopped (SIGSTOP): a running one moves on between the
    // slots inspect reads. Stopped at any point, at most one slot is caught mid-write.
    p.signal(rustix::process::Signal::STOP);
    p.wait_until_stopped();
    let inspect = ok(xmem(&["tp", "inspect", ring.to_str().unwrap()], None), "inspect");
    p.signal(rustix::process::Signal::CONT);
    assert!(
        inspect.contains("(header ring)") && inspect.contains("(alive)"),
        "{inspect}"
    );
    let (committed, writing, never) = slot_counts(&inspect);
    assert!(
        committed + writing == 8 && writing <= 1 && never == 0,
        "{inspect}"
    );
    assert!(inspect.contains("Uint8 270x480x3"), "{inspect}");
    let uri = format!("shm:file?path={}", ring.with_file_name("1.pool").display());
    let pool = ok(
        xmem(&["tp", "inspect", &uri, "--format", "json"], None),
        "inspect pool",
    );
    let j: serde_json::Value = serde_json::from_str(&pool).unwrap();
    assert_eq!(j["superblock"]["strideBytes"], 388_800);
    // SIGTERM: the producer stops and removes its regions and its announce.
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(p.pid as i32).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    assert!(p.wait().success());
    let left: Vec<_> = walk(&base.0);
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn tp_inspect_shows_a_killed_producer_and_refuses_what_is_not_a_region() {
    let scope = ShmScope::new("cli-tp-kill");
    let base = Base(PathBuf::from("/dev/shm").join(scope.name("base")));
    std::fs::create_dir(&base.0).unwrap();
    let (mut p, ring) = producer(&base.0, &[]);
    p.kill();
    let inspect = ok(xmem(&["tp", "inspect", ring.to_str().unwrap()], None), "inspect");
    assert!(inspect.contains("(not running)"), "{inspect}");
    // Killed at any point, at most one slot is caught mid-write.
    let (_, writing, _) = slot_counts(&inspect);
    assert!(writing <= 1, "{inspect}");
    // Not regions: a random file, a directory, a bad URI, a missing file.
    let junk = base.0.join("junk");
    std::fs::write(&junk, [7u8; 100]).unwrap();
    let err = fails_with_one_line(xmem(&["tp", "inspect", junk.to_str().unwrap()], None), "junk");
    assert!(err.contains("magic"), "{err}");
    fails_with_one_line(
        xmem(&["tp", "inspect", base.0.to_str().unwrap()], None),
        "directory",
    );
    fails_with_one_line(
        xmem(&["tp", "inspect", "shm:file?path=relative"], None),
        "relative URI",
    );
    fails_with_one_line(
        xmem(&["tp", "inspect", "/dev/shm/no-such-region"], None),
        "missing",
    );
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).unwrap().flatten() {
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        } else {
            out.push(e.path());
        }
    }
    out
}
