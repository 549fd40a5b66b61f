//! A media driver of the test's own (embedded in the test process), a tensor-pool driver in a
//! process of its own (the `xmem-tp-driver` binary) on a configuration written for the test,
//! and a base directory that must be empty when the test ends.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use xmem_aeron::{Client, ClientOptions, DriverOptions, MediaDriver};
use xmem_tp_control::Endpoint;
use xmem_tp_driver::{DriverClient, DriverClientOptions};

pub(crate) const DRIVER_BIN: &str = env!("CARGO_BIN_EXE_xmem-tp-driver");
pub(crate) const PEER_BIN: &str = env!("CARGO_BIN_EXE_tp-lease-peer");

/// The configuration most tests use: tensor_pool_c's integration example's shape, with a
/// stream 10000 of a small profile, dynamic streams 20000-29999, fast keepalives.
pub(crate) fn config(base: &Path, extra_policies: &str) -> String {
    format!(
        r#"
[driver]
instance_id = "driver-test"
control_channel = "aeron:ipc?term-length=4m"
control_stream_id = 1000
announce_channel = "aeron:ipc?term-length=4m"
announce_stream_id = 1000
qos_channel = "aeron:ipc?term-length=4m"
qos_stream_id = 1200
stream_id_range = "20000-29999"
descriptor_stream_id_range = "31000-31999"
control_stream_id_range = "32000-32999"

[shm]
base_dir = "{base}"
namespace = "test"
permissions_mode = "660"
allowed_base_dirs = ["{base}"]

[policies]
allow_dynamic_streams = true
default_profile = "camera"
announce_period_ms = 200
lease_keepalive_interval_ms = 200
lease_expiry_grace_intervals = 3
node_id_reuse_cooldown_ms = 300
{extra_policies}

[profiles.camera]
header_nslots = 16
payload_pools = [ {{ pool_id = 1, stride_bytes = 65536 }} ]

[profiles.empty]
header_nslots = 16
payload_pools = []

[streams.cam1]
stream_id = 10000
profile = "camera"

[streams.nopools]
stream_id = 10002
profile = "empty"
"#,
        base = base.display()
    )
}

pub(crate) struct Rig {
    pub client: Client,
    media: Option<MediaDriver>,
    pub aeron_dir: PathBuf,
    pub base: PathBuf,
    pub config_path: PathBuf,
    pub driver: Option<DriverProcess>,
    env: Vec<(String, String)>,
}

pub(crate) struct DriverProcess {
    pub child: Child,
    pub stdout: BufReader<ChildStdout>,
}

impl Rig {
    /// A media driver, a base directory, and a tensor-pool driver on `config(base, extra)`.
    pub(crate) fn new(extra_policies: &str) -> Rig {
        Rig::with(extra_policies, "")
    }

    /// As [`Rig::new`], with more sections after the test config's.
    pub(crate) fn with(extra_policies: &str, extra_sections: &str) -> Rig {
        Rig::with_env(extra_policies, extra_sections, &[])
    }

    /// As [`Rig::with`], the driver started with these environment overrides.
    pub(crate) fn with_env(extra_policies: &str, extra_sections: &str, env: &[(&str, &str)]) -> Rig {
        let mut rig = Rig::bare();
        rig.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let text = config(&rig.base, extra_policies) + extra_sections;
        std::fs::write(&rig.config_path, text).unwrap();
        rig.start_driver();
        rig
    }

    /// The media driver and directories only; the config file is the caller's to write.
    pub(crate) fn bare() -> Rig {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}-{n}", std::process::id());
        let aeron_dir = PathBuf::from(format!("/dev/shm/xmem-tpd-aeron-{tag}"));
        let base = PathBuf::from(format!("/dev/shm/xmem-tpd-base-{tag}"));
        std::fs::create_dir_all(&base).unwrap();
        let media = MediaDriver::launch(&DriverOptions {
            dir: Some(aeron_dir.clone()),
            ..DriverOptions::default()
        })
        .unwrap();
        let client = Client::connect(&ClientOptions {
            dir: Some(aeron_dir.clone()),
            ..ClientOptions::default()
        })
        .unwrap();
        Rig {
            client,
            media: Some(media),
            config_path: std::env::temp_dir().join(format!("xmem-tpd-{tag}.toml")),
            aeron_dir,
            base,
            driver: None,
            env: Vec::new(),
        }
    }

    /// Starts the driver process and waits for its `ready` line.
    pub(crate) fn start_driver(&mut self) {
        let mut child = Command::new(DRIVER_BIN)
            .arg(&self.config_path)
            .env("DRIVER_AERON_DIR", &self.aeron_dir)
            .env("XMEM_LOG", "warn")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the driver did not start");
        self.driver = Some(DriverProcess { child, stdout });
    }

    /// SIGTERM, then waits: the driver's graceful shutdown.
    pub(crate) fn stop_driver(&mut self) -> std::process::ExitStatus {
        let mut d = self.driver.take().expect("a driver runs");
        signal(&d.child, libc_sigterm());
        d.child.wait().unwrap()
    }

    /// SIGKILL: nothing of the driver's cleanup runs.
    pub(crate) fn kill_driver(&mut self) {
        let mut d = self.driver.take().expect("a driver runs");
        d.child.kill().unwrap();
        d.child.wait().unwrap();
    }

    /// A driver client on the test config's streams.
    pub(crate) fn driver_client(&self) -> DriverClient {
        DriverClient::new(&self.client, self.client_options()).unwrap()
    }

    pub(crate) fn client_options(&self) -> DriverClientOptions {
        DriverClientOptions {
            control: Endpoint::tp(1000),
            announce: Endpoint::tp(1000),
            keepalive_interval: Duration::from_millis(200),
            announce_period: Duration::from_millis(200),
            attach_timeout: Duration::from_secs(5),
            ..DriverClientOptions::default()
        }
    }

    /// A peer process holding a lease (see `tp-lease-peer`).
    pub(crate) fn peer(&self, stream: u32, role: &str, extra: &[&str]) -> Peer {
        let mut child = Command::new(PEER_BIN)
            .arg(&self.aeron_dir)
            .args(["1000", &stream.to_string(), role, "--keepalive-ms", "200"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Peer { child, stdout }
    }

    /// Every epoch directory of `stream` under the test namespace.
    pub(crate) fn epochs_on_disk(&self, stream: u32) -> Vec<u64> {
        let dir = self.stream_dir(stream);
        let mut v: Vec<u64> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        v.sort();
        v
    }

    pub(crate) fn stream_dir(&self, stream: u32) -> PathBuf {
        xmem_tensorpool::paths::Layout::new(&self.base, "test")
            .unwrap()
            .epoch_dir(stream, 0)
            .parent()
            .unwrap()
            .to_path_buf()
    }

    /// Files left under the base directory.
    pub(crate) fn leftovers(&self) -> Vec<PathBuf> {
        fn walk(d: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                }
                out.push(p);
            }
        }
        let mut v = Vec::new();
        walk(&self.base, &mut v);
        v
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(mut d) = self.driver.take() {
            signal(&d.child, libc_sigterm());
            let _ = d.child.wait();
        }
        let left = self.leftovers();
        let _ = std::fs::remove_dir_all(&self.base);
        let _ = std::fs::remove_file(&self.config_path);
        drop(self.media.take());
        let _ = std::fs::remove_dir_all(&self.aeron_dir);
        if !std::thread::panicking() {
            assert!(
                left.is_empty(),
                "left in /dev/shm after the driver's clean shutdown: {left:?}"
            );
            assert!(!self.aeron_dir.exists(), "the Aeron directory was left");
        }
    }
}

pub(crate) struct Peer {
    pub child: Child,
    pub stdout: BufReader<ChildStdout>,
}

impl Peer {
    /// The next line that starts with `prefix` (lines before it are skipped), within `within`.
    pub(crate) fn expect(&mut self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            assert!(
                Instant::now() < deadline,
                "no {prefix:?} line from the peer within {within:?}"
            );
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).unwrap();
            assert!(n > 0, "the peer ended before printing {prefix:?}");
            if line.starts_with(prefix) {
                return line.trim().to_string();
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of `key=` in a peer's line.
pub(crate) fn field(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
        .parse()
        .unwrap()
}

fn libc_sigterm() -> rustix::process::Signal {
    rustix::process::Signal::TERM
}

fn signal(child: &Child, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).expect("a child's pid");
    let _ = rustix::process::kill_process(pid, sig);
}

/// Polls `f` until it returns `Some`, for at most `within`.
pub(crate) fn eventually<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(2));
    }
}
