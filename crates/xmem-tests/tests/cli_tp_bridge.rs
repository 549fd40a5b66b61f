//! The Aeron UDP bridge between two hosts made on this machine: two network namespaces joined by
//! a veth pair (iproute2, as root), each with its own media driver and SHM base directory. A
//! producer on host A, `xmem tp bridge` A → B, a consumer on host B checking every byte of every
//! frame; then 5 % packet loss on the link (tc netem) and the link taken down and up. Where
//! namespaces cannot be made, the test says so and skips (the same frames cross two media
//! drivers over 127.0.0.1 in xmem-tp-bridge's own tests).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use xmem_tests::{PeerProcess, ShmScope};

const PEER: &str = env!("CARGO_BIN_EXE_xmem-test-peer");

fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).status().is_ok_and(|s| s.success())
}

/// Two namespaces and their veth pair, removed on drop.
struct Hosts {
    a: String,
    b: String,
    addr_b: String,
    veth_a: String,
}

impl Hosts {
    fn make() -> Result<Hosts, String> {
        static K: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = (std::process::id() % 1000) * 10 + K.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (a, b) = (format!("xma{n}"), format!("xmb{n}"));
        let (va, vb) = (format!("xva{n}"), format!("xvb{n}"));
        let net = 1 + n % 250;
        let h = Hosts {
            a: a.clone(),
            b: b.clone(),
            addr_b: format!("10.201.{net}.2"),
            veth_a: va.clone(),
        };
        let steps: Vec<Vec<String>> = vec![
            vec!["netns".into(), "add".into(), a.clone()],
            vec!["netns".into(), "add".into(), b.clone()],
            vec![
                "link".into(),
                "add".into(),
                va.clone(),
                "netns".into(),
                a.clone(),
                "type".into(),
                "veth".into(),
                "peer".into(),
                "name".into(),
                vb.clone(),
                "netns".into(),
                b.clone(),
            ],
            vec![
                "-n".into(),
                a.clone(),
                "addr".into(),
                "add".into(),
                format!("10.201.{net}.1/24"),
                "dev".into(),
                va.clone(),
            ],
            vec![
                "-n".into(),
                b.clone(),
                "addr".into(),
                "add".into(),
                format!("10.201.{net}.2/24"),
                "dev".into(),
                vb.clone(),
            ],
            vec![
                "-n".into(),
                a.clone(),
                "link".into(),
                "set".into(),
                va.clone(),
                "up".into(),
            ],
            vec![
                "-n".into(),
                b.clone(),
                "link".into(),
                "set".into(),
                vb.clone(),
                "up".into(),
            ],
            vec![
                "-n".into(),
                a.clone(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
            vec![
                "-n".into(),
                b.clone(),
                "link".into(),
                "set".into(),
                "lo".into(),
                "up".into(),
            ],
        ];
        for s in steps {
            let args: Vec<&str> = s.iter().map(String::as_str).collect();
            if !ip(&args) {
                return Err(format!("`ip {}` failed", args.join(" ")));
            }
        }
        Ok(h)
    }

    /// `xmem ARGS` inside namespace `ns`, stderr with stdout.
    fn xmem(&self, ns: &str, args: &[&str]) -> PeerProcess {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(xmem_tests::xmem_cli(PEER))
            .args(args);
        PeerProcess::from_command_with_stderr(cmd)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        ip(&["netns", "del", &self.a]);
        ip(&["netns", "del", &self.b]);
    }
}

struct Dirs(Vec<PathBuf>);

impl Drop for Dirs {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

fn bridge_config(path: &Path, role: &str, base: &Path, addr_b: &str) {
    bridge_config_on(path, role, base, addr_b, 40456);
}

fn bridge_config_on(path: &Path, role: &str, base: &Path, addr_b: &str, port: u16) {
    std::fs::write(
        path,
        format!(
            "[bridge]\npayload_channel = \"aeron:udp?endpoint={addr_b}:{port}\"\npayload_stream_id = 3000\n\
             control_channel = \"aeron:udp?endpoint={addr_b}:{}\"\ncontrol_stream_id = 3001\n\
             mtu_bytes = 1408\nchunk_bytes = 1200\nintegrity = true\nassembly_timeout_ms = 2000\n\
             [local]\nannounce_period_ms = 200\nbase_dir = \"{}\"\nnamespace = \"bridged\"\n\
             [profiles.hd]\nheader_nslots = 8\npayload_pools = [{{ pool_id = 1, stride_bytes = 8388608 }}]\n\
             [profiles.small]\nheader_nslots = 8\npayload_pools = [{{ pool_id = 1, stride_bytes = 16384 }}]\n\
             [[mappings]]\nrole = \"{role}\"\nsource_stream_id = 10000\ndest_stream_id = 20000\nprofile = \"hd\"\n\
             [[mappings]]\nrole = \"{role}\"\nsource_stream_id = 10001\ndest_stream_id = 20001\nprofile = \"small\"\n",
            port + 1,
            base.display()
        ),
    )
    .unwrap();
}

fn sigterm(p: &PeerProcess) {
    p.signal(rustix::process::Signal::TERM);
}

/// Host A's producers (1080p on 10000, 64×64×3 on 10001), the bridge, host B's consumers of
/// 20000 and 20001 checking every byte; `loss` is the receiving media driver's Aeron loss
/// interceptor rate (tc netem is not in this kernel), `cut` takes the link down and up.
fn two_hosts(loss: Option<&str>, cut: bool) {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: network namespaces need root (xmem-tp-bridge's tests cross 127.0.0.1 instead)");
        return;
    }
    let hosts = match Hosts::make() {
        Ok(h) => h,
        Err(why) => {
            eprintln!("skipped: cannot make network namespaces here ({why}); xmem-tp-bridge's tests cross 127.0.0.1 instead");
            return;
        }
    };
    eprintln!(
        "ran: two network namespaces {} and {} joined by a veth pair",
        hosts.a, hosts.b
    );
    let scope = ShmScope::new("cli-tp-bridge");
    let name = |w: &str| PathBuf::from("/dev/shm").join(scope.name(w));
    let (aeron_a, aeron_b, base_a, base_b) =
        (name("aeron-a"), name("aeron-b"), name("base-a"), name("base-b"));
    let (conf_a, conf_b) = (
        std::env::temp_dir().join(format!("{}.toml", scope.name("bridge-a"))),
        std::env::temp_dir().join(format!("{}.toml", scope.name("bridge-b"))),
    );
    let _dirs = Dirs(vec![
        aeron_a.clone(),
        aeron_b.clone(),
        base_a.clone(),
        base_b.clone(),
        conf_a.clone(),
        conf_b.clone(),
    ]);
    std::fs::create_dir(&base_a).unwrap();
    std::fs::create_dir(&base_b).unwrap();
    bridge_config(&conf_a, "sender", &base_a, &hosts.addr_b);
    bridge_config(&conf_b, "receiver", &base_b, &hosts.addr_b);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let media = |ns: &str, dir: &Path, env: &[(&str, String)]| {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(xmem_tests::xmem_cli(PEER))
            .args(["tp", "media-driver", "--aeron-dir", &s(dir)]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut m = PeerProcess::from_command_with_stderr(cmd);
        m.line_where(Duration::from_secs(30), "saying it runs", |l| {
            l.starts_with("media driver running in")
        });
        m
    };
    let mut media_a = media(&hosts.a, &aeron_a, &[]);
    let lossy: Vec<(&str, String)> = loss
        .map(|rate| {
            vec![
                ("AERON_UDP_CHANNEL_INCOMING_INTERCEPTORS", "loss".to_string()),
                // Data frames (type 1: mask bit 1 << 1) lost at `rate` on arrival at host B.
                (
                    "AERON_UDP_CHANNEL_TRANSPORT_BINDINGS_LOSS_ARGS",
                    format!("rate={rate}|recv-msg-mask=0x2"),
                ),
            ]
        })
        .unwrap_or_default();
    let mut media_b = media(&hosts.b, &aeron_b, &lossy);
    let common = |dir: &Path| {
        vec![
            "--aeron-dir".to_string(),
            s(dir),
            "--driver".into(),
            "external".into(),
            "--announce-period".into(),
            "200ms".into(),
        ]
    };
    let mut receiver = hosts.xmem(
        &hosts.b,
        &[
            "tp",
            "bridge",
            "--config",
            &s(&conf_b),
            "--aeron-dir",
            &s(&aeron_b),
        ],
    );
    receiver.line_where(Duration::from_secs(30), "receiving", |l| {
        l.starts_with("receiving stream 20001")
    });
    let produce = |stream: &str, shape: &str, fps: &str| {
        let mut args = vec![
            "tp".to_string(),
            "produce".into(),
            "--base".into(),
            s(&base_a),
            "--stream".into(),
            stream.into(),
            "--shape".into(),
            shape.into(),
            "--fps".into(),
            fps.into(),
        ];
        args.extend(common(&aeron_a));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut p = hosts.xmem(&hosts.a, &args);
        p.line_where(Duration::from_secs(30), "producing", |l| {
            l.starts_with("producing stream")
        });
        p
    };
    let mut big = produce("10000", "1080x1920x3", "25");
    let mut small = produce("10001", "64x64x3", "200");
    let mut sender = hosts.xmem(
        &hosts.a,
        &[
            "tp",
            "bridge",
            "--config",
            &s(&conf_a),
            "--aeron-dir",
            &s(&aeron_a),
        ],
    );
    sender.line_where(Duration::from_secs(30), "sending", |l| {
        l.starts_with("sending stream 10001")
    });
    let consume = |stream: &str, count: &str| {
        let mut args = vec![
            "tp".to_string(),
            "consume".into(),
            "--base".into(),
            s(&base_b),
            "--stream".into(),
            stream.into(),
            "--count".into(),
            count.into(),
        ];
        args.extend(common(&aeron_b));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut c = hosts.xmem(&hosts.b, &args);
        let (out, _) = c.line_where(Duration::from_secs(90), "the total", |l| {
            l.starts_with("accepted ")
        });
        assert!(c.wait().success(), "{out}");
        out
    };
    // Host B's consumers check every byte (frame n is n % 256: the bridge keeps the numbers).
    // (`consume` stops after `count`; a frame or two of its last poll may be counted too.
    // Frames lost beyond Aeron's recovery, or lapped at the sender, are gaps: counted.)
    let accepted = |out: &str| -> u64 {
        out.split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    for (stream, count) in [("20000", 30), ("20001", 200)] {
        let out = consume(stream, &count.to_string());
        assert!(
            accepted(&out) >= count && out.ends_with("0 with wrong bytes"),
            "stream {stream}: {out}"
        );
    }
    if cut {
        assert!(ip(&["-n", &hosts.a, "link", "set", &hosts.veth_a, "down"]));
        std::thread::sleep(Duration::from_secs(1)); // the outage itself is what is tested
        assert!(ip(&["-n", &hosts.a, "link", "set", &hosts.veth_a, "up"]));
        let out = consume("20000", "20");
        assert!(
            out.starts_with("accepted 20 frames") && out.ends_with("0 with wrong bytes"),
            "after the cut: {out}"
        );
    }
    for p in [&sender, &big, &small, &receiver] {
        sigterm(p);
    }
    assert!(
        sender.wait().success()
            && big.wait().success()
            && small.wait().success()
            && receiver.wait().success()
    );
    sigterm(&media_a);
    sigterm(&media_b);
    assert!(media_a.wait().success() && media_b.wait().success());
    let left: Vec<_> = walk(&base_a).into_iter().chain(walk(&base_b)).collect();
    assert!(left.is_empty(), "nothing left in either SHM directory: {left:?}");
    assert!(!aeron_a.exists() && !aeron_b.exists());
}

#[test]
fn two_hosts_frames_cross_the_bridge_intact_and_resume_after_the_link_is_cut() {
    two_hosts(None, true);
}

#[test]
fn two_hosts_with_1_percent_loss_every_committed_frame_is_intact() {
    two_hosts(Some("0.01"), false);
}

#[test]
fn two_hosts_with_5_percent_loss_every_committed_frame_is_intact() {
    two_hosts(Some("0.05"), false);
}

/// Kills on one machine (two media drivers over 127.0.0.1; no root needed): the sender, the
/// receiver, host B's media driver and host A's SIGKILLed in turn; each restarted, frames flow again and
/// every one is checked; a restarted receiver removes the epoch its killed predecessor left, and
/// nothing is left in either SHM directory at the end.
#[test]
fn bridge_processes_killed_and_restarted_resume_and_leave_nothing() {
    let scope = ShmScope::new("cli-tp-bridge-kill");
    let name = |w: &str| PathBuf::from("/dev/shm").join(scope.name(w));
    let (aeron_a, aeron_b, base_a, base_b) =
        (name("aeron-a"), name("aeron-b"), name("base-a"), name("base-b"));
    let (conf_a, conf_b) = (
        std::env::temp_dir().join(format!("{}.toml", scope.name("bridge-a"))),
        std::env::temp_dir().join(format!("{}.toml", scope.name("bridge-b"))),
    );
    let _dirs = Dirs(vec![
        aeron_a.clone(),
        aeron_b.clone(),
        base_a.clone(),
        base_b.clone(),
        conf_a.clone(),
        conf_b.clone(),
    ]);
    std::fs::create_dir(&base_a).unwrap();
    std::fs::create_dir(&base_b).unwrap();
    let port = 46_000 + (std::process::id() % 1000) as u16 * 2;
    bridge_config_on(&conf_a, "sender", &base_a, "127.0.0.1", port);
    bridge_config_on(&conf_b, "receiver", &base_b, "127.0.0.1", port);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let xmem = |args: &[String]| {
        let mut cmd = Command::new(xmem_tests::xmem_cli(PEER));
        cmd.args(args);
        PeerProcess::from_command_with_stderr(cmd)
    };
    let media = |dir: &Path| {
        let mut m = xmem(&["tp".into(), "media-driver".into(), "--aeron-dir".into(), s(dir)]);
        m.line_where(Duration::from_secs(30), "saying it runs", |l| {
            l.starts_with("media driver running in")
        });
        m
    };
    let bridge = |conf: &Path, dir: &Path, expect: &'static str| {
        let mut b = xmem(&[
            "tp".into(),
            "bridge".into(),
            "--config".into(),
            s(conf),
            "--aeron-dir".into(),
            s(dir),
        ]);
        b.line_where(Duration::from_secs(30), expect, |l| l.starts_with(expect));
        b
    };
    let common = |dir: &Path| {
        vec![
            "--aeron-dir".to_string(),
            s(dir),
            "--driver".into(),
            "external".into(),
            "--announce-period".into(),
            "200ms".into(),
        ]
    };
    let consume = |count: u64| {
        let mut args = vec![
            "tp".to_string(),
            "consume".into(),
            "--base".into(),
            s(&base_b),
            "--stream".into(),
            "20001".into(),
            "--count".into(),
            count.to_string(),
        ];
        args.extend(common(&aeron_b));
        let mut c = xmem(&args);
        let (out, _) = c.line_where(Duration::from_secs(60), "the total", |l| {
            l.starts_with("accepted ")
        });
        assert!(c.wait().success(), "{out}");
        let n: u64 = out
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(n >= count && out.ends_with("0 with wrong bytes"), "{out}");
    };
    let mut media_a = media(&aeron_a);
    let mut media_b = media(&aeron_b);
    let mut receiver = bridge(&conf_b, &aeron_b, "receiving stream 20001");
    let mut producer_args = vec![
        "tp".to_string(),
        "produce".into(),
        "--base".into(),
        s(&base_a),
        "--stream".into(),
        "10001".into(),
        "--shape".into(),
        "64x64x3".into(),
        "--fps".into(),
        "200".into(),
    ];
    producer_args.extend(common(&aeron_a));
    let mut producer = xmem(&producer_args);
    producer.line_where(Duration::from_secs(30), "producing", |l| {
        l.starts_with("producing stream 10001")
    });
    let mut sender = bridge(&conf_a, &aeron_a, "sending stream 10001");
    consume(50);
    // The sender killed: nothing reaches B; restarted, frames flow again.
    sender.kill();
    let mut sender = bridge(&conf_a, &aeron_a, "sending stream 10001");
    consume(50);
    // The receiver killed: its epoch is left in B's SHM until the restarted one removes it.
    receiver.kill();
    let left_by_killed = walk(&base_b)
        .iter()
        .filter(|p| p.ends_with("header.ring"))
        .count();
    assert!(left_by_killed >= 1, "the killed receiver's regions");
    let mut receiver = bridge(&conf_b, &aeron_b, "receiving stream 20001");
    consume(50);
    let rings = walk(&base_b)
        .iter()
        .filter(|p| p.ends_with("header.ring"))
        .count();
    assert_eq!(
        rings, 2,
        "the new receiver's two streams only: the dead one's epochs were removed"
    );
    // Host B's media driver killed: the receiver says so and exits; both restarted, frames flow.
    media_b.kill();
    let status = receiver.wait();
    assert!(!status.success(), "the receiver reports the lost media driver");
    let mut media_b = media(&aeron_b);
    let mut receiver = bridge(&conf_b, &aeron_b, "receiving stream 20001");
    consume(50);
    // Host A's media driver killed: the sender and the producer say so in a line and exit; all
    // restarted, frames flow again (the producer's new epoch is forwarded and followed at B,
    // whose receiver kept running).
    media_a.kill();
    for p in [&mut sender, &mut producer] {
        let (line, _) = p.line_where(Duration::from_secs(30), "about the lost media driver", |l| {
            l.contains("lost the media driver")
        });
        assert!(!p.wait().success(), "{line}");
    }
    let mut media_a = media(&aeron_a);
    let mut producer = xmem(&producer_args);
    producer.line_where(Duration::from_secs(30), "producing", |l| {
        l.starts_with("producing stream 10001")
    });
    let mut sender = bridge(&conf_a, &aeron_a, "sending stream 10001");
    consume(50);
    for p in [&sender, &producer, &receiver] {
        sigterm(p);
    }
    assert!(sender.wait().success() && producer.wait().success() && receiver.wait().success());
    sigterm(&media_a);
    sigterm(&media_b);
    assert!(media_a.wait().success() && media_b.wait().success());
    let left: Vec<_> = walk(&base_a).into_iter().chain(walk(&base_b)).collect();
    assert!(left.is_empty(), "nothing left in either SHM directory: {left:?}");
}
