//! `xmem tp …` against real regions and real messages: decode every vector of the project (and
//! refuse garbage with a one-line reason), a producer process and a consumer process over shared
//! memory with every frame checked, `inspect` of a live and of a killed producer's ring.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

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

/// An Aeron directory for one test, removed when the test ends however it ends (a driver killed
/// by the test, or by a failing test's drop, leaves its files).
struct AeronDir(PathBuf);

impl AeronDir {
    fn new(scope: &ShmScope) -> AeronDir {
        AeronDir(PathBuf::from("/dev/shm").join(scope.name("aeron")))
    }
}

impl std::ops::Deref for AeronDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for AeronDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `xmem tp media-driver` in `dir`, once it says it runs.
fn media_driver(dir: &Path) -> PeerProcess {
    let mut cmd = Command::new(xmem_tests::xmem_cli(PEER));
    cmd.args(["tp", "media-driver", "--aeron-dir", dir.to_str().unwrap()]);
    let mut d = PeerProcess::from_command(cmd);
    d.line_where(Duration::from_secs(30), "saying it runs", |l| {
        l.starts_with("media driver running in")
    });
    d
}

/// An `xmem tp …` process on the driver in `aeron` (never one of its own), stderr with stdout.
fn tp(aeron: &Path, what: &str, args: &[&str]) -> PeerProcess {
    PeerProcess::from_command_with_stderr(tp_command(aeron, what, args))
}

/// `cmd` with at most `fds` open files (`ulimit -n`).
fn with_fd_limit(cmd: Command, fds: u64) -> Command {
    xmem_tests::with_limit(cmd, rustix::process::Resource::Nofile, fds)
}

fn tp_command(aeron: &Path, what: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(xmem_tests::xmem_cli(PEER));
    cmd.args([
        "tp",
        what,
        "--aeron-dir",
        aeron.to_str().unwrap(),
        "--driver",
        "external",
    ])
    .args(["--announce-period", "200ms"])
    .args(args);
    cmd
}

fn producer(aeron: &Path, base: &Path, extra: &[&str]) -> (PeerProcess, PathBuf) {
    let mut p = tp(
        aeron,
        "produce",
        &[&["--base", base.to_str().unwrap(), "--stream", "10007"], extra].concat(),
    );
    p.line_where(Duration::from_secs(30), "producing", |l| {
        l.starts_with("producing stream 10007")
    });
    let (ring, _) = p.line_where(Duration::from_secs(5), "naming the ring", |l| {
        l.contains("header ring")
    });
    let ring = ring
        .split("path=")
        .nth(1)
        .unwrap()
        .split('|')
        .next()
        .unwrap()
        .to_string();
    (p, PathBuf::from(ring))
}

fn sigterm(p: &PeerProcess) {
    p.signal(rustix::process::Signal::TERM);
}

/// The acceptance run of the tensor pool over Aeron: a media driver, a producer of 1080p frames
/// and four consumer processes: one slow, one on a per-consumer descriptor stream the producer's
/// supervisor grants, one sent to FALLBACK, one that stops polling (SIGSTOP). Every accepted
/// frame is checked byte for byte by its consumer. Then: a consumer SIGKILLed and the producer
/// keeps its rate; the producer SIGKILLed and every mapped consumer unmaps within three
/// announce periods; the media driver SIGKILLed and each client says so in one line and exits
/// non-zero; a new driver replaces the dead one's files and removes them when it stops.
#[test]
fn tp_over_aeron_a_producer_four_consumer_processes_and_every_kill() {
    let scope = ShmScope::new("cli-tp-aeron");
    let base = Base(PathBuf::from("/dev/shm").join(scope.name("base")));
    std::fs::create_dir(&base.0).unwrap();
    let aeron = AeronDir::new(&scope);
    let mut driver = media_driver(&aeron);
    let b = base.0.to_str().unwrap();
    let consume = |extra: &[&str]| {
        tp(
            &aeron,
            "consume",
            &[&["--base", b, "--stream", "10007"], extra].concat(),
        )
    };
    let mut slow = consume(&["--slow", "40ms"]);
    let mut own = consume(&["--own-stream", "31001"]);
    let mut fallback = consume(&["--no-shm"]);
    let mut stalled = consume(&[]);
    let (mut p, _ring) = producer(
        &aeron,
        &base.0,
        &[
            "--shape",
            "1080x1920x3",
            "--fps",
            "30",
            "--fallback-uri",
            "aeron:udp?endpoint=127.0.0.1:40999",
        ],
    );
    let mapped = |c: &mut PeerProcess| {
        c.line_where(Duration::from_secs(20), "mapped", |l| {
            l.starts_with("mapped epoch")
        });
    };
    mapped(&mut slow);
    mapped(&mut own);
    mapped(&mut stalled);
    // The per-consumer one moves to the stream the producer's supervisor granted.
    own.line_where(Duration::from_secs(20), "on its own stream", |l| {
        l.ends_with("stream 31001") || l.contains("stream 31001 (granted")
    });
    let (l, _) = fallback.line_where(Duration::from_secs(20), "in fallback", |l| {
        l.starts_with("fallback:")
    });
    assert!(l.ends_with("aeron:udp?endpoint=127.0.0.1:40999"), "{l}");
    stalled.signal(rustix::process::Signal::STOP);
    stalled.wait_until_stopped();

    // Frames flow to the slow one and the per-consumer one; every accepted frame is checked
    // (a report says how many were bad).
    let accepted = |c: &mut PeerProcess, at_least: u64| loop {
        let (l, _) = c.line_where(Duration::from_secs(30), "a report", |l| {
            l.contains(" accepted; drops")
        });
        assert!(l.ends_with("; 0 bad"), "{l}");
        let n: u64 = l.split_whitespace().next().unwrap().parse().unwrap();
        if n >= at_least {
            break n;
        }
    };
    accepted(&mut own, 30);
    accepted(&mut slow, 10);

    // A consumer killed: the producer keeps its rate (two reports after the kill, at 30/s).
    slow.kill();
    for _ in 0..3 {
        let (l, _) = p.line_where(Duration::from_secs(10), "a rate report", |l| {
            l.contains(" frames/s,")
        });
        let rate: f64 = l
            .split(" frames, ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rate > 24.0, "the producer kept its rate: {l}");
    }
    let n = accepted(&mut own, 0);
    accepted(&mut own, n + 20);

    // The producer killed: every mapped consumer unmaps within three announce periods (600 ms;
    // the reports come each second, so allow one report's time besides).
    p.kill();
    let (_, took) = own.line_where(Duration::from_secs(10), "unmapped", |l| {
        l.starts_with("unmapped:")
    });
    assert!(
        took < Duration::from_millis(600 + 1000),
        "unmapped after {took:?}"
    );
    stalled.signal(rustix::process::Signal::CONT);
    let (_, took) = stalled.line_where(Duration::from_secs(10), "unmapped", |l| {
        l.starts_with("unmapped:")
    });
    assert!(
        took < Duration::from_millis(600 + 1000),
        "unmapped after {took:?}"
    );

    // The media driver killed: each client says so in one line within the driver timeout (5 s)
    // and exits non-zero.
    driver.kill();
    for c in [&mut own, &mut stalled, &mut fallback] {
        let (l, took) = c.line_where(Duration::from_secs(15), "the error", |l| {
            l.starts_with("xmem: error:")
        });
        assert!(
            l.contains("lost the media driver") && l.contains("restart it"),
            "{l}"
        );
        assert!(took < Duration::from_secs(5 + 2), "{took:?}");
        assert_eq!(c.wait().code(), Some(1));
    }
    // A new driver replaces the dead one's files at once and removes them when it stops.
    let mut again = media_driver(&aeron);
    sigterm(&again);
    assert!(again.wait().success());
    assert!(!aeron.exists(), "the driver removed {}", aeron.display());
    drop(base); // the killed producer's regions (a producer cleans up only when it stops)
}

/// The regions of a live producer, inspected; SIGTERM stops it and it removes them. A
/// consumer counts exactly what it was asked for, every frame checked.
#[test]
fn tp_produce_and_consume_processes_check_every_frame_and_leave_nothing() {
    let scope = ShmScope::new("cli-tp");
    let base = Base(PathBuf::from("/dev/shm").join(scope.name("base")));
    std::fs::create_dir(&base.0).unwrap();
    let aeron = AeronDir::new(&scope);
    let mut driver = media_driver(&aeron);
    let (mut p, ring) = producer(&aeron, &base.0, &["--shape", "270x480x3", "--fps", "2000"]);
    let mut c = tp(
        &aeron,
        "consume",
        &[
            "--base",
            base.0.to_str().unwrap(),
            "--stream",
            "10007",
            "--count",
            "300",
        ],
    );
    let (out, _) = c.line_where(Duration::from_secs(30), "the total", |l| {
        l.starts_with("accepted ")
    });
    assert!(
        out.starts_with("accepted 300 frames") && out.ends_with("0 with wrong bytes"),
        "{out}"
    );
    assert!(c.wait().success());
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
    assert_eq!(
        j["superblock"]["strideBytes"], 524_288,
        "the next power of two (Julia consumers want one)"
    );
    // SIGTERM: the producer stops and removes its regions.
    sigterm(&p);
    assert!(p.wait().success());
    let left: Vec<_> = walk(&base.0);
    assert!(left.is_empty(), "{left:?}");
    sigterm(&driver);
    assert!(driver.wait().success());
    assert!(!aeron.exists());
}

/// Out of file descriptors (`ulimit -n 32`: a container's or a service's low limit), the media
/// driver, a producer and a consumer still exchange frames, and leave nothing behind.
#[test]
fn tp_over_aeron_works_with_32_open_files_a_process() {
    let scope = ShmScope::new("cli-tp-fds");
    let base = Base(PathBuf::from("/dev/shm").join(scope.name("base")));
    std::fs::create_dir(&base.0).unwrap();
    let aeron = AeronDir::new(&scope);
    let mut cmd = Command::new(xmem_tests::xmem_cli(PEER));
    cmd.args(["tp", "media-driver", "--aeron-dir", aeron.to_str().unwrap()]);
    let mut driver = PeerProcess::from_command_with_stderr(with_fd_limit(cmd, 32));
    driver.line_where(Duration::from_secs(30), "saying it runs", |l| {
        l.starts_with("media driver running in")
    });
    let b = base.0.to_str().unwrap();
    let produce = &[
        "--base", b, "--stream", "10007", "--shape", "64x64", "--fps", "2000",
    ];
    let mut p =
        PeerProcess::from_command_with_stderr(with_fd_limit(tp_command(&aeron, "produce", produce), 32));
    p.line_where(Duration::from_secs(30), "producing", |l| {
        l.starts_with("producing stream 10007")
    });
    let consume = &["--base", b, "--stream", "10007", "--count", "300"];
    let mut c =
        PeerProcess::from_command_with_stderr(with_fd_limit(tp_command(&aeron, "consume", consume), 32));
    let (out, _) = c.line_where(Duration::from_secs(30), "the total", |l| {
        l.starts_with("accepted ")
    });
    assert!(
        out.starts_with("accepted 300 frames") && out.ends_with("0 with wrong bytes"),
        "{out}"
    );
    assert!(c.wait().success());
    sigterm(&p);
    assert!(p.wait().success());
    assert!(walk(&base.0).is_empty(), "{:?}", walk(&base.0));
    sigterm(&driver);
    assert!(driver.wait().success());
    assert!(!aeron.exists());
}

/// `xmem tp listen` prints what crosses the control plane, decoded: a producer's announces on
/// both the control and the announce stream, its QoS, in text and as JSON lines.
#[test]
fn tp_listen_prints_the_control_plane_decoded() {
    let scope = ShmScope::new("cli-tp-listen");
    let base = Base(PathBuf::from("/dev/shm").join(scope.name("base")));
    std::fs::create_dir(&base.0).unwrap();
    let aeron = AeronDir::new(&scope);
    let mut driver = media_driver(&aeron);
    let (mut p, _) = producer(
        &aeron,
        &base.0,
        &["--shape", "64x64", "--fps", "100", "--name", "cam1"],
    );
    let mut json = tp(&aeron, "listen", &["--format", "json", "--count", "12"]);
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..12 {
        let (l, _) = json.line_where(Duration::from_secs(20), "a message", |l| l.starts_with('{'));
        let j: serde_json::Value = serde_json::from_str(&l).unwrap();
        seen.insert((
            j["stream"].as_i64().unwrap(),
            j["message"]["message"].as_str().unwrap().to_string(),
        ));
    }
    assert!(json.wait().success());
    for want in [
        (1000, "ShmPoolAnnounce"),
        (1001, "ShmPoolAnnounce"),
        (1200, "QosProducer"),
        (1300, "DataSourceAnnounce"),
    ] {
        assert!(
            seen.contains(&(want.0, want.1.to_string())),
            "{want:?} in {seen:?}"
        );
    }
    // `xmem tp stat`: the producer's counters from the driver's counters file.
    let stat = ok(
        xmem(
            &[
                "tp",
                "stat",
                "--aeron-dir",
                aeron.to_str().unwrap(),
                "--format",
                "json",
            ],
            None,
        ),
        "stat",
    );
    let j: serde_json::Value = serde_json::from_str(&stat).unwrap();
    let producer = j
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["role"] == "producer" && o["stream"] == 10007 && o["pid"] == p.pid)
        .unwrap_or_else(|| panic!("the producer's counters: {stat}"));
    assert!(producer["counters"]["frames"].as_i64().unwrap() > 0, "{stat}");
    assert!(producer["counters"]["announces"].as_i64().unwrap() > 0, "{stat}");
    let mut text = tp(&aeron, "listen", &["--count", "1"]);
    let (l, _) = text.line_where(Duration::from_secs(20), "a message", |l| l.starts_with("stream "));
    assert!(l.contains("wire "), "{l}");
    assert!(text.wait().success());
    sigterm(&p);
    assert!(p.wait().success());
    sigterm(&driver);
    assert!(driver.wait().success());
}

#[test]
fn tp_inspect_shows_a_killed_producer_and_refuses_what_is_not_a_region() {
    let scope = ShmScope::new("cli-tp-kill");
    let base = Base(PathBuf::from("/dev/shm").join(scope.name("base")));
    std::fs::create_dir(&base.0).unwrap();
    let aeron = AeronDir::new(&scope);
    let mut driver = media_driver(&aeron);
    let (mut p, ring) = producer(&aeron, &base.0, &["--shape", "270x480x3"]);
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
    sigterm(&driver);
    assert!(driver.wait().success());
}

/// With no driver running and `--driver external`, a client says at once how to get one.
#[test]
fn tp_without_a_driver_says_how_to_start_one() {
    let scope = ShmScope::new("cli-tp-nodriver");
    let aeron = AeronDir::new(&scope);
    let err = fails_with_one_line(
        xmem(
            &[
                "tp",
                "consume",
                "--aeron-dir",
                aeron.to_str().unwrap(),
                "--driver",
                "external",
            ],
            None,
        ),
        "no driver",
    );
    assert!(
        err.contains("no media driver runs in") && err.contains("xmem tp media-driver"),
        "{err}"
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

/// The driver model from the shell: `xmem tp driver --config` (its media driver embedded), a
/// producer and a consumer that `--attach` through it, `xmem tp leases` listing both leases,
/// `--print-config`, and a SIGTERM that leaves nothing in /dev/shm.
#[test]
fn tp_driver_serves_attached_processes_lists_their_leases_and_d_3_1_refuses_a_manual_geometry() {
    let scope = ShmScope::new("cli-tp-driver");
    let base = Base(PathBuf::from("/dev/shm").join(scope.name("base")));
    std::fs::create_dir(&base.0).unwrap();
    let aeron = AeronDir::new(&scope);
    let config = std::env::temp_dir().join(format!("{}.toml", scope.name("config")));
    let b = base.0.display();
    std::fs::write(
        &config,
        format!(
            "[driver]\ncontrol_stream_id = 1000\nannounce_stream_id = 1001\n\
             [shm]\nbase_dir = \"{b}\"\nallowed_base_dirs = [\"{b}\"]\n\
             [policies]\nannounce_period_ms = 200\nlease_keepalive_interval_ms = 1000\nshutdown_token = \"t0ken\"\n\
             [profiles.camera]\nheader_nslots = 32\npayload_pools = [{{ pool_id = 1, stride_bytes = 524288 }}]\n\
             [streams.cam]\nstream_id = 10007\nprofile = \"camera\"\ntags = [\"lab\", \"rgb\"]\n\
             [discovery]\nenabled = true\n"
        ),
    )
    .unwrap();
    let printed = ok(
        xmem(
            &[
                "tp",
                "driver",
                "--config",
                config.to_str().unwrap(),
                "--print-config",
            ],
            None,
        ),
        "print-config",
    );
    assert!(
        printed.contains("header_nslots = 32") && printed.contains("lease_expiry_grace_intervals = 3"),
        "{printed}"
    );
    let mut cmd = Command::new(xmem_tests::xmem_cli(PEER));
    cmd.args([
        "tp",
        "driver",
        "--config",
        config.to_str().unwrap(),
        "--aeron-dir",
        aeron.to_str().unwrap(),
    ]);
    let mut driver = PeerProcess::from_command_with_stderr(cmd);
    driver.line_where(Duration::from_secs(30), "saying it serves", |l| {
        l.starts_with("tensor-pool driver ")
    });
    let base_arg = base.0.to_str().unwrap();
    // D-3-1: the driver's geometry is authoritative; a manual one is refused, in one line.
    let refused = fails_with_one_line(
        xmem(
            &[
                "tp",
                "produce",
                "--attach",
                "--nslots",
                "16",
                "--aeron-dir",
                aeron.to_str().unwrap(),
            ],
            None,
        ),
        "a manual geometry in driver mode",
    );
    assert!(refused.contains("driver's to choose"), "{refused}");
    let mut c = tp(
        &aeron,
        "consume",
        &[
            "--attach", "--base", base_arg, "--stream", "10007", "--count", "200",
        ],
    );
    c.line_where(Duration::from_secs(30), "attached", |l| {
        l.starts_with("attached as consumer of stream 10007")
    });
    let mut p = tp(
        &aeron,
        "produce",
        &[
            "--attach",
            "--base",
            base_arg,
            "--stream",
            "10007",
            "--shape",
            "256x512x3",
            "--fps",
            "200",
        ],
    );
    p.line_where(Duration::from_secs(30), "attached", |l| {
        l.starts_with("attached as producer of stream 10007")
    });
    // Lease counters are added beside the leases (an add takes a conductor round trip).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let listed = ok(
            xmem(&["tp", "leases", "--aeron-dir", aeron.to_str().unwrap()], None),
            "leases",
        );
        let both = listed.contains("producer") && listed.contains("consumer");
        if both || std::time::Instant::now() > deadline {
            break listed;
        }
    };
    assert!(
        listed.contains("producer") && listed.contains("consumer") && listed.contains("10007"),
        "{listed}"
    );
    // `xmem ls` finds the driver's stream under a base directory of its own, one level below
    // /dev/shm, beside the driver itself.
    let ls = ok(xmem(&["ls", "--format", "json"], None), "ls");
    assert!(
        ls.contains("\"tensorpool-stream\"")
            && ls.contains(base.0.to_str().unwrap())
            && ls.contains("tensorpool-driver"),
        "{ls}"
    );
    let (out, _) = c.line_where(Duration::from_secs(30), "the total", |l| {
        l.starts_with("accepted ")
    });
    assert!(
        out.starts_with("accepted 200 frames") && out.ends_with("0 with wrong bytes"),
        "{out}"
    );
    assert!(c.wait().success());
    // An administrator's revoke (xmem's own request, guarded by the shutdown token): refused
    // with a wrong token; with the right one the producer's lease ends as REVOKED, and the
    // process reattaches to a new epoch.
    let aeron_arg = aeron.to_str().unwrap();
    let json = ok(
        xmem(
            &["tp", "leases", "--aeron-dir", aeron_arg, "--format", "json"],
            None,
        ),
        "leases as JSON",
    );
    let lease = json
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["role"] == "producer")
        .and_then(|v| v["lease_id"].as_u64())
        .unwrap_or_else(|| panic!("no producer lease in {json}"))
        .to_string();
    let revoke = |token: &str| {
        xmem(
            &[
                "tp",
                "leases",
                "--aeron-dir",
                aeron_arg,
                "--revoke",
                &lease,
                "--token",
                token,
                "--why",
                "maintenance",
            ],
            None,
        )
    };
    let refused = fails_with_one_line(revoke("wrong"), "a revoke with a wrong token");
    assert!(
        refused.contains(&format!("no revoke of lease {lease}")),
        "{refused}"
    );
    let said = ok(revoke("t0ken"), "a revoke with the token");
    assert!(
        said.contains(&format!("lease {lease} (producer of stream 10007")) && said.contains("maintenance"),
        "{said}"
    );
    p.line_where(Duration::from_secs(30), "the producer reattached", |l| {
        l.starts_with("attached as producer of stream 10007")
    });
    sigterm(&p);
    assert!(p.wait().success());
    sigterm(&driver);
    assert!(driver.wait().success());
    std::fs::remove_file(&config).unwrap();
    let left: Vec<_> = walk(&base.0);
    assert!(
        left.is_empty(),
        "the driver's clean shutdown leaves nothing: {left:?}"
    );
    assert!(!aeron.exists(), "its embedded media driver removed its directory");
}

/// `xmem tp clean`: a live producer's epoch and a live media driver are left alone; once both
/// are SIGKILLed, `--dry-run` names them and removes nothing, and `clean` removes the epoch,
/// the layout directories above it and the dead driver's directory.
#[test]
fn tp_clean_removes_what_killed_producers_and_drivers_left_and_nothing_alive() {
    let scope = ShmScope::new("tpclean");
    let aeron = AeronDir::new(&scope);
    let base = Base(PathBuf::from("/dev/shm").join(scope.name("base")));
    std::fs::create_dir(&base.0).unwrap();
    let mut driver = media_driver(&aeron);
    let (mut producer, ring) = producer(&aeron, &base.0, &["--shape", "64x64x3", "--fps", "100"]);
    let epoch = ring.parent().unwrap().to_path_buf();
    let clean = |extra: &[&str]| {
        let args = [
            &[
                "tp",
                "clean",
                "--base",
                base.0.to_str().unwrap(),
                "--aeron-dir",
                aeron.to_str().unwrap(),
            ],
            extra,
        ]
        .concat();
        ok(xmem(&args, None), "xmem tp clean")
    };
    let said = clean(&["--grace", "0s"]);
    assert!(said.starts_with("nothing to clean"), "{said}");
    assert!(epoch.join("header.ring").exists() && aeron.join("cnc.dat").exists());
    producer.kill();
    driver.kill();
    // Within the grace period (the producer was active a moment ago) its epoch stays.
    let said = clean(&["--grace", "1h"]);
    assert!(!said.contains(epoch.to_str().unwrap()), "{said}");
    // The driver's directory is judged by its heartbeat: dead once silent for a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let said = loop {
        let said = clean(&["--grace", "0s", "--dry-run"]);
        if said.contains("media driver pid") {
            break said;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dead driver was never seen: {said}"
        );
        std::thread::yield_now();
    };
    assert!(
        said.contains(&format!("{}: would remove (stream 10007", epoch.display())),
        "{said}"
    );
    assert!(
        epoch.exists() && aeron.join("cnc.dat").exists(),
        "a dry run removes nothing"
    );
    let said = clean(&["--grace", "0s"]);
    assert!(
        said.contains("removed (stream 10007") && said.contains("media driver pid"),
        "{said}"
    );
    assert_eq!(
        walk(&base.0),
        Vec::<PathBuf>::new(),
        "the epoch and the layout above it"
    );
    assert!(
        std::fs::read_dir(&base.0).unwrap().next().is_none(),
        "empty layout directories go too"
    );
    assert!(!aeron.exists(), "the dead driver's directory");
}
