//! Discovery: listing with liveness, change events, orphan cleanup with a grace period. Each
//! test works in its own directory (inside /dev/shm), so it sees only its own objects.

use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

use xmem_core::discovery::{self, Action, CleanupOptions, Detail, Event};
use xmem_core::object::{ObjectKind, ObjectState};
use xmem_core::os::ShmDir;
use xmem_core::segment::SegmentWriter;
use xmem_core::BufferPool;
use xmem_tests::{PeerProcess, ShmScope};

const PEER: &str = env!("CARGO_BIN_EXE_xmem-test-peer");
const WAIT: Option<Duration> = Some(Duration::from_secs(20));

struct Dir(PathBuf);

impl Dir {
    fn new(scope: &ShmScope) -> Dir {
        let p = PathBuf::from("/dev/shm").join(scope.name("dir"));
        std::fs::create_dir(&p).unwrap();
        Dir(p)
    }
    fn shm(&self) -> ShmDir {
        ShmDir::new(&self.0)
    }
    fn peer(&self, env: &[(&str, &str)]) -> PeerProcess {
        let mut all = vec![("XMEM_SHM_DIR", self.0.to_str().unwrap())];
        all.extend_from_slice(env);
        PeerProcess::spawn(PEER, &[], &all)
    }
    fn file(&self, name: &str) -> PathBuf {
        self.0.join(format!("xmem.{name}"))
    }
    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }
    /// Leaves what a creator killed halfway leaves where objects cannot be built unnamed
    /// (`O_TMPFILE`): a complete-looking pool file whose `ready` word was never set.
    fn abandoned_creation(&self, name: &str) {
        let template = BufferPool::builder("template")
            .directory(&self.0)
            .buffers(2)
            .buffer_size(64)
            .create()
            .unwrap();
        let mut bytes = std::fs::read(self.file("template")).unwrap();
        drop(template);
        bytes[8..12].fill(0); // ObjectHeader::ready
        std::fs::write(self.file(name), bytes).unwrap();
    }
    /// Moves the start of an orphan's grace period `ago` into the past.
    fn backdate_orphan(&self, name: &str, ago: Duration) {
        let since = xmem_core::os::time::unix_now_ns() - ago.as_nanos() as u64;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.file(name))
            .unwrap();
        f.seek(SeekFrom::Start(80)).unwrap(); // ObjectHeader::orphan_since_unix_ns
        f.write_all(&since.to_le_bytes()).unwrap();
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn list_reports_kinds_owners_liveness_and_orphans() {
    let scope = ShmScope::new("disclist");
    let dir = Dir::new(&scope);
    let pool = BufferPool::builder("pool")
        .directory(&dir.0)
        .buffers(4)
        .buffer_size(64)
        .create()
        .unwrap();
    let held = pool.acquire().unwrap().freeze();
    let mut live_writer = dir.peer(&[]);
    let live_pid: u32 = live_writer.ok("segcreate live 4096")[0].parse().unwrap();
    let mut dead_writer = dir.peer(&[]);
    let dead_pid: u32 = dead_writer.ok("segcreate dead 4096")[0].parse().unwrap();
    dead_writer.kill();
    std::fs::write(dir.file("junk"), [7u8; 300]).unwrap();

    let entries = discovery::list_in(&dir.shm()).unwrap();
    let get = |n: &str| {
        entries
            .iter()
            .find(|e| e.name == n)
            .unwrap_or_else(|| panic!("{n} not listed"))
    };
    let p = get("pool");
    assert_eq!(p.kind, Some(ObjectKind::Pool));
    assert_eq!(p.owner.unwrap().pid, std::process::id());
    assert!(matches!(
        p.detail,
        Detail::Pool {
            buffers: 4,
            in_use: 1,
            processes: 1,
            dead_processes: 0
        }
    ));
    assert!(!p.is_orphan());
    let live = get("live");
    assert_eq!(live.owner.unwrap().pid, live_pid);
    assert!(matches!(
        live.detail,
        Detail::Segment {
            writer_alive: true,
            ..
        }
    ));
    assert!(!live.is_orphan());
    let dead = get("dead");
    assert_eq!(dead.owner.unwrap().pid, dead_pid);
    assert!(matches!(
        dead.detail,
        Detail::Segment {
            writer_alive: false,
            ..
        }
    ));
    assert!(dead.is_orphan());
    assert!(matches!(get("junk").state, ObjectState::Damaged(_)));
    drop((held, pool));
    live_writer.kill();
}

#[test]
fn watch_reports_creation_removal_and_owner_death() {
    let scope = ShmScope::new("discwatch");
    let dir = Dir::new(&scope);
    let mut w = discovery::watch_in(&dir.shm()).unwrap();
    assert!(w.known().is_empty());

    let mut writer = dir.peer(&[]);
    let pid: u32 = writer.ok("segcreate cam.state 4096")[0].parse().unwrap();
    assert_eq!(
        w.next(WAIT).unwrap(),
        Some(Event::Created {
            name: "cam.state".into(),
            kind: Some(ObjectKind::Segment),
            owner: Some(pid)
        })
    );
    writer.kill();
    assert_eq!(
        w.next(WAIT).unwrap(),
        Some(Event::OwnerDied {
            name: "cam.state".into(),
            kind: Some(ObjectKind::Segment),
            pid
        })
    );
    let cleaned = discovery::cleanup_in(&dir.shm(), CleanupOptions::default()).unwrap();
    assert_eq!(cleaned.len(), 1);
    assert_eq!(
        w.next(WAIT).unwrap(),
        Some(Event::Removed {
            name: "cam.state".into()
        })
    );

    let pool = BufferPool::builder("frames")
        .directory(&dir.0)
        .buffers(1)
        .buffer_size(64)
        .create()
        .unwrap();
    assert!(
        matches!(w.next(WAIT).unwrap(), Some(Event::Created { name, kind: Some(ObjectKind::Pool), .. }) if name == "frames")
    );
    drop(pool);
    assert_eq!(
        w.next(WAIT).unwrap(),
        Some(Event::Removed {
            name: "frames".into()
        })
    );
    // Quiet: nothing more happens.
    assert_eq!(w.next(Some(Duration::from_millis(50))).unwrap(), None);
}

#[test]
fn watch_reports_an_owner_death_that_it_reads_together_with_the_removal() {
    // The watch looks only after the owner died *and* its segment was removed: both are ready
    // at once (the dying owner's last close even comes first), and both are news, in order.
    let scope = ShmScope::new("discwatch2");
    let dir = Dir::new(&scope);
    let mut w = discovery::watch_in(&dir.shm()).unwrap();
    let mut writer = dir.peer(&[]);
    let pid: u32 = writer.ok("segcreate cam.state 4096")[0].parse().unwrap();
    assert!(matches!(w.next(WAIT).unwrap(), Some(Event::Created { .. })));
    writer.kill();
    let cleaned = discovery::cleanup_in(&dir.shm(), CleanupOptions::default()).unwrap();
    assert_eq!(cleaned.len(), 1);
    assert_eq!(
        w.next(WAIT).unwrap(),
        Some(Event::OwnerDied {
            name: "cam.state".into(),
            kind: Some(ObjectKind::Segment),
            pid
        })
    );
    assert_eq!(
        w.next(WAIT).unwrap(),
        Some(Event::Removed {
            name: "cam.state".into()
        })
    );
    assert_eq!(w.next(Some(Duration::from_millis(50))).unwrap(), None);
}

#[test]
fn nobody_meets_an_object_half_made() {
    // Objects are built unnamed and linked only once complete. The creator stops right after
    // opening its file; a watcher and a cleaner of damaged files look meanwhile. (Built in place,
    // the file would show as an empty, unlocked, "damaged" file there.)
    let scope = ShmScope::new("discrace");
    let dir = Dir::new(&scope);
    let mut w = discovery::watch_in(&dir.shm()).unwrap();
    let mut creator = dir.peer(&[("XMEM_PAUSE_AT", "object.opened")]);
    creator.send("segcreate slow 4096");
    creator.wait_until_stopped();
    let damaged = CleanupOptions {
        damaged: true,
        ..Default::default()
    };
    assert!(discovery::cleanup_in(&dir.shm(), damaged).unwrap().is_empty());
    assert!(discovery::list_in(&dir.shm()).unwrap().is_empty());
    assert_eq!(w.next(Some(Duration::from_millis(50))).unwrap(), None);
    creator.signal(rustix::process::Signal::CONT);
    let pid = creator.pid;
    assert_eq!(
        w.next(WAIT).unwrap(),
        Some(Event::Created {
            name: "slow".into(),
            kind: Some(ObjectKind::Segment),
            owner: Some(pid)
        })
    );
    assert_eq!(creator.reply_ok(), [pid.to_string()]);
    creator.kill();
    assert!(
        discovery::cleanup_in(&dir.shm(), CleanupOptions::default())
            .unwrap()
            .len()
            == 1
    );
    assert!(dir.files().is_empty());
}

#[test]
fn cleanup_honours_the_grace_period_and_never_touches_a_live_object() {
    let scope = ShmScope::new("discclean");
    let dir = Dir::new(&scope);
    // Live: a pool this test uses, a segment this test writes.
    let live_pool = BufferPool::builder("live-pool")
        .directory(&dir.0)
        .buffers(2)
        .buffer_size(64)
        .create()
        .unwrap();
    let held = live_pool.acquire().unwrap().freeze();
    let live_seg = SegmentWriter::builder("live-seg")
        .directory(&dir.0)
        .create()
        .unwrap();
    // Orphans: a pool and a segment whose processes died, and an abandoned creation.
    let mut p = dir.peer(&[]);
    p.ok("create dead-pool 2 64");
    p.ok("acquire 0");
    p.ok("segcreate dead-seg 4096");
    p.kill();
    dir.abandoned_creation("abandoned");
    // Also a pool that live processes use, with a dead process's reference in it.
    let shared = BufferPool::builder("shared")
        .directory(&dir.0)
        .buffers(2)
        .buffer_size(64)
        .create()
        .unwrap();
    let mut q = dir.peer(&[]);
    q.ok("open shared");
    q.ok("acquire 0");
    q.kill();

    let grace = Duration::from_secs(3600);
    let options = CleanupOptions {
        grace,
        ..Default::default()
    };
    let first = discovery::cleanup_in(&dir.shm(), options).unwrap();
    let actions = |done: &[discovery::Cleaned], n: &str| -> Vec<Action> {
        done.iter()
            .filter(|c| c.name == n)
            .map(|c| c.action.clone())
            .collect()
    };
    for n in ["dead-pool", "dead-seg", "abandoned"] {
        let a = actions(&first, n);
        assert!(
            a.iter().any(|a| matches!(a, Action::Waiting { .. })),
            "{n}: {a:?}"
        );
    }
    assert!(actions(&first, "dead-pool").contains(&Action::Reclaimed {
        dead_processes: vec![p.pid],
        references: 1
    }));
    assert_eq!(
        actions(&first, "shared"),
        [Action::Reclaimed {
            dead_processes: vec![q.pid],
            references: 1
        }],
        "a pool in use is never an orphan"
    );
    assert!(actions(&first, "live-pool").is_empty() && actions(&first, "live-seg").is_empty());
    assert_eq!(dir.files().len(), 6, "nothing is removed inside its grace period");

    // An hour later (as far as the grace period can tell):
    dir.backdate_orphan("dead-pool", grace * 2);
    dir.backdate_orphan("dead-seg", grace * 2);
    let f = std::fs::File::options()
        .write(true)
        .open(dir.file("abandoned"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() - grace * 2).unwrap();
    let second = discovery::cleanup_in(&dir.shm(), options).unwrap();
    for n in ["dead-pool", "dead-seg", "abandoned"] {
        let a = actions(&second, n);
        assert!(
            a.iter().any(|a| matches!(a, Action::Removed { .. })),
            "{n}: {a:?}"
        );
    }
    assert_eq!(dir.files(), ["xmem.live-pool", "xmem.live-seg", "xmem.shared"]);
    assert_eq!(shared.free_count(), 2, "the dead process's reference came back");
    drop((held, live_pool, live_seg, shared));
    assert!(dir.files().is_empty());
}
