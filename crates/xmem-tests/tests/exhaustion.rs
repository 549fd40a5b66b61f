//! A shared-memory file system that is too small (Docker's 64 MB /dev/shm, here a 16 MiB tmpfs
//! of the test's own): every kind of object fails to be created with one error that says what
//! to do, leaves nothing half-made, and what was made before works to its last byte (no SIGBUS
//! on first touch: space is allocated when an object is made).

use std::path::PathBuf;
use std::process::Command;

use xmem_core::segment::SegmentWriter;
use xmem_core::stream::Publisher;
use xmem_core::{BufferPool, Error};

const PEER: &str = env!("CARGO_BIN_EXE_xmem-test-peer");
const MIB: u64 = 1 << 20;

/// A 16 MiB tmpfs mounted for the test, unmounted (and its directory removed) at the end.
struct SmallTmpfs(PathBuf);

impl SmallTmpfs {
    fn mount(tag: &str) -> Option<SmallTmpfs> {
        let dir = PathBuf::from(format!("/tmp/xmem-small-shm-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs"])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(SmallTmpfs(dir)),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                println!("skipped: cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {why}");
                let _ = std::fs::remove_dir(&dir);
                None
            }
        }
    }

    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn says_what_to_do(e: &Error, dir: &std::path::Path) {
    assert!(matches!(e, Error::NoSpace { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("--shm-size") && msg.contains(&dir.display().to_string()),
        "{msg}"
    );
    assert!(!e.is_retryable(), "space does not free itself");
}

#[test]
fn a_full_shm_directory_refuses_every_object_in_one_line_and_leaves_nothing_half_made() {
    let Some(fs) = SmallTmpfs::mount("full") else {
        return;
    };
    let dir = &fs.0;
    // Pools of 3 MiB until the 16 MiB are gone.
    let mut pools = Vec::new();
    let err = loop {
        let b = BufferPool::builder(&format!("p{}", pools.len()))
            .directory(dir)
            .buffers(3)
            .buffer_size(MIB);
        match b.create() {
            Ok(p) => pools.push(p),
            Err(e) => break e,
        }
        assert!(
            pools.len() < 16,
            "a 16 MiB tmpfs took {} pools of 3 MiB",
            pools.len()
        );
    };
    says_what_to_do(&err, dir);
    assert!(pools.len() >= 4, "only {} pools fitted", pools.len());
    let made: Vec<String> = (0..pools.len()).map(|i| format!("xmem.p{i}")).collect();
    assert_eq!(fs.files(), made, "a failed create left something behind");
    // What was made is usable to its last byte: no SIGBUS on first touch.
    for p in &pools {
        let mut held = Vec::new();
        while let Ok(mut b) = p.try_acquire() {
            b.bytes_mut().fill(0xA5);
            held.push(b);
        }
        assert_eq!(held.len(), 3);
    }

    // A stream (and its pool) and a segment fail the same way, and leave nothing.
    let stream = Publisher::builder("s")
        .directory(dir)
        .buffers(4)
        .buffer_size(MIB)
        .create();
    says_what_to_do(&stream.unwrap_err(), dir);
    let segment = SegmentWriter::builder("g").directory(dir).size(4 * MIB).create();
    says_what_to_do(&segment.unwrap_err(), dir);
    assert_eq!(fs.files(), made);

    // The command says it in one line, and exits 1.
    let out = Command::new(xmem_tests::xmem_cli(PEER))
        .args(["produce", "cam", "--count", "1", "--shape", "1024x1024x3"])
        .env("XMEM_SHM_DIR", dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("xmem: error: ") && stderr.contains("--shm-size"),
        "{stderr}"
    );
    assert_eq!(fs.files(), made);

    // Space freed, the same stream is made.
    drop(pools.pop());
    drop(pools.pop());
    let mut publisher = Publisher::builder("s")
        .directory(dir)
        .buffers(4)
        .buffer_size(MIB)
        .create()
        .unwrap();
    let mut frame = publisher.loan().unwrap();
    frame.bytes_mut().fill(1);
    publisher.publish(frame).unwrap();
    drop(publisher);
    drop(pools);
    assert_eq!(fs.files(), Vec::<String>::new());
}

#[test]
fn a_refused_mlock_fails_the_create_naming_the_limit_and_leaves_nothing() {
    // A segment whose pages are to be locked in RAM, made by a process whose locked-memory
    // limit is 0 (and, when this runs as root, as `nobody`: root's CAP_IPC_LOCK would lift the
    // limit). The create fails with what to raise; the same process then makes it unlocked.
    use std::os::unix::process::CommandExt;
    let scope = xmem_tests::ShmScope::new("mlock");
    let name = scope.name("locked");
    let mut cmd = Command::new(PEER);
    if rustix::process::geteuid().is_root() {
        cmd.uid(65534).gid(65534);
    }
    let cmd = xmem_tests::with_limit(cmd, rustix::process::Resource::Memlock, 0);
    let mut peer = xmem_tests::PeerProcess::from_command(cmd);
    let answer = peer.cmd(&format!("segcreate {name} 65536 locked"));
    assert!(
        answer.starts_with("err Placement ")
            && answer.contains("ulimit -l")
            && answer.contains("CAP_IPC_LOCK"),
        "{answer}"
    );
    assert!(scope.leftovers().is_empty(), "{:?}", scope.leftovers());
    peer.ok(&format!("segcreate {name} 65536"));
    assert_eq!(scope.leftovers().len(), 1);
    peer.send("exit");
    assert!(peer.wait().success());
}
