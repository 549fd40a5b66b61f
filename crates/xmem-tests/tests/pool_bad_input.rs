//! Bad names, foreign files, truncated, mis-versioned and corrupt objects: typed errors, no
//! panics.

use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use xmem_core::os::ShmDir;
use xmem_core::{BufferPool, Error};
use xmem_tests::{Rng, ShmScope};

fn path(name: &str) -> PathBuf {
    ShmDir::default().join(&format!("xmem.{name}"))
}

/// The bytes of a freshly created pool (the pool itself is removed again).
fn valid_image(scope: &ShmScope) -> Vec<u8> {
    let name = scope.name("template");
    let pool = BufferPool::builder(&name)
        .buffers(4)
        .buffer_size(256)
        .create()
        .unwrap();
    let b = pool.acquire().unwrap().freeze();
    let bytes = std::fs::read(path(&name)).unwrap();
    drop((b, pool));
    bytes
}

fn open_quick(name: &str) -> Result<BufferPool, Error> {
    BufferPool::builder(name)
        .open_timeout(Duration::from_millis(100))
        .open()
}

fn kind(r: Result<BufferPool, Error>) -> String {
    match r {
        Ok(_) => "Ok".into(),
        Err(e) => format!("{e:?}")
            .chars()
            .take_while(|c| c.is_alphanumeric())
            .collect(),
    }
}

#[test]
fn bad_names_are_rejected_with_the_reason() {
    for (name, why) in [
        ("", "empty"),
        ("/camera", "not paths"),
        ("a/b", "'/'"),
        ("..", "'..'"),
        ("x..y", "'..'"),
        (".hidden", "'.'"),
        ("white space", "character"),
    ] {
        match BufferPool::open(name) {
            Err(e @ Error::InvalidName { .. }) => assert!(e.to_string().contains(why), "{name:?}: {e}"),
            other => panic!("{name:?}: expected InvalidName, got {other:?}"),
        }
    }
    let long = "n".repeat(201);
    assert!(matches!(BufferPool::open(&long), Err(Error::InvalidName { .. })));
    assert!(matches!(
        BufferPool::builder(&long).buffer_size(1).create(),
        Err(Error::InvalidName { .. })
    ));
}

#[test]
fn a_missing_pool_is_not_found_and_says_where_it_looked() {
    let scope = ShmScope::new("missing");
    let name = scope.name("nothing");
    match BufferPool::open(&name) {
        Err(e @ Error::NotFound { .. }) => {
            let text = e.to_string();
            assert!(text.contains(&name) && text.contains("xmem ls"), "{text}");
        }
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[test]
fn foreign_empty_and_short_files_are_typed_errors() {
    let scope = ShmScope::new("foreign");
    let junk = scope.name("junk");
    let mut bytes = vec![0u8; 4096];
    let mut rng = Rng::new(7);
    bytes.iter_mut().for_each(|b| *b = rng.next_u64() as u8 | 1);
    std::fs::write(path(&junk), &bytes).unwrap();
    assert_eq!(kind(open_quick(&junk)), "NotXmem");

    let empty = scope.name("empty");
    std::fs::write(path(&empty), b"").unwrap();
    assert_eq!(kind(open_quick(&empty)), "Abandoned");

    let short = scope.name("short");
    std::fs::write(path(&short), [1u8; 64]).unwrap();
    assert_eq!(kind(open_quick(&short)), "Truncated");

    let zeros = scope.name("zeros");
    std::fs::write(path(&zeros), vec![0u8; 8192]).unwrap();
    assert_eq!(kind(open_quick(&zeros)), "NotXmem");

    std::os::unix::fs::symlink(path(&junk), path(&scope.name("link"))).unwrap();
    assert_eq!(kind(open_quick(&scope.name("link"))), "NotXmem");

    for n in ["junk", "empty", "short", "zeros", "link"] {
        std::fs::remove_file(path(&scope.name(n))).unwrap();
    }
}

#[test]
fn truncated_mis_versioned_wrong_kind_and_corrupt_pools_are_typed_errors() {
    let scope = ShmScope::new("damaged");
    let image = valid_image(&scope);
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Damage, &str)> = vec![
        ("half", Box::new(|b| b.truncate(b.len() / 2)), "Truncated"),
        (
            "version",
            Box::new(|b| b[16..20].copy_from_slice(&99u32.to_le_bytes())),
            "VersionMismatch",
        ),
        (
            "kind",
            Box::new(|b| b[12..16].copy_from_slice(&2u32.to_le_bytes())),
            "WrongKind",
        ),
        (
            "unknown-kind",
            Box::new(|b| b[12..16].copy_from_slice(&77u32.to_le_bytes())),
            "WrongKind",
        ),
        (
            "magic",
            Box::new(|b| b[0..8].copy_from_slice(b"NOTXMEM!")),
            "NotXmem",
        ),
        (
            "ready",
            Box::new(|b| b[8..12].copy_from_slice(&5u32.to_le_bytes())),
            "Corrupt",
        ),
        (
            "count0",
            Box::new(|b| b[128..132].copy_from_slice(&0u32.to_le_bytes())),
            "Corrupt",
        ),
        (
            "count-big",
            Box::new(|b| b[128..132].copy_from_slice(&5000u32.to_le_bytes())),
            "Corrupt",
        ),
        (
            "align",
            Box::new(|b| b[132..136].copy_from_slice(&3u32.to_le_bytes())),
            "Corrupt",
        ),
        (
            "size",
            Box::new(|b| b[136..144].copy_from_slice(&u64::MAX.to_le_bytes())),
            "Corrupt",
        ),
        (
            "total",
            Box::new(|b| b[24..32].copy_from_slice(&1u64.to_le_bytes())),
            "Corrupt",
        ),
        (
            "storage",
            Box::new(|b| b[152..156].copy_from_slice(&9u32.to_le_bytes())),
            "Corrupt",
        ),
        (
            "max-proc",
            Box::new(|b| b[156..160].copy_from_slice(&64u32.to_le_bytes())),
            "Corrupt",
        ),
        ("longer", Box::new(|b| b.extend_from_slice(&[0; 4096])), "Corrupt"),
    ];
    for (what, damage, expected) in cases {
        let name = scope.name(what);
        let mut bytes = image.clone();
        damage(&mut bytes);
        std::fs::write(path(&name), &bytes).unwrap();
        let got = open_quick(&name);
        if let Err(e) = &got {
            assert!(
                e.to_string().contains("xmem") || e.to_string().contains("version"),
                "{what}: {e}"
            );
        }
        assert_eq!(kind(got), expected, "{what}");
        std::fs::remove_file(path(&name)).unwrap();
    }
}

#[test]
fn an_object_still_being_initialised_makes_open_wait_then_fail_clearly() {
    let scope = ShmScope::new("initialising");
    let image = valid_image(&scope);
    let name = scope.name("pool");
    let mut bytes = image.clone();
    bytes[8..12].copy_from_slice(&0u32.to_le_bytes()); // not ready
    std::fs::write(path(&name), &bytes).unwrap();
    // A creator at work holds the init lock (a flock on its own open file description).
    let file = std::fs::File::open(path(&name)).unwrap();
    // SAFETY: flock on a descriptor we own.
    assert_eq!(unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) }, 0);
    let started = std::time::Instant::now();
    match open_quick(&name) {
        Err(e @ Error::NotReady { .. }) => assert!(e.to_string().contains("being initialised"), "{e}"),
        other => panic!("expected NotReady, got {other:?}"),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "it must wait for the creator first"
    );
    // The creator died: the lock is gone, the object is abandoned.
    drop(file);
    assert_eq!(kind(open_quick(&name)), "Abandoned");
    std::fs::remove_file(path(&name)).unwrap();
}

#[test]
fn randomly_damaged_pools_never_panic() {
    let scope = ShmScope::new("fuzz");
    let image = valid_image(&scope);
    let mut rng = Rng::from_env("randomly_damaged_pools_never_panic");
    let name = scope.name("pool");
    let mut opened = 0;
    for _ in 0..300 {
        let mut bytes = image.clone();
        // Damage the metadata region: headers, process table, hints, states, metas.
        for _ in 0..1 + rng.below(16) {
            let at = rng.below(8192.min(bytes.len() as u64)) as usize;
            bytes[at] = rng.next_u64() as u8;
        }
        std::fs::write(path(&name), &bytes).unwrap();
        if let Ok(pool) = open_quick(&name) {
            opened += 1;
            // Whatever it says, using it must not panic.
            let snap = pool.snapshot();
            for b in &snap.buffers {
                let t = xmem_core::BufferRef::new(pool.pool_id() as u32, b.index, b.generation.max(1));
                if let Ok(g) = pool.get(t) {
                    let _ = g.tensor();
                    let _ = g.as_slice::<f32>();
                }
            }
            for _ in 0..3 {
                let _ = pool.try_acquire().map(|b| b.freeze());
            }
            let _ = pool.reclaim();
        }
        let _ = std::fs::remove_file(path(&name));
    }
    assert!(
        opened > 0,
        "no damaged image was openable, so nothing past the header was exercised"
    );
}

#[test]
fn modes_are_applied_exactly_and_configurations_are_checked() {
    let scope = ShmScope::new("modes");
    let name = scope.name("pool");
    let pool = BufferPool::builder(&name)
        .buffers(2)
        .buffer_size(64)
        .mode(0o660)
        .create()
        .unwrap();
    let mode = std::fs::metadata(path(&name)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "the umask must not narrow the requested mode");
    match BufferPool::builder(&name)
        .buffers(3)
        .buffer_size(64)
        .open_or_create()
    {
        Err(e @ Error::ConfigMismatch { .. }) => assert!(e.to_string().contains("count: 2"), "{e}"),
        other => panic!("expected ConfigMismatch, got {other:?}"),
    }
    let same = BufferPool::builder(&name)
        .buffers(2)
        .buffer_size(64)
        .open_or_create()
        .unwrap();
    assert_eq!(
        same.process_slot(),
        pool.process_slot(),
        "one attachment per process"
    );
    for (count, size, align) in [(0, 64, 64), (2, 0, 64), (2, 64, 3), (70_000, 64, 64)] {
        let r = BufferPool::builder(&scope.name("bad"))
            .buffers(count)
            .buffer_size(size)
            .alignment(align)
            .create();
        assert!(
            matches!(r, Err(Error::InvalidConfig(_))),
            "{count} {size} {align}: {r:?}"
        );
    }
}
