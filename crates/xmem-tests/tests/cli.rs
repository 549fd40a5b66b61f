//! The `xmem` command against real objects, in a private shared-memory directory so that
//! `xmem clean` cannot touch what other tests are doing.

use std::path::PathBuf;
use std::process::{Command, Output};

use xmem_core::BufferPool;
use xmem_tests::{PeerProcess, ShmScope};

const PEER: &str = env!("CARGO_BIN_EXE_xmem-test-peer");

fn xmem_bin() -> PathBuf {
    xmem_tests::xmem_cli(PEER)
}

struct Dir {
    path: PathBuf,
}

impl Dir {
    fn new(scope: &ShmScope) -> Dir {
        let path = PathBuf::from("/dev/shm").join(scope.name("dir"));
        std::fs::create_dir(&path).unwrap();
        Dir { path }
    }

    fn xmem(&self, args: &[&str]) -> Output {
        Command::new(xmem_bin())
            .args(args)
            .env("XMEM_SHM_DIR", &self.path)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.xmem(args);
        assert!(
            out.status.success(),
            "xmem {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A failing command: exit status 1 and exactly one line on stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.xmem(args);
        assert_eq!(out.status.code(), Some(1), "xmem {args:?} should fail");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "one-line reason expected: {err:?}");
        assert!(err.starts_with("xmem: error: "), "{err}");
        err
    }

    /// Starts `xmem watch --count COUNT --duration DURATION` (under `ulimit -n FDS` if given)
    /// and waits for its first line; returns it with its stderr and stdout.
    fn watch(
        &self,
        count: usize,
        duration: &str,
        fds: Option<u32>,
    ) -> (
        std::process::Child,
        std::io::BufReader<std::process::ChildStderr>,
        std::io::BufReader<std::process::ChildStdout>,
    ) {
        use std::io::BufRead;
        let limit = fds.map_or(String::new(), |n| format!("ulimit -n {n} && "));
        let mut watch = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{limit}exec \"$0\" watch --count {count} --duration {duration}"
            ))
            .arg(xmem_bin())
            .env("XMEM_SHM_DIR", &self.path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = std::io::BufReader::new(watch.stderr.take().unwrap());
        let events = std::io::BufReader::new(watch.stdout.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        assert!(line.starts_with("watching"), "{line}");
        (watch, err, events)
    }

    fn peer(&self) -> PeerProcess {
        PeerProcess::spawn(PEER, &[], &[("XMEM_SHM_DIR", self.path.to_str().unwrap())])
    }

    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[test]
fn ls_inspect_and_clean_see_dead_holders_and_orphans() {
    let scope = ShmScope::new("cli");
    let dir = Dir::new(&scope);
    assert!(dir.ok(&["ls"]).contains("no xmem objects"));

    // "orphan": its only process dies holding a buffer.
    let mut doomed = dir.peer();
    let doomed_pid = doomed.ok("create orphan 4 1024")[0].clone();
    doomed.ok("acquire 0");
    doomed.ok("fill 0 7");
    doomed.kill();
    // "live": this test keeps it open, holding a buffer.
    let live = BufferPool::builder("live")
        .directory(&dir.path)
        .buffers(2)
        .buffer_size(64)
        .create()
        .unwrap();
    let held = live.acquire().unwrap().freeze();

    let text = dir.ok(&["ls"]);
    assert!(
        text.contains("orphan") && text.contains("live") && text.contains("1/2 buffers"),
        "{text}"
    );
    let ls: serde_json::Value = serde_json::from_str(&dir.ok(&["ls", "--format", "json"])).unwrap();
    let orphan = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "orphan")
        .unwrap();
    assert_eq!(orphan["kind"], "pool");
    assert_eq!(orphan["owner_alive"], "no");
    assert_eq!(orphan["usage"]["in_use"], 1);

    let inspect: serde_json::Value =
        serde_json::from_str(&dir.ok(&["inspect", "orphan", "--format", "json"])).unwrap();
    let b0 = &inspect["buffer_states"][0];
    assert_eq!(b0["status"], "shared");
    assert_eq!(b0["holders"][0].to_string(), doomed_pid);
    assert_eq!(b0["tensor"]["dtype"], "uint8");
    assert_eq!(inspect["processes"][0]["alive"], "no");
    let text = dir.ok(&["inspect", "live"]);
    assert!(
        text.contains("shared") && text.contains(&std::process::id().to_string()),
        "{text}"
    );

    let dry = dir.ok(&["clean", "--dry-run"]);
    assert!(
        dry.contains("orphan: would return 1 reference(s)") && dry.contains("orphan: would remove"),
        "{dry}"
    );
    assert_eq!(
        dir.files(),
        ["xmem.live", "xmem.orphan"],
        "a dry run changes nothing"
    );
    let done = dir.ok(&["clean"]);
    assert!(done.contains("orphan: removed"), "{done}");
    assert!(!done.contains("live:"), "a live pool is left alone: {done}");
    assert_eq!(dir.files(), ["xmem.live"]);
    assert!(dir.ok(&["clean"]).contains("nothing to clean"));
    drop((held, live));
    assert!(dir.files().is_empty());
}

#[test]
fn bad_names_missing_and_damaged_objects_fail_with_one_line() {
    let scope = ShmScope::new("clibad");
    let dir = Dir::new(&scope);
    assert!(dir.fails(&["inspect", "../etc"]).contains("invalid name"));
    assert!(dir.fails(&["inspect", ""]).contains("empty"));
    assert!(dir.fails(&["inspect", "nothing"]).contains("no xmem object"));
    std::fs::write(dir.path.join("xmem.junk"), vec![0xabu8; 4096]).unwrap();
    assert!(dir.fails(&["inspect", "junk"]).contains("damaged"));
    assert!(dir.ok(&["ls"]).contains("damaged"));
    assert!(dir.ok(&["clean"]).contains("clean --damaged"));
    assert_eq!(dir.files(), ["xmem.junk"]);
    assert!(dir.ok(&["clean", "--damaged"]).contains("junk: removed"));
    assert!(dir.files().is_empty());
}

#[test]
fn the_device_demo_hands_device_frames_to_every_consumer_and_inspect_shows_the_allocation() {
    let scope = ShmScope::new("clidevice");
    let dir = Dir::new(&scope);
    let out = dir.ok(&[
        "demo",
        "--device",
        "host",
        "--duration",
        "300ms",
        "--consumers",
        "2",
        "--width",
        "320",
        "--height",
        "240",
    ]);
    assert!(out.contains("xmem demo on the host stand-in"), "{out}");
    let produced = out
        .lines()
        .find(|l| l.starts_with("publisher"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap();
    assert!(produced > 0, "{out}");
    let subscribers: Vec<&str> = out.lines().filter(|l| l.starts_with("subscriber")).collect();
    assert_eq!(subscribers.len(), 2, "{out}");
    for l in subscribers {
        let words: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(
            words[2].parse::<u64>().unwrap(),
            produced,
            "every frame reached: {l}"
        );
        assert_eq!(*words.last().unwrap(), "0", "no damaged frame: {l}");
    }
    assert!(dir.files().is_empty(), "{:?}", dir.files());

    let builder = BufferPool::builder("gpu")
        .directory(&dir.path)
        .buffers(3)
        .buffer_size(5000);
    let pool = xmem_device::DevicePool::create(builder, xmem_device::HostStandIn::new("gpu")).unwrap();
    let text = dir.ok(&["inspect", "gpu"]);
    assert!(text.contains("Device storage"), "{text}");
    assert!(
        text.contains("device: host-stand-in 00000000-0000-0000-0000-000000000000, one allocation of"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&dir.ok(&["inspect", "gpu", "--format", "json"])).unwrap();
    assert_eq!(json["storage"], "device");
    assert_eq!(json["device"]["kind"], "host-stand-in");
    assert_eq!(json["device"]["allocation_bytes"], pool.record().bytes);
    assert!(pool.record().bytes >= 3 * 5120, "{:?}", pool.record());
    drop(pool);
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn the_demo_runs_hands_frames_to_every_consumer_and_leaves_nothing() {
    let scope = ShmScope::new("clidemo");
    let dir = Dir::new(&scope);
    let out = dir.ok(&[
        "demo",
        "--duration",
        "300ms",
        "--consumers",
        "3",
        "--width",
        "320",
        "--height",
        "240",
    ]);
    assert!(out.contains("subscriber 3"), "{out}");
    // The second part: the same frames as a tensor pool over an embedded Aeron media driver.
    assert!(
        out.contains("xmem tp demo:") && out.contains("consumer 3"),
        "{out}"
    );
    assert!(out.contains("every accepted frame was checked"), "{out}");
    let producer: u64 = out
        .lines()
        .find(|l| l.starts_with("publisher"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(producer > 0);
    for l in out.lines().filter(|l| l.starts_with("subscriber")) {
        let words: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(
            words[2].parse::<u64>().unwrap(),
            producer,
            "every frame reached every consumer: {l}"
        );
        assert_eq!(*words.last().unwrap(), "0", "no damaged frame: {l}");
    }
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn the_stream_benchmark_prints_both_tables_with_the_floor_and_leaves_nothing() {
    let scope = ShmScope::new("clibench");
    let dir = Dir::new(&scope);
    let out = dir.ok(&[
        "bench",
        "--scale",
        "0.001",
        "--transports",
        "xmem,unix-socket,floor",
    ]);
    let (latency, throughput) = out.split_once("throughput").expect("both tables");
    let row = |table: &str, label: &str| -> Vec<String> {
        let line = table
            .lines()
            .find(|l| l.starts_with(&format!("| {label} |")))
            .unwrap_or_else(|| panic!("no row {label:?} in {out}"));
        line.split('|')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect()
    };
    // Latency: xmem, unix-socket and floor percentiles, then xmem's ratio to the other two.
    let small = row(latency, "8 B");
    assert_eq!(small.len(), 1 + 3 + 2, "{small:?}");
    for cell in &small[1..4] {
        let p: Vec<u64> = cell.split(" / ").map(|n| n.parse().unwrap()).collect();
        assert!(
            p[0] > 0 && p[0] <= p[1] && p[1] <= p[2],
            "percentiles in order: {cell}"
        );
    }
    assert!(small[5].ends_with('×'), "xmem ÷ floor: {small:?}");
    // A frame written in full has the memset bound for its floor, not the ring.
    assert_eq!(row(latency, "1080p, fully written")[3], "—");
    let rates = row(throughput, "8 B");
    assert!(rates[1..4].iter().all(|r| r.ends_with("/s")), "{rates:?}");
    assert_eq!(row(throughput, "1080p, publisher fills every frame")[3], "—");
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn segments_are_listed_inspected_watched_and_cleaned() {
    use std::io::BufRead;
    let scope = ShmScope::new("cliseg");
    let dir = Dir::new(&scope);
    let (mut watch, _err, mut events) = dir.watch(3, "60s", None);
    // Each event is awaited before the next step: the watch reports what happened, in order,
    // however late it gets to run.
    let mut next_event = || {
        let mut line = String::new();
        events.read_line(&mut line).unwrap();
        line
    };

    let mut writer = dir.peer();
    let pid = writer.ok("segcreate state 8192")[0].clone();
    writer.ok("segwrite hello");
    let created = next_event();
    assert!(
        created.contains("created") && created.contains("state (segment, owner pid"),
        "{created}"
    );
    let ls = dir.ok(&["ls"]);
    assert!(ls.contains("segment") && ls.contains("v2, writer alive"), "{ls}");
    let info: serde_json::Value =
        serde_json::from_str(&dir.ok(&["inspect", "state", "--format", "json"])).unwrap();
    assert_eq!(info["kind"], "segment");
    assert_eq!(info["writes"], 1);
    assert_eq!(info["writer"]["pid"].to_string(), pid);
    assert_eq!(info["writer"]["alive"], true);
    writer.kill();
    let died = next_event();
    assert!(died.contains("owner died") && died.contains(&pid), "{died}");
    assert!(dir.ok(&["ls"]).contains("writer gone"));
    assert!(dir
        .ok(&["clean", "--grace", "1h"])
        .contains("state: orphaned; removable in"));
    assert_eq!(dir.files(), ["xmem.state"], "kept during its grace period");
    assert!(dir.ok(&["clean"]).contains("state: removed (its writer is gone)"));
    assert!(dir.files().is_empty());
    let removed = next_event();
    assert!(
        removed.contains("removed") && removed.contains("state"),
        "{removed}"
    );

    // `--count 3`: the watch ends by itself after the third event, having printed nothing else.
    assert!(watch.wait().unwrap().success());
    assert_eq!(next_event(), "");
}

#[test]
fn streams_are_listed_and_inspected_with_their_subscribers() {
    use xmem_core::stream::{Policy, Publisher, Subscriber};
    let scope = ShmScope::new("clistream");
    let dir = Dir::new(&scope);
    let mut publisher = Publisher::builder("cam")
        .directory(&dir.path)
        .buffers(8)
        .buffer_size(64)
        .depth(4)
        .policy(Policy::DropOldest)
        .create()
        .unwrap();
    let mut subscriber = Subscriber::builder("cam").directory(&dir.path).open().unwrap();
    assert_eq!(publisher.subscriber_count(), 1);
    for _ in 0..3 {
        let f = publisher.loan().unwrap();
        publisher.publish(f).unwrap();
    }
    drop(subscriber.try_receive().unwrap().unwrap());

    let ls = dir.ok(&["ls"]);
    assert!(
        ls.lines().any(|l| l.starts_with("cam ") && l.contains("stream")),
        "{ls}"
    );
    let text = dir.ok(&["inspect", "cam"]);
    assert!(text.contains("policy drop-oldest, queue depth 4"), "{text}");
    assert!(text.contains("3 frame(s) published"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&dir.ok(&["inspect", "cam", "--format", "json"])).unwrap();
    assert_eq!(json["kind"], "stream");
    assert_eq!(json["published"], 3);
    let subs = json["subscribers"].as_array().unwrap();
    assert_eq!(subs.len(), 1, "{json}");
    assert_eq!(subs[0]["pid"], std::process::id());
    assert_eq!(subs[0]["state"], "active");
    assert_eq!(
        (subs[0]["received"].as_u64(), subs[0]["queued"].as_u64()),
        (Some(1), Some(2))
    );
    // Its pool: the subscriber batches the hints of the small frames it frees, and says so.
    let pool: serde_json::Value =
        serde_json::from_str(&dir.ok(&["inspect", json["pool"].as_str().unwrap(), "--format", "json"]))
            .unwrap();
    let keeps: Vec<bool> = pool["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["keeps_hints_back"].as_bool().unwrap())
        .collect();
    assert!(keeps.contains(&true), "{pool}");

    drop(subscriber);
    drop(publisher);
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

/// `xmem` run as `nobody` (uid 65534), or `None` where this test cannot switch users (not root).
fn as_nobody(dir: &Dir, args: &[&str]) -> Option<Output> {
    use std::os::unix::process::CommandExt;
    if rustix::process::geteuid().as_raw() != 0 {
        println!("skipped: switching to another uid needs root");
        return None;
    }
    Some(
        Command::new(xmem_bin())
            .args(args)
            .env("XMEM_SHM_DIR", &dir.path)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap(),
    )
}

#[test]
fn objects_of_another_user_are_listed_as_unreadable_not_hidden() {
    let scope = ShmScope::new("cliuid");
    let dir = Dir::new(&scope);
    let pool = BufferPool::builder("private")
        .directory(&dir.path)
        .buffers(2)
        .buffer_size(64)
        .create()
        .unwrap();
    let Some(ls) = as_nobody(&dir, &["ls"]) else {
        return;
    };
    let ls = String::from_utf8(ls.stdout).unwrap();
    assert!(
        ls.contains("private") && ls.contains("unreadable") && ls.contains("owned by uid 0 with mode 0600"),
        "{ls}"
    );
    let json = as_nobody(&dir, &["ls", "--format", "json"]).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json[0]["state"], "unreadable", "{json}");
    let clean = as_nobody(&dir, &["clean"]).unwrap();
    assert!(clean.status.success());
    let clean = String::from_utf8(clean.stdout).unwrap();
    assert!(
        clean.contains("private: left alone, not readable by uid 65534")
            && clean.contains("1 object(s) not readable"),
        "{clean}"
    );
    assert!(!clean.contains("nothing to clean in"), "{clean}");
    let inspect = as_nobody(&dir, &["inspect", "private"]).unwrap();
    assert_eq!(inspect.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&inspect.stderr).contains("permission denied"));
    assert_eq!(dir.files(), ["xmem.private"]);
    drop(pool);
}

/// Starts `xmem produce NAME` and waits until it publishes; the caller kills it.
fn producer(dir: &Dir, name: &str) -> PeerProcess {
    let mut cmd = Command::new(xmem_bin());
    cmd.args(["produce", name, "--shape", "64", "--fps", "1000"])
        .env("XMEM_SHM_DIR", &dir.path);
    let mut p = PeerProcess::from_command(cmd);
    assert_eq!(p.line(), "ready");
    p
}

fn scribble(path: &std::path::Path, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

#[test]
fn a_damaged_stream_whose_publisher_died_is_cleaned_and_its_name_taken_again() {
    let scope = ShmScope::new("clidmg");
    let dir = Dir::new(&scope);
    // Its layout version scribbled (offset 16 of the common header): damage, not a version
    // another xmem wrote, and plain `xmem clean` removes it since no one holds its lock.
    producer(&dir, "cam").kill();
    scribble(&dir.path.join("xmem.cam"), 16, &0xdead_beef_u32.to_le_bytes());
    let ls = dir.ok(&["ls"]);
    let line = ls.lines().find(|l| l.starts_with("cam ")).unwrap();
    assert!(
        line.contains("damaged")
            && line.contains("layout version 3735928559 is not one any xmem writes")
            && line.contains("`xmem clean --damaged` removes it"),
        "{ls}"
    );
    assert!(!ls.contains("use one xmem version"), "{ls}");
    let clean = dir.ok(&["clean"]);
    assert!(
        clean.contains("cam: removed (damaged") && clean.contains("its owner is gone"),
        "{clean}"
    );
    assert!(
        dir.files().is_empty(),
        "the stream and its pool: {:?}",
        dir.files()
    );
    producer(&dir, "cam").kill();
    dir.ok(&["clean"]);

    // Its magic scribbled: not recognisably a stream any more, so only `--damaged` removes it,
    // and every command that meets it says so.
    producer(&dir, "cam").kill();
    scribble(&dir.path.join("xmem.cam"), 0, &[0xff; 8]);
    assert!(dir
        .ok(&["clean"])
        .contains("cam: damaged (not an xmem object); `xmem clean --damaged` removes it"));
    let out = dir.xmem(&["produce", "cam", "--count", "1"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("xmem clean --damaged"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir
        .ok(&["clean", "--damaged"])
        .contains("cam: removed (damaged: not an xmem object)"));
    let done = dir.ok(&["produce", "cam", "--count", "3", "--shape", "64"]);
    assert!(done.contains("done 3 frames"), "{done}");
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn output_to_a_closed_pipe_ends_quietly_not_in_a_panic() {
    let scope = ShmScope::new("clipipe");
    let dir = Dir::new(&scope);
    let _pool = BufferPool::builder("listed")
        .directory(&dir.path)
        .buffers(2)
        .buffer_size(64)
        .create()
        .unwrap();
    for args in [&["ls"][..], &["ls", "--format", "json"], &["inspect", "listed"]] {
        // The reading end is closed before xmem writes a byte: `xmem ls | true`, deterministic.
        let (reader, writer) = std::os::unix::net::UnixStream::pair().unwrap();
        drop(reader);
        let out = Command::new(xmem_bin())
            .args(args)
            .env("XMEM_SHM_DIR", &dir.path)
            .stdout(std::process::Stdio::from(std::os::fd::OwnedFd::from(writer)))
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "xmem {args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "xmem {args:?}: {err}");
    }
}

#[test]
fn produce_and_consume_stop_on_sigint_and_sigterm_and_leave_nothing() {
    use rustix::process::Signal;
    let scope = ShmScope::new("clisig");
    let dir = Dir::new(&scope);
    for signal in [Signal::INT, Signal::TERM] {
        let mut p = producer(&dir, "cam");
        let mut cmd = Command::new(xmem_bin());
        cmd.args(["consume", "cam"]).env("XMEM_SHM_DIR", &dir.path);
        let mut c = PeerProcess::from_command(cmd);
        // The consumer is in once the stream lists a subscriber.
        let subscribed = || {
            let json: serde_json::Value =
                serde_json::from_str(&dir.ok(&["inspect", "cam", "--format", "json"])).unwrap();
            json["subscribers"].as_array().is_some_and(|s| !s.is_empty())
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !subscribed() {
            assert!(
                std::time::Instant::now() < deadline,
                "the consumer never subscribed"
            );
            std::thread::yield_now();
        }
        c.signal(signal);
        assert!(c.wait().success(), "consume on {signal:?}");
        assert!(c.line().starts_with("received "), "it reports what it received");
        p.signal(signal);
        assert!(p.wait().success(), "produce on {signal:?}");
        assert!(p.line().starts_with("done "), "it reports what it published");
        assert!(dir.files().is_empty(), "{signal:?} left {:?}", dir.files());
    }
}

#[test]
fn watch_out_of_file_descriptors_reports_every_creation_and_death_and_says_why() {
    use std::io::{BufRead, Read};
    let scope = ShmScope::new("clifds");
    let dir = Dir::new(&scope);
    const OWNERS: usize = 10;
    // 10 descriptors: stdio, epoll and inotify leave 5 for pidfds and for opening new objects.
    let (mut watch, mut err, mut events) = dir.watch(2 * OWNERS, "120s", Some(10));
    let mut next_event = || {
        let mut line = String::new();
        events.read_line(&mut line).unwrap();
        line
    };
    let mut writers: Vec<PeerProcess> = (0..OWNERS).map(|_| dir.peer()).collect();
    let mut pids = Vec::new();
    for (i, w) in writers.iter_mut().enumerate() {
        pids.push(w.ok(&format!("segcreate s{i} 4096"))[0].clone());
        let created = next_event();
        assert!(
            created.contains("created") && created.contains(&format!("s{i} ")),
            "{created}"
        );
    }
    for w in &mut writers {
        w.kill();
    }
    let mut died: Vec<String> = (0..OWNERS).map(|_| next_event()).collect();
    died.sort();
    for pid in &pids {
        assert_eq!(
            died.iter()
                .filter(|l| l.contains("owner died") && l.contains(pid.as_str()))
                .count(),
            1,
            "pid {pid}: {died:?}"
        );
    }
    assert!(watch.wait().unwrap().success());
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(
        rest.contains("out of file descriptors"),
        "it says why it polls: {rest}"
    );
    dir.ok(&["clean"]);
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn a_publisher_out_of_file_descriptors_still_delivers_to_every_subscriber_and_says_so() {
    let scope = ShmScope::new("clipubfds");
    let dir = Dir::new(&scope);
    const SUBSCRIBERS: usize = 8;
    const FRAMES: &str = "200";
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -n 9 && exec \"$0\" produce cam --shape 64 --policy block --count 200 --subscribers 8")
        .arg(xmem_bin())
        .env("XMEM_SHM_DIR", &dir.path)
        .stderr(std::process::Stdio::piped());
    let publisher = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    // The stream exists once its file does; the subscribers join it then.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !dir.files().contains(&"xmem.cam".to_string()) {
        assert!(std::time::Instant::now() < deadline, "no stream");
        std::thread::yield_now();
    }
    let consumers: Vec<_> = (0..SUBSCRIBERS)
        .map(|_| {
            Command::new(xmem_bin())
                .args(["consume", "cam", "--count", FRAMES])
                .env("XMEM_SHM_DIR", &dir.path)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in consumers {
        let out = c.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains(&format!("received {FRAMES} frames")) && text.contains(" 0 dropped, 0 damaged"),
            "every frame reached every subscriber: {text}"
        );
    }
    let out = publisher.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("no pidfd for a subscriber"), "it says why: {err}");
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

/// The crash points (a test feature of xmem-core that exits the process at named places) are in
/// no binary of the main workspace: not in `xmem`, not in the Python module, not in a
/// `cargo build --workspace`. `cargo tree` prints the features each package is built with.
#[test]
fn crash_points_are_compiled_into_no_binary_of_the_main_workspace() {
    let manifest = xmem_tests::main_workspace().join("Cargo.toml");
    for what in [&["-p", "xmem-cli"][..], &["-p", "xmem-python"], &["--workspace"]] {
        let out = Command::new(env!("CARGO"))
            .args(["tree", "--offline", "-e", "features", "--manifest-path"])
            .arg(&manifest)
            .args(what)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cargo tree {what:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tree = String::from_utf8_lossy(&out.stdout);
        assert!(
            tree.contains("xmem-core feature \"default\""),
            "cargo tree {what:?} lists xmem-core's features:\n{tree}"
        );
        assert!(
            !tree.contains("crash-points"),
            "cargo tree {what:?} builds xmem-core with crash points:\n{tree}"
        );
    }
    // And the test workspace does turn them on (the check above would pass on a renamed feature).
    let out = Command::new(env!("CARGO"))
        .args(["tree", "--offline", "-e", "features", "-i", "xmem-core"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("xmem-core feature \"crash-points\""));
}

/// `xmem completions bash` is a script bash accepts, and it completes subcommands of every
/// level (`xmem w` → `watch`, `xmem tp m` → `media-driver`).
#[test]
fn completions_complete_subcommands_in_bash() {
    let script = r#"source <("$XMEM" completions bash) || exit 3
        complete -p xmem >/dev/null || exit 4
        COMP_WORDS=(xmem w); COMP_CWORD=1; COMP_LINE="xmem w"; COMP_POINT=6
        _xmem xmem w xmem; echo "${COMPREPLY[@]}"
        COMP_WORDS=(xmem tp m); COMP_CWORD=2; COMP_LINE="xmem tp m"; COMP_POINT=9
        _xmem xmem m tp; echo "${COMPREPLY[@]}""#;
    let out = Command::new("bash")
        .args(["-c", script])
        .env("XMEM", xmem_bin())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines, ["watch", "media-driver"], "{text}");
    for shell in ["zsh", "fish"] {
        let out = Command::new(xmem_bin())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success() && out.stdout.len() > 1000, "{shell}");
    }
}

/// Polls `ready` until it gives a value, failing with `what` (and the last thing seen) after
/// 20 s: for conditions another process brings about, with no sleep standing in for it.
fn poll_until<T>(what: &str, mut ready: impl FnMut() -> Result<T, String>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match ready() {
            Ok(v) => return v,
            Err(seen) => assert!(std::time::Instant::now() < deadline, "{what}; last seen:\n{seen}"),
        }
        std::thread::yield_now();
    }
}

/// Stops `xmem produce` or `consume` as Ctrl-C would; they leave nothing behind.
fn stop(p: &mut PeerProcess) {
    p.signal(rustix::process::Signal::TERM);
    assert!(p.wait().success());
}

/// A consumer process of `name` that stays until stopped, once the stream lists it.
fn subscriber(dir: &Dir, name: &str) -> PeerProcess {
    let mut cmd = Command::new(xmem_bin());
    cmd.args(["consume", name]).env("XMEM_SHM_DIR", &dir.path);
    let c = PeerProcess::from_command(cmd);
    poll_until("the consumer never subscribed", || {
        let json: serde_json::Value =
            serde_json::from_str(&dir.ok(&["inspect", name, "--format", "json"])).unwrap();
        match json["subscribers"].as_array() {
            Some(s) if !s.is_empty() => Ok(()),
            _ => Err(json.to_string()),
        }
    });
    c
}

#[test]
fn stat_in_prometheus_format_parses_and_counts_a_running_stream() {
    let scope = ShmScope::new("clistat");
    let dir = Dir::new(&scope);
    let mut p = producer(&dir, "cam");
    let mut c = subscriber(&dir, "cam");
    let text = dir.ok(&["stat", "--format", "prometheus"]);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .unwrap_or_else(|e| panic!("not Prometheus's text format: {e}\n{text}"));
    let value = |metric: &str, label: (&str, &str)| -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && s.labels.get(label.0) == Some(label.1))
            .unwrap_or_else(|| panic!("no {metric}{{{}={}}} in\n{text}", label.0, label.1));
        match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
            ref other => panic!("{metric}: {other:?}"),
        }
    };
    assert!(value("xmem_stream_published_frames_total", ("stream", "cam")) >= 1.0);
    assert_eq!(value("xmem_stream_subscribers", ("stream", "cam")), 1.0);
    assert_eq!(value("xmem_stream_publisher_alive", ("stream", "cam")), 1.0);
    assert_eq!(value("xmem_pool_processes", ("pool", "cam.pool")), 2.0);
    let pid = c.pid.to_string();
    assert!(scrape.samples.iter().any(|s| {
        s.metric == "xmem_stream_subscriber_received_frames_total"
            && s.labels.get("pid") == Some(pid.as_str())
    }));
    // Every metric has its HELP and TYPE, and counters end in _total.
    for name in scrape.samples.iter().map(|s| s.metric.as_str()) {
        assert!(scrape.docs.contains_key(name), "{name} has no HELP");
    }
    for line in text
        .lines()
        .filter(|l| l.starts_with("# TYPE ") && l.ends_with(" counter"))
    {
        assert!(line.split(' ').nth(2).unwrap().ends_with("_total"), "{line}");
    }
    // JSON says the same.
    let json: serde_json::Value = serde_json::from_str(&dir.ok(&["stat", "--format", "json"])).unwrap();
    assert_eq!(json["streams"][0]["name"], "cam");
    assert_eq!(json["streams"][0]["subscribers"][0]["pid"], c.pid);
    stop(&mut c);
    stop(&mut p);
}

#[test]
fn top_draws_a_running_stream_live_in_a_terminal_and_quits_on_q() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: tmux is not installed, and `xmem top` needs a terminal to draw on");
        return;
    }
    let scope = ShmScope::new("clitop");
    let dir = Dir::new(&scope);
    let mut p = producer(&dir, "cam");
    let mut c = subscriber(&dir, "cam");
    // A tmux server of the test's own, a 150×30 terminal; after top quits, the shell prints
    // its exit status on the screen top gave back.
    let socket = scope.name("tmux");
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-L")
            .arg(&socket)
            .args(args)
            .output()
            .unwrap()
    };
    let screen = || String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", "top"]).stdout).into_owned();
    let command = format!(
        "XMEM_SHM_DIR='{}' '{}' top --interval 100ms; echo top-exited-$?; read _",
        dir.path.display(),
        xmem_bin().display()
    );
    let started = tmux(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "150",
        "-y",
        "30",
        &command,
    ]);
    assert!(
        started.status.success(),
        "{}",
        String::from_utf8_lossy(&started.stderr)
    );
    // Redrawn in place: the stream's row shows a rate once two samples are taken.
    let view = poll_until("top never showed the stream's rate", || {
        let text = screen();
        let rate = text
            .lines()
            .find(|l| l.starts_with("cam "))
            .and_then(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok());
        match rate {
            Some(r) if r > 0 && text.contains("RATE/S") => Ok(text),
            _ => Err(text),
        }
    });
    assert!(view.starts_with("xmem top  "), "{view}");
    assert!(view.contains("1 pools, 1 streams, 0 segments"), "{view}");
    let pool = view
        .lines()
        .find(|l| l.starts_with("cam.pool "))
        .expect("the stream's pool");
    assert_eq!(pool.split_whitespace().nth(3), Some("2"), "two holders: {pool}");
    tmux(&["send-keys", "-t", "top", "q"]);
    let after = poll_until("top did not quit on q", || {
        let text = screen();
        if text.contains("top-exited-") {
            Ok(text)
        } else {
            Err(text)
        }
    });
    assert!(after.contains("top-exited-0"), "{after}");
    assert!(!after.contains("RATE/S"), "the screen is given back: {after}");
    tmux(&["kill-server"]);
    stop(&mut c);
    stop(&mut p);
}

#[test]
fn top_refuses_a_pipe_and_names_stat_instead() {
    let scope = ShmScope::new("clitoppipe");
    let dir = Dir::new(&scope);
    let err = dir.fails(&["top"]);
    assert!(err.contains("xmem stat"), "{err}");
}
