//! A hostile peer: a process with write access scribbles random bytes into live objects while
//! their users run. The victims (xmem's own commands, and peers that count every error the
//! library returns instead of unwrapping it) must never die of a signal (SIGSEGV, SIGBUS) or a
//! panic, and must not hang: each ends, when told to, within 20 s, having at most reported
//! errors. Afterwards `xmem clean --damaged` and `xmem clean` remove whatever is left.
//!
//! This test process is the hostile peer. `XMEM_HOSTILE_WRITES` (default 10,000 per object
//! kind) sets how many writes; `XMEM_TEST_SEED` the seed.

use std::os::unix::fs::FileExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xmem_tests::{Rng, ShmScope};

const PEER: &str = env!("CARGO_BIN_EXE_xmem-test-peer");

fn writes() -> u64 {
    std::env::var("XMEM_HOSTILE_WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// The test's own shared-memory directory, empty at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(scope: &ShmScope) -> Dir {
        let path = PathBuf::from("/dev/shm").join(scope.name("dir"));
        std::fs::create_dir(&path).unwrap();
        Dir(path)
    }

    fn command(&self, bin: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.args(args).env("XMEM_SHM_DIR", &self.0);
        c
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A victim process; its output goes to files (a pipe nobody reads could stall it).
struct Victim {
    what: String,
    child: Child,
    out: PathBuf,
    err: PathBuf,
}

impl Victim {
    fn start(dir: &Dir, what: &str, mut cmd: Command) -> Victim {
        let out = dir.0.with_extension(format!("{}.out", what.replace(' ', "-")));
        let err = out.with_extension("err");
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        Victim {
            what: what.into(),
            child: cmd.spawn().unwrap(),
            out,
            err,
        }
    }

    /// Waits until its stdout has a line starting with `word` (a victim that could not make or
    /// open its object exits instead: a setup error, not a survivor).
    fn wait_for(&mut self, word: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&self.out).unwrap_or_default();
            if text.lines().any(|l| l.starts_with(word)) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "{} exited ({status}) before `{word}`: {text} {}",
                    self.what,
                    self.stderr()
                );
            }
            assert!(Instant::now() < deadline, "{} never said `{word}`", self.what);
            std::thread::yield_now();
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Sends SIGTERM (unless it already exited) and judges how it ended.
    fn stop(mut self) -> String {
        self.judge()
    }

    fn judge(&mut self) -> String {
        if self.child.try_wait().unwrap().is_none() {
            let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} hung: not ended 20 s after SIGTERM; stderr: {}",
                    self.what,
                    self.stderr()
                );
            }
            std::thread::yield_now();
        };
        let err = self.stderr();
        let out = std::fs::read_to_string(&self.out).unwrap_or_default();
        let _ = std::fs::remove_file(&self.out);
        let _ = std::fs::remove_file(&self.err);
        assert!(
            status.signal().is_none(),
            "{} died of signal {:?}; stderr: {err}",
            self.what,
            status.signal()
        );
        assert!(!err.contains("panicked"), "{} panicked: {err}", self.what);
        // 0: it worked or stopped; 1: it reported an error and exited (xmem's commands).
        assert!(
            matches!(status.code(), Some(0 | 1)),
            "{} exited {status}: {err}",
            self.what
        );
        format!(
            "{}: {} {}",
            self.what,
            out.lines().last().unwrap_or(""),
            err.lines().last().unwrap_or("")
        )
    }
}

impl Drop for Victim {
    /// A failed assertion must not leave victims running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Writes 1 to 8 random bytes at a random offset of one of `files`, `n` times: mostly in the
/// first 4 KiB (headers, process tables, queues, records), sometimes anywhere. Spread over
/// about three seconds, so that the victims run between writes.
fn scribble(rng: &mut Rng, files: &[PathBuf], n: u64) -> u64 {
    let opened: Vec<(std::fs::File, u64)> = files
        .iter()
        .map(|p| {
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            let len = f.metadata().unwrap().len();
            (f, len)
        })
        .collect();
    let pace = Duration::from_secs(3).div_f64(n as f64);
    let start = Instant::now();
    let mut done = 0;
    for i in 0..n {
        let (f, len) = &opened[rng.below(opened.len() as u64) as usize];
        let span = if rng.below(4) == 0 { *len } else { (*len).min(4096) };
        let at = rng.below(span.max(1));
        let bytes: Vec<u8> = (0..1 + rng.below(8)).map(|_| rng.next_u64() as u8).collect();
        if f.write_all_at(&bytes, at).is_ok() {
            done += 1;
        }
        // Pacing, not synchronisation: the victims need no signal from here.
        if let Some(wait) = (pace * (i as u32 + 1)).checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    done
}

fn xmem_bin() -> PathBuf {
    xmem_tests::xmem_cli(PEER)
}

/// Removes what the scribbling broke and what the victims left, as a user would.
fn clean_up(dir: &Dir) {
    for args in [&["clean", "--damaged"][..], &["clean"][..]] {
        let out = dir.command(&xmem_bin(), args).output().unwrap();
        assert!(
            out.status.success(),
            "xmem {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let left: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        left.is_empty(),
        "left after xmem clean --damaged and clean: {left:?}"
    );
}

#[test]
fn a_hostile_peer_scribbling_into_a_live_stream_and_its_pool_crashes_no_one() {
    let scope = ShmScope::new("hoststream");
    let dir = Dir::new(&scope);
    let mut rng = Rng::from_env("hostile-stream");
    let x = xmem_bin();
    let mut producer = Victim::start(
        &dir,
        "xmem produce",
        dir.command(&x, &["produce", "cam", "--shape", "4096", "--fps", "2000"]),
    );
    producer.wait_for("ready");
    let consumers: Vec<Victim> = (0..2)
        .map(|i| {
            Victim::start(
                &dir,
                &format!("xmem consume {i}"),
                dir.command(&x, &["consume", "cam"]),
            )
        })
        .collect();
    let files = [dir.0.join("xmem.cam"), dir.0.join("xmem.cam.pool")];
    let n = scribble(&mut rng, &files, writes());
    let mut report = vec![format!("{n} writes into {files:?}")];
    report.push(producer.stop());
    report.extend(consumers.into_iter().map(Victim::stop));
    eprintln!("{}", report.join("\n"));
    clean_up(&dir);
}

#[test]
fn a_hostile_peer_scribbling_into_a_live_pool_crashes_no_one() {
    let scope = ShmScope::new("hostpool");
    let dir = Dir::new(&scope);
    let mut rng = Rng::from_env("hostile-pool");
    let peer = PathBuf::from(PEER);
    let mut creator = Victim::start(
        &dir,
        "pool creator",
        dir.command(&peer, &["victim-pool", "frames", "create", "60"]),
    );
    creator.wait_for("ready");
    let users: Vec<Victim> = (0..2)
        .map(|i| {
            let mut v = Victim::start(
                &dir,
                &format!("pool user {i}"),
                dir.command(&peer, &["victim-pool", "frames", "open", "60"]),
            );
            v.wait_for("ready");
            v
        })
        .collect();
    let files = [dir.0.join("xmem.frames")];
    let n = scribble(&mut rng, &files, writes());
    let mut report = vec![format!("{n} writes into {files:?}")];
    report.push(creator.stop());
    report.extend(users.into_iter().map(Victim::stop));
    eprintln!("{}", report.join("\n"));
    clean_up(&dir);
}

#[test]
fn a_hostile_peer_scribbling_into_a_live_segment_crashes_no_one() {
    let scope = ShmScope::new("hostseg");
    let dir = Dir::new(&scope);
    let mut rng = Rng::from_env("hostile-segment");
    let peer = PathBuf::from(PEER);
    let mut writer = Victim::start(
        &dir,
        "segment writer",
        dir.command(&peer, &["victim-segwriter", "pose", "60"]),
    );
    writer.wait_for("ready");
    let readers: Vec<Victim> = (0..2)
        .map(|i| {
            let mut v = Victim::start(
                &dir,
                &format!("segment reader {i}"),
                dir.command(&peer, &["victim-segreader", "pose", "60"]),
            );
            v.wait_for("ready");
            v
        })
        .collect();
    let files = [dir.0.join("xmem.pose")];
    let n = scribble(&mut rng, &files, writes());
    let mut report = vec![format!("{n} writes into {files:?}")];
    report.push(writer.stop());
    report.extend(readers.into_iter().map(Victim::stop));
    eprintln!("{}", report.join("\n"));
    clean_up(&dir);
}

/// Every file under `dir` named `header.ring` or `*.pool`: a tensor-pool stream's regions.
fn tensor_pool_regions(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.file_name().is_some_and(|n| n == "header.ring")
                || p.extension().is_some_and(|x| x == "pool")
            {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_hostile_peer_scribbling_into_live_tensor_pool_regions_crashes_no_one() {
    let scope = ShmScope::new("hosttp");
    let dir = Dir::new(&scope);
    let mut rng = Rng::from_env("hostile-tensorpool");
    let x = xmem_bin();
    let aeron = dir.0.join("aeron");
    let base = dir.0.join("tp");
    let (aeron_s, base_s) = (aeron.to_str().unwrap(), base.to_str().unwrap());
    let mut media = Victim::start(
        &dir,
        "media driver",
        dir.command(&x, &["tp", "media-driver", "--aeron-dir", aeron_s]),
    );
    media.wait_for("media driver running");
    let tp = |sub: &str, extra: &[&str]| {
        let mut args = vec![
            "tp",
            sub,
            "--aeron-dir",
            aeron_s,
            "--driver",
            "external",
            "--base",
            base_s,
            "--stream",
            "10000",
        ];
        args.extend_from_slice(extra);
        dir.command(&x, &args)
    };
    let producer = Victim::start(
        &dir,
        "xmem tp produce",
        tp("produce", &["--shape", "64x64x3", "--fps", "500"]),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let regions = loop {
        let r = tensor_pool_regions(&base);
        if r.len() >= 2 {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "the producer made no regions: {}",
            producer.stderr()
        );
        std::thread::yield_now();
    };
    let consumers: Vec<Victim> = (0..2)
        .map(|i| {
            Victim::start(
                &dir,
                &format!("xmem tp consume {i}"),
                tp("consume", &["--duration", "60s"]),
            )
        })
        .collect();
    let n = scribble(&mut rng, &regions, writes());
    let mut report = vec![format!("{n} writes into {regions:?}")];
    report.extend(consumers.into_iter().map(Victim::stop));
    report.push(producer.stop());
    report.push(media.stop());
    eprintln!("{}", report.join("\n"));
    let left: Vec<_> = tensor_pool_regions(&base);
    assert!(left.is_empty(), "the producer left its regions: {left:?}");
}
