//! Helpers for xmem's multi-process tests: leak-checked name scopes and peer processes driven
//! over a line protocol (see `src/bin/xmem-test-peer.rs` for the commands).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

pub mod stream_peer;

use xmem_core::os::ShmDir;
use xmem_core::BufferRef;

/// How long a peer may take to answer one command before the test fails.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// A set of unique object names for one test, checked for leaks when dropped.
///
/// Declare it *first* in a test, so that it drops *last*: after every pool and peer process.
/// If any object whose name carries the scope's tag is left in the shared-memory directory, the
/// drop removes it and fails the test.
pub struct ShmScope {
    tag: String,
}

impl ShmScope {
    /// A scope whose names start with `label`.
    pub fn new(label: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let mut r = [0u8; 2];
        // SAFETY: getrandom writes at most r.len() bytes into r.
        unsafe { libc::getrandom(r.as_mut_ptr().cast(), r.len(), 0) };
        let tag = format!(
            "t-{label}-{}-{}-{:02x}{:02x}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            r[0],
            r[1]
        );
        ShmScope { tag }
    }

    /// A unique object name within this scope.
    pub fn name(&self, what: &str) -> String {
        format!("{}-{what}", self.tag)
    }

    /// Objects of this scope currently in the shared-memory directory.
    pub fn leftovers(&self) -> Vec<String> {
        ShmDir::default()
            .list()
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f.contains(&self.tag))
            .collect()
    }
}

impl Drop for ShmScope {
    fn drop(&mut self) {
        let left = self.leftovers();
        for f in &left {
            let _ = std::fs::remove_file(ShmDir::default().join(f));
        }
        if !left.is_empty() && !std::thread::panicking() {
            panic!("test leaked shared-memory objects: {left:?}");
        }
    }
}

/// The `xmem` binary, built from the main workspace (where no crash points are compiled in) into
/// the target directory of the peer executable `peer_exe` (a test's `CARGO_BIN_EXE_…`), beside
/// it. Built (or found up to date) once per test process.
pub fn xmem_cli(peer_exe: &str) -> std::path::PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let peer = std::path::Path::new(peer_exe);
    BUILT.call_once(|| {
        let profile_dir = peer.parent().expect("the peer lies in <target>/<profile>");
        let target_dir = profile_dir.parent().expect("the peer lies in <target>/<profile>");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "-p", "xmem-cli", "--manifest-path"])
            .arg(main_workspace().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "building xmem");
    });
    peer.with_file_name("xmem")
}

/// The root of the main workspace (this crate is a workspace of its own inside it).
pub fn main_workspace() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A peer process answering line commands.
pub struct PeerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// The peer's pid.
    pub pid: u32,
}

impl PeerProcess {
    /// Starts `bin` with `args` and extra environment.
    pub fn spawn(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::from_command(cmd)
    }

    /// Starts a prepared command (stdin/stdout are replaced by pipes).
    pub fn from_command(cmd: Command) -> Self {
        Self::start(cmd, false)
    }

    /// Starts a prepared command whose stderr lines come through [`PeerProcess::line`] too,
    /// interleaved with its stdout's as they arrive.
    pub fn from_command_with_stderr(cmd: Command) -> Self {
        Self::start(cmd, true)
    }

    fn start(mut cmd: Command, with_stderr: bool) -> Self {
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        if with_stderr {
            cmd.stderr(Stdio::piped());
        }
        let mut child = cmd.spawn().expect("spawn peer");
        let (tx, rx) = mpsc::channel();
        fn forward(from: impl std::io::Read + Send + 'static, tx: mpsc::Sender<String>) {
            std::thread::spawn(move || {
                for line in BufReader::new(from).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        forward(child.stdout.take().expect("stdout"), tx.clone());
        if with_stderr {
            forward(child.stderr.take().expect("stderr"), tx);
        }
        PeerProcess {
            pid: child.id(),
            stdin: child.stdin.take(),
            child,
            lines: rx,
        }
    }

    /// Reads lines until one satisfies `pred`, within `limit`; returns it and how long it took.
    /// Panics on the limit or when the process closes its output first.
    pub fn line_where(
        &mut self,
        limit: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> (String, Duration) {
        let started = std::time::Instant::now();
        loop {
            let left = limit.saturating_sub(started.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(l) if pred(&l) => return (l, started.elapsed()),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("pid {}: no line {what} within {limit:?}", self.pid),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("pid {}: output ended before a line {what}", self.pid)
                }
            }
        }
    }

    /// Sends one command line.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("peer stdin");
        stdin.flush().expect("peer stdin");
    }

    /// The next line the peer prints.
    pub fn line(&mut self) -> String {
        match self.lines.recv_timeout(ANSWER_TIMEOUT) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => {
                panic!("peer {} did not answer within {ANSWER_TIMEOUT:?}", self.pid)
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait();
                panic!("peer {} exited without answering: {status:?}", self.pid)
            }
        }
    }

    /// Sends a command and returns the answer line.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(line);
        self.line()
    }

    /// Sends a command that must succeed; returns the words after `ok`.
    pub fn ok(&mut self, line: &str) -> Vec<String> {
        self.send(line);
        self.reply_ok()
    }

    /// Reads the answer to a command sent earlier, which must be `ok`; returns the words after it.
    pub fn reply_ok(&mut self) -> Vec<String> {
        let answer = self.line();
        let mut words = answer.split_whitespace();
        assert_eq!(words.next(), Some("ok"), "peer answered {answer:?}");
        words.map(str::to_string).collect()
    }

    /// Sends a command that must fail; returns the error kind (the variant name).
    pub fn err(&mut self, line: &str) -> String {
        let answer = self.cmd(line);
        let mut words = answer.split_whitespace();
        assert_eq!(words.next(), Some("err"), "peer answered {answer:?} to {line:?}");
        words.next().unwrap_or_default().to_string()
    }

    /// SIGKILLs the peer and reaps it.
    pub fn kill(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("reap peer")
    }

    /// Waits until it is stopped (by `SIGSTOP`, or at an `XMEM_PAUSE_AT` point), for at most
    /// 20 s.
    pub fn wait_until_stopped(&self) {
        wait_until_stopped(self.pid);
    }

    /// Sends it a signal.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid as i32).expect("a pid");
        rustix::process::kill_process(pid, signal).expect("signal the peer");
    }

    /// Closes its stdin and waits for it to exit.
    pub fn wait(&mut self) -> ExitStatus {
        self.stdin.take();
        self.child.wait().expect("reap peer")
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A token as 32 hex digits, for command lines.
pub fn token_hex(t: BufferRef) -> String {
    t.to_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses [`token_hex`] output.
pub fn parse_token(hex: &str) -> BufferRef {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    BufferRef::from_bytes(&bytes).expect("token")
}

/// The checksum tests use for buffer contents (FNV-1a).
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

/// A small deterministic generator for randomised tests (xorshift64*).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (seed 0 is replaced).
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    /// A seed from the environment (`XMEM_TEST_SEED`) or the clock, printed so failures replay.
    pub fn from_env(test: &str) -> Self {
        let seed = std::env::var("XMEM_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(xmem_core::os::time::monotonic_ns);
        eprintln!("{test}: XMEM_TEST_SEED={seed}");
        Rng::new(seed)
    }

    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }

    /// A value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Fills `out` with the value a segment stress writer publishes as write number `seq`: the
/// first word is `seq`, every other word is derived from `seq` and its position, so a reader can
/// tell one complete write from a mixture of two.
pub fn segment_value(seq: u64, out: &mut [u8]) {
    out[..8].copy_from_slice(&seq.to_ne_bytes());
    for (i, w) in out[8..].chunks_exact_mut(8).enumerate() {
        w.copy_from_slice(&mix(seq, i as u64).to_ne_bytes());
    }
}

/// Whether `value` is exactly one [`segment_value`].
pub fn is_segment_value(value: &[u8]) -> bool {
    let seq = u64::from_ne_bytes(value[..8].try_into().unwrap());
    value[8..]
        .chunks_exact(8)
        .enumerate()
        .all(|(i, w)| u64::from_ne_bytes(w.try_into().unwrap()) == mix(seq, i as u64))
}

fn mix(seq: u64, i: u64) -> u64 {
    // splitmix64 of (seq, position)
    let mut z = seq.wrapping_mul(0x9E3779B97F4A7C15) ^ i.wrapping_add(0xD1B54A32D192ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

/// What a checking reader saw.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadTally {
    /// Reads returned.
    pub reads: u64,
    /// Reads returned that were not one complete write (must stay 0).
    pub torn: u64,
    /// Reads that failed (contended, writer gone).
    pub errors: u64,
}

/// Opens segment `name` and reads it until `end` (at least once), checking every value.
pub fn check_segment_reads(name: &str, end: std::time::Instant) -> ReadTally {
    let mut tally = ReadTally::default();
    let mut r = xmem_core::segment::SegmentReader::open(name).expect("open segment");
    let mut buf = vec![0u8; r.size()];
    let mut last_seq = 0u64;
    // At least one read, however late this thread got to run.
    let mut first = true;
    while std::mem::take(&mut first) || std::time::Instant::now() < end {
        match r.read_into(&mut buf) {
            Ok(_) => {
                tally.reads += 1;
                if !is_segment_value(&buf) {
                    tally.torn += 1;
                }
                let seq = u64::from_ne_bytes(buf[..8].try_into().unwrap());
                if seq < last_seq {
                    tally.torn += 1; // older than a value already returned: not a latest value
                }
                last_seq = seq;
            }
            Err(_) => tally.errors += 1,
        }
    }
    tally
}

/// Waits until process `pid` is stopped (state `T` in /proc), for at most 20 s.
pub fn wait_until_stopped(pid: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the peer's stat");
        // The state follows the command name, which is in parentheses.
        let state = stat.rsplit(')').next().unwrap_or("").trim_start().chars().next();
        if state == Some('T') {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{pid} never stopped: {stat}"
        );
        std::thread::yield_now();
    }
}

/// The invariants after every reclaim of a pool of `buffers` whose other processes all died:
/// only this process is attached; it holds exactly the
/// shared buffer, once; every other buffer is free and can be acquired, exactly once each.
pub fn assert_exact(pool: &xmem_core::BufferPool, shared: &xmem_core::Buffer, buffers: u32, context: &str) {
    let snap = pool.snapshot();
    let me = pool.process_slot();
    assert_eq!(
        snap.processes.iter().map(|p| p.slot).collect::<Vec<_>>(),
        vec![me],
        "{context}: a dead process is still attached: {:?}",
        snap.processes
    );
    for b in &snap.buffers {
        if b.index == shared.index() {
            assert_eq!(
                b.status,
                xmem_core::pool::BufferStatus::Shared,
                "{context}: buffer {}",
                b.index
            );
            assert_eq!(b.holder_slots, vec![me], "{context}: buffer {} holders", b.index);
            assert_eq!(
                b.generation,
                shared.generation(),
                "{context}: shared buffer's life changed"
            );
        } else {
            assert_eq!(
                b.status,
                xmem_core::pool::BufferStatus::Free,
                "{context}: buffer {} not returned: {b:?}",
                b.index
            );
        }
    }
    let all: Vec<_> = (1..buffers)
        .map(|_| {
            pool.try_acquire()
                .unwrap_or_else(|e| panic!("{context}: buffer not reusable: {e}"))
        })
        .collect();
    let mut indices: Vec<u32> = all.iter().map(|b| b.index()).collect();
    indices.sort();
    indices.dedup();
    assert_eq!(
        indices.len(),
        buffers as usize - 1,
        "{context}: a buffer was handed out twice"
    );
    assert!(
        matches!(pool.try_acquire(), Err(xmem_core::Error::PoolExhausted { .. })),
        "{context}"
    );
    drop(all);
    assert_eq!(pool.free_count(), buffers - 1, "{context}");
    assert!(!snap.closing, "{context}: the pool is closing");
}

/// `cmd` with the limit `resource` (soft and hard) set to `value` in the child, as `ulimit`
/// would set it: for tests of low limits (`Nofile` for `ulimit -n`, `Memlock` for `ulimit -l`).
pub fn with_limit(mut cmd: Command, resource: rustix::process::Resource, value: u64) -> Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and makes one system call
    // (setrlimit), which is async-signal-safe; it touches no lock or allocation of the parent.
    unsafe {
        cmd.pre_exec(move || {
            let limit = rustix::process::Rlimit {
                current: Some(value),
                maximum: Some(value),
            };
            rustix::process::setrlimit(resource, limit).map_err(std::io::Error::from)
        });
    }
    cmd
}
