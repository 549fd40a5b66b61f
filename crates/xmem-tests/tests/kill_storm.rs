//! A kill storm across a mixed pipeline: a stream's publisher and two subscribers, two processes
//! churning references in a pool, a segment's writer and a reader, a media driver, a
//! tensor-pool producer and consumer. SIGKILLs land on them at random moments; each killed
//! process is started again. After every kill the survivors keep working; a process that ends
//! by itself (a subscriber whose publisher died, a producer whose media driver died) must end
//! with a reason, never a panic or a signal, and must never have accepted a damaged frame. After
//! the storm every reference of the pool is returned exactly, and `xmem clean` leaves the
//! shared-memory directory empty, the tensor-pool regions and the Aeron directory included.
//!
//! `XMEM_STORM_KILLS` (default 200) sets the number of kills; `XMEM_TEST_SEED` the seed.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use xmem_core::BufferPool;
use xmem_tests::{token_hex, Rng, ShmScope};

const PEER: &str = env!("CARGO_BIN_EXE_xmem-test-peer");
const BUFFERS: u32 = 8;

fn kills() -> u64 {
    std::env::var("XMEM_STORM_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// One process of the pipeline, started again whenever it ends.
struct Role {
    name: String,
    args: Vec<String>,
    bin: PathBuf,
    /// The stdout line that says it is up, if it prints one.
    ready: Option<&'static str>,
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
    kills: u64,
    ends: u64,
    /// A test peer that runs until killed: SIGTERM ends it by default action.
    dies_of_sigterm: bool,
}

impl Role {
    fn new(dir: &Path, name: &str, bin: &Path, args: &[&str], ready: Option<&'static str>) -> Role {
        let out = dir.with_extension(format!("{}.out", name.replace(' ', "-")));
        Role {
            name: name.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            bin: bin.into(),
            ready,
            child: None,
            err: out.with_extension("err"),
            out,
            kills: 0,
            ends: 0,
            dies_of_sigterm: false,
        }
    }

    fn dies_of_sigterm(mut self) -> Role {
        self.dies_of_sigterm = true;
        self
    }

    /// Starts it (its output files truncated) and waits until it says it is up, or ends.
    fn start(&mut self, shm: &Path) {
        let mut cmd = Command::new(&self.bin);
        cmd.args(&self.args)
            .env("XMEM_SHM_DIR", shm)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&self.out).unwrap())
            .stderr(std::fs::File::create(&self.err).unwrap());
        self.child = Some(cmd.spawn().unwrap());
        let Some(word) = self.ready else { return };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::fs::read_to_string(&self.out)
                .unwrap_or_default()
                .lines()
                .any(|l| l.starts_with(word))
            {
                return;
            }
            if self.ended() {
                return; // a dependency was down; it is started again later
            }
            assert!(Instant::now() < deadline, "{} never said `{word}`", self.name);
            std::thread::yield_now();
        }
    }

    fn ended(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().unwrap().is_some(),
            None => true,
        }
    }

    /// SIGKILLs it, at whatever it was doing.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // it may have ended by itself a moment before
            let status = c.wait().unwrap();
            if status.signal() == Some(9) {
                self.kills += 1;
            } else {
                self.judge(status);
            }
        }
    }

    /// A process that ended by itself: with a reason (0 or 1), never a panic or a signal, and
    /// having accepted no damaged frame.
    fn judge(&mut self, status: std::process::ExitStatus) {
        self.ends += 1;
        let err = std::fs::read_to_string(&self.err).unwrap_or_default();
        let out = std::fs::read_to_string(&self.out).unwrap_or_default();
        assert!(
            status.signal().is_none(),
            "{} died of signal {:?}: {err}",
            self.name,
            status.signal()
        );
        assert!(!err.contains("panicked"), "{} panicked: {err}", self.name);
        assert!(
            matches!(status.code(), Some(0 | 1)),
            "{} exited {status}: {err}",
            self.name
        );
        for line in out.lines().chain(err.lines()) {
            if line.contains(" damaged") {
                assert!(line.contains(" 0 damaged"), "{}: {line}", self.name);
            }
            if line.contains("wrong bytes") {
                assert!(line.contains(" 0 with wrong bytes"), "{}: {line}", self.name);
            }
        }
    }

    /// Starts it again if it ended by itself (judging how), or was killed.
    fn keep_up(&mut self, shm: &Path) {
        if let Some(c) = &mut self.child {
            match c.try_wait().unwrap() {
                None => return,
                Some(status) => {
                    self.child = None;
                    self.judge(status);
                }
            }
        }
        self.start(shm);
    }

    /// SIGTERM, and how it ended.
    fn stop(&mut self) {
        let Some(mut c) = self.child.take() else { return };
        if c.try_wait().unwrap().is_none() {
            let pid = rustix::process::Pid::from_raw(c.id() as i32).unwrap();
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = c.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("{} did not end 20 s after SIGTERM", self.name);
            }
            std::thread::yield_now();
        };
        if self.dies_of_sigterm && status.signal() == Some(15) {
            return;
        }
        self.judge(status);
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.out);
        let _ = std::fs::remove_file(&self.err);
    }
}

/// The test's shared-memory directory, removed however the test ends.
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_storm_of_sigkills_across_every_kind_of_process_loses_and_leaves_nothing() {
    let scope = ShmScope::new("storm");
    let guard = DirGuard(PathBuf::from("/dev/shm").join(scope.name("dir")));
    let shm = guard.0.clone();
    std::fs::create_dir(&shm).unwrap();
    let mut rng = Rng::from_env("kill-storm");
    let x = xmem_tests::xmem_cli(PEER);
    let peer = PathBuf::from(PEER);
    let aeron = shm.join("aeron");
    let base = shm.join("tp");
    let (a, b) = (aeron.to_str().unwrap(), base.to_str().unwrap());
    let tp = |sub: &'static str| -> Vec<&str> {
        vec![
            "tp",
            sub,
            "--aeron-dir",
            a,
            "--driver",
            "external",
            "--base",
            b,
            "--stream",
            "10000",
        ]
    };
    // A tensor-pool driver (its media driver embedded, in an Aeron directory of its own) that
    // owns stream 10007's memory, and a producer and a consumer attached through it.
    let aeron2 = shm.join("aeron-driver");
    let base2 = shm.join("tp-driver");
    std::fs::create_dir(&base2).unwrap();
    let (a2, b2) = (aeron2.to_str().unwrap(), base2.to_str().unwrap());
    let config_path = shm.join("driver.toml");
    std::fs::write(
        &config_path,
        format!(
            "[shm]\nbase_dir = \"{b2}\"\nallowed_base_dirs = [\"{b2}\"]\n\
             [policies]\nannounce_period_ms = 200\nlease_keepalive_interval_ms = 200\n\
             [profiles.camera]\nheader_nslots = 8\npayload_pools = [{{ pool_id = 1, stride_bytes = 16384 }}]\n\
             [streams.cam]\nstream_id = 10007\nprofile = \"camera\"\n"
        ),
    )
    .unwrap();
    let config = config_path.to_str().unwrap();
    let attached = |sub: &'static str| -> Vec<&str> {
        vec![
            "tp",
            sub,
            "--attach",
            "--aeron-dir",
            a2,
            "--driver",
            "external",
            "--base",
            b2,
            "--stream",
            "10007",
        ]
    };

    // The pool the churners share, held by this process (a survivor throughout).
    let pool = BufferPool::builder("shared")
        .buffers(BUFFERS)
        .buffer_size(512)
        .directory(&shm)
        .create()
        .unwrap();
    let shared = pool.try_acquire().unwrap().freeze();
    let token = token_hex(shared.token());

    let mut roles = vec![
        Role::new(
            &shm,
            "media driver",
            &x,
            &["tp", "media-driver", "--aeron-dir", a],
            Some("media driver running"),
        ),
        Role::new(
            &shm,
            "stream publisher",
            &x,
            &["produce", "cam", "--shape", "4096", "--fps", "1000"],
            Some("ready"),
        ),
        Role::new(&shm, "stream subscriber 0", &x, &["consume", "cam"], None),
        Role::new(&shm, "stream subscriber 1", &x, &["consume", "cam"], None),
        Role::new(
            &shm,
            "pool user 0",
            &peer,
            &["churn", "shared", "1", &token],
            Some("ready"),
        )
        .dies_of_sigterm(),
        Role::new(
            &shm,
            "pool user 1",
            &peer,
            &["churn", "shared", "2", &token],
            Some("ready"),
        )
        .dies_of_sigterm(),
        Role::new(
            &shm,
            "segment writer",
            &peer,
            &["victim-segwriter", "pose", "3600"],
            Some("ready"),
        ),
        Role::new(
            &shm,
            "segment reader",
            &peer,
            &["victim-segreader", "pose", "3600"],
            Some("ready"),
        ),
        Role::new(
            &shm,
            "tp producer",
            &x,
            &[tp("produce"), vec!["--shape", "64x64x3", "--fps", "500"]].concat(),
            None,
        ),
        Role::new(
            &shm,
            "tp consumer",
            &x,
            &[tp("consume"), vec!["--duration", "3600s"]].concat(),
            None,
        ),
        Role::new(
            &shm,
            "tp driver",
            &x,
            &["tp", "driver", "--config", config, "--aeron-dir", a2],
            Some("tensor-pool driver "),
        ),
        Role::new(
            &shm,
            "attached producer",
            &x,
            &[attached("produce"), vec!["--shape", "32x32x3", "--fps", "200"]].concat(),
            None,
        ),
        Role::new(
            &shm,
            "attached consumer",
            &x,
            &[attached("consume"), vec!["--duration", "3600s"]].concat(),
            None,
        ),
    ];
    for r in &mut roles {
        r.start(&shm);
    }
    let n = kills();
    for i in 0..n {
        let r = &mut roles[rng.below(13) as usize];
        r.kill();
        r.start(&shm);
        for r in &mut roles {
            r.keep_up(&shm);
        }
        // The kill lands at a random moment of the others' work.
        std::thread::sleep(Duration::from_micros(rng.below(20_000)));
        if i % 50 == 49 {
            // Survivors keep working: this process's pool still hands out buffers.
            pool.reclaim();
            drop(pool.acquire_timeout(Duration::from_secs(5)).unwrap());
        }
    }
    // Consumers first, so that they see their producers end; the media driver last.
    for i in [2, 3, 9, 12, 7, 4, 5, 1, 6, 8, 11, 10, 0] {
        roles[i].stop();
    }
    let report: Vec<String> = roles
        .iter()
        .map(|r| {
            format!(
                "{}: {} kills, {} ends without one (on its own, or at the stop)",
                r.name, r.kills, r.ends
            )
        })
        .collect();
    eprintln!("{n} kills\n{}", report.join("\n"));
    drop(roles);
    pool.reclaim();
    xmem_tests::assert_exact(&pool, &shared, BUFFERS, "after the storm");
    drop(shared);
    drop(pool);
    // What the killed left: dead processes' objects (`xmem clean`), killed tensor-pool
    // producers' epochs and a killed media driver's directory (`xmem tp clean`; every process
    // is gone, so no grace is needed).
    let tp_clean = ["tp", "clean", "--base", b, "--aeron-dir", a, "--grace", "0s"];
    let tp_clean_driver = ["tp", "clean", "--base", b2, "--aeron-dir", a2, "--grace", "0s"];
    for args in [&["clean"][..], &tp_clean[..], &tp_clean_driver[..]] {
        let out = Command::new(&x)
            .args(args)
            .env("XMEM_SHM_DIR", &shm)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "xmem {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("xmem {args:?}:\n{}", String::from_utf8_lossy(&out.stdout));
    }
    std::fs::remove_file(&config_path).unwrap();
    let mut left = Vec::new();
    let mut todo = vec![shm.clone()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                todo.push(e.path());
            } else {
                left.push(e.path());
            }
        }
    }
    assert!(left.is_empty(), "left after the storm and `xmem clean`: {left:?}");
    drop(guard);
}
