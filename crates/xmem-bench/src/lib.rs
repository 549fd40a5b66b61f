//! Benchmark harnesses for xmem. Every figure xmem reports is put beside a floor or a peer
//! measured in the same run on the same machine (these machines are shared and noisy), so the
//! harnesses here come in pairs: xmem's path, and the thing it is compared with.
//!
//! Cross-process roles run in a peer process ([`peer_main`]); the criterion benches start the
//! `xmem-bench-peer` binary for them.

mod paced;
pub mod segment;
pub mod streams;
pub mod tensorpool;
pub mod tp_aeron;
pub mod tp_bridge;
pub mod tp_driver;
pub mod wake;

use std::io::{BufRead, BufReader, Lines, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// How to start a peer process: a program and the arguments that select the peer roles.
#[derive(Debug, Clone)]
pub struct PeerProgram {
    /// The executable.
    pub program: PathBuf,
    /// Arguments placed before the role's own.
    pub prefix: Vec<String>,
}

/// A running peer process, driven by lines on stdin/stdout.
pub struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Peer {
    /// Starts `role` with `args`.
    pub fn start(program: &PeerProgram, role: &str, args: &[&str]) -> std::io::Result<Peer> {
        let mut child = Command::new(&program.program)
            .args(&program.prefix)
            .arg(role)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        Ok(Peer {
            stdin: child.stdin.take(),
            lines: BufReader::new(child.stdout.take().expect("piped")).lines(),
            child,
        })
    }

    /// Sends a line.
    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("peer stdin open");
        writeln!(stdin, "{line}").expect("peer stdin");
        stdin.flush().expect("peer stdin");
    }

    /// Reads a line.
    pub fn line(&mut self) -> String {
        self.lines.next().expect("peer exited").expect("peer stdout")
    }
}

impl Peer {
    /// Closes its stdin (the signal to stop) and waits for it to exit by itself, so that it
    /// leaves nothing behind; it is killed if it has not exited within 10 s.
    pub fn finish(mut self) {
        self.stdin.take();
        let _ = xmem_core::os::process::wait_exit(self.child.id(), std::time::Duration::from_secs(10));
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a peer role; returns the process exit code.
pub fn peer_main(args: &[String]) -> i32 {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["futex", path] => wake::raw_futex_waiter(path),
        ["pool", name] => wake::pool_waiter(name),
        ["hold", name] => hold(name),
        ["segreader", name, threads, poll_us] => {
            segment::reader_role(name, threads.parse().unwrap(), poll_us.parse().unwrap())
        }
        ["segwriter", name, size, len, period] => segment::writer_role(
            name,
            size.parse().unwrap(),
            len.parse().unwrap(),
            period.parse().unwrap(),
        ),
        ["echo", rest @ ..] => streams::echo_role(rest),
        ["sink", rest @ ..] => streams::sink_role(rest),
        ["tp-echo", dir, cpu] => tensorpool::echo_role(dir, cpu),
        ["tp-follow", dir, cpu] => tensorpool::follow_role(dir, cpu),
        ["line-echo", path, cpu] => tensorpool::line_echo_role(path, cpu),
        ["tpa-echo", aeron, base, cpu] => tp_aeron::tp_echo_role(aeron, base, cpu),
        ["aeron-echo", aeron, cpu] => tp_aeron::raw_echo_role(aeron, cpu, None),
        ["aeron-echo", aeron, cpu, lines] => tp_aeron::raw_echo_role(aeron, cpu, Some(lines)),
        ["tpa-count", kind, aeron, base, cpu] => tp_aeron::count_role(kind, aeron, base, cpu),
        ["tpa-follow", aeron, base, cpu] => tp_aeron::follow_role(aeron, base, cpu),
        ["paced-pub", rest @ ..] => paced::publisher_role(rest),
        ["paced-sub", rest @ ..] => paced::subscriber_role(rest),
        _ => {
            eprintln!("unknown peer role {words:?}");
            2
        }
    }
}

/// Holds one frozen buffer of pool `name` until stdin closes; prints its token first.
fn hold(name: &str) -> i32 {
    let pool = xmem_core::BufferPool::open(name).expect("open");
    let b = pool.acquire().expect("acquire").freeze();
    let hex: String = b.token().to_bytes().iter().map(|x| format!("{x:02x}")).collect();
    println!("{hex}");
    std::io::stdout().flush().unwrap();
    wait_for_stdin_to_close();
    drop(b);
    0
}

/// Parses a token printed by the `hold` role.
pub fn parse_token(hex: &str) -> xmem_core::BufferRef {
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    xmem_core::BufferRef::from_bytes(&bytes).expect("token")
}

/// Blocks until the parent closes this peer's stdin (how a bench tells a peer to stop).
pub(crate) fn wait_for_stdin_to_close() {
    let mut sink = String::new();
    while std::io::stdin()
        .read_line(&mut sink)
        .map(|n| n > 0)
        .unwrap_or(false)
    {
        sink.clear();
    }
}
