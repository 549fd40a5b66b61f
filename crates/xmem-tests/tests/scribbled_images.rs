//! Readers of pool, stream and segment images against scribbled copies: whatever bytes a
//! hostile or broken process leaves in an object's file, listing, inspecting and opening it give
//! a typed error or a working handle, never a panic, SIGSEGV or SIGBUS (any of which fails the
//! test process). A copy of a live object is scribbled, not the object: its users are not the
//! subject here.
//!
//! `XMEM_SCRIBBLE_CASES` (default 2,000 per kind) sets how many copies; `XMEM_TEST_SEED` the seed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use xmem_core::os::ShmDir;
use xmem_core::segment::{SegmentReader, SegmentWriter};
use xmem_core::stream::{Publisher, Subscriber};
use xmem_core::BufferPool;
use xmem_tests::{Rng, ShmScope};

fn cases() -> u64 {
    std::env::var("XMEM_SCRIBBLE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// A directory of the test's own, removed at the end (it must be empty by then).
struct Dir(PathBuf);

impl Dir {
    fn new(scope: &ShmScope) -> Dir {
        let path = PathBuf::from("/dev/shm").join(scope.name("dir"));
        std::fs::create_dir(&path).unwrap();
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `template` to `path` with a few random bytes changed: mostly in the first 4 KiB,
/// where the headers, records and queues are, sometimes anywhere.
fn scribbled_copy(rng: &mut Rng, template: &[u8], path: &Path) {
    let mut bytes = template.to_vec();
    for _ in 0..1 + rng.below(8) {
        let span = if rng.below(4) == 0 {
            bytes.len()
        } else {
            bytes.len().min(4096)
        };
        let at = rng.below(span as u64) as usize;
        bytes[at] = match rng.below(3) {
            0 => bytes[at] ^ (1 << rng.below(8)),
            1 => 0xff,
            _ => rng.next_u64() as u8,
        };
    }
    std::fs::write(path, &bytes).unwrap();
}

/// Lists and inspects every object of `dir`, as `xmem ls` does; errors are fine, crashes not.
fn look_at(dir: &Path) {
    let entries = xmem_core::discovery::list_in(&ShmDir::new(dir)).unwrap();
    for e in &entries {
        let _ = e.damage();
        let _ = e.is_orphan();
    }
    let _ = xmem_core::discovery::cleanup_in(
        &ShmDir::new(dir),
        xmem_core::discovery::CleanupOptions {
            dry_run: true,
            ..Default::default()
        },
    );
}

#[test]
fn scribbled_pool_images_give_errors_or_working_pools() {
    let scope = ShmScope::new("scrpool");
    let dir = Dir::new(&scope);
    let pool = BufferPool::builder("template")
        .directory(&dir.0)
        .buffers(4)
        .buffer_size(256)
        .create()
        .unwrap();
    let held = pool.acquire().unwrap().freeze();
    let template = std::fs::read(dir.0.join("xmem.template")).unwrap();
    let case = dir.0.join("xmem.case");
    let mut rng = Rng::from_env("scribbled_pool_images_give_errors_or_working_pools");
    let (mut opened, mut refused) = (0, 0);
    for _ in 0..cases() {
        scribbled_copy(&mut rng, &template, &case);
        look_at(&dir.0);
        let _ = xmem_core::pool::inspect_path(&case, "case");
        match BufferPool::builder("case")
            .directory(&dir.0)
            .open_timeout(Duration::ZERO)
            .open()
        {
            Ok(p) => {
                opened += 1;
                if let Ok(mut b) = p.try_acquire() {
                    b.bytes_mut().fill(1);
                }
                let _ = p.reclaim();
            }
            Err(_) => refused += 1,
        }
        let _ = std::fs::remove_file(&case);
    }
    println!("{opened} scribbled pools opened, {refused} refused with an error");
    assert!(refused > 0, "some damage must be seen");
    drop((held, pool));
}

#[test]
fn scribbled_stream_images_give_errors_or_working_subscribers() {
    let scope = ShmScope::new("scrstream");
    let dir = Dir::new(&scope);
    let mut publisher = Publisher::builder("template")
        .directory(&dir.0)
        .buffers(4)
        .buffer_size(64)
        .depth(4)
        .create()
        .unwrap();
    let sub = Subscriber::builder("template").directory(&dir.0).open().unwrap();
    for _ in 0..3 {
        let f = publisher.loan().unwrap();
        publisher.publish(f).unwrap();
    }
    let template = std::fs::read(dir.0.join("xmem.template")).unwrap();
    let case = dir.0.join("xmem.case");
    let mut rng = Rng::from_env("scribbled_stream_images_give_errors_or_working_subscribers");
    let mut refused = 0;
    for _ in 0..cases() {
        scribbled_copy(&mut rng, &template, &case);
        look_at(&dir.0);
        let _ = xmem_core::stream::inspect_path(&case, "case");
        // The copy has no publisher (no one holds its lock): joining it must end, one way or
        // the other, at once.
        match Subscriber::builder("case").directory(&dir.0).open() {
            Ok(mut s) => {
                let _ = s.try_receive();
            }
            Err(_) => refused += 1,
        }
        let _ = std::fs::remove_file(&case);
    }
    assert!(refused > 0, "some damage must be seen");
    drop(sub);
    drop(publisher);
}

#[test]
fn scribbled_segment_images_give_errors_or_consistent_reads() {
    let scope = ShmScope::new("scrseg");
    let dir = Dir::new(&scope);
    let mut writer = SegmentWriter::builder("template")
        .directory(&dir.0)
        .size(4096)
        .create()
        .unwrap();
    writer.write(&[7u8; 4096]).unwrap();
    let template = std::fs::read(dir.0.join("xmem.template")).unwrap();
    let case = dir.0.join("xmem.case");
    let mut rng = Rng::from_env("scribbled_segment_images_give_errors_or_consistent_reads");
    let mut refused = 0;
    let mut buf = vec![0u8; 4096];
    for _ in 0..cases() {
        scribbled_copy(&mut rng, &template, &case);
        look_at(&dir.0);
        let _ = xmem_core::segment::inspect_path(&case, "case");
        match SegmentReader::builder("case")
            .directory(&dir.0)
            .open_timeout(Duration::ZERO)
            .max_retries(16)
            .open()
        {
            Ok(mut r) => {
                let _ = r.read_into(&mut buf);
            }
            Err(_) => refused += 1,
        }
        let _ = std::fs::remove_file(&case);
    }
    assert!(refused > 0, "some damage must be seen");
    drop(writer);
}

/// Writes the seed corpora of `crates/xmem-core/fuzz` (a sound image of each kind, as the
/// templates above): `cargo test --test scribbled_images -- --ignored write_fuzz_seeds`.
#[test]
#[ignore = "run by hand to renew the committed fuzz seeds"]
fn write_fuzz_seeds() {
    let scope = ShmScope::new("seeds");
    let dir = Dir::new(&scope);
    let seeds = xmem_tests::main_workspace().join("crates/xmem-core/fuzz/seeds");
    let save = |target: &str, name: &str, bytes: Vec<u8>| {
        let d = seeds.join(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(name), bytes).unwrap();
    };
    let pool = BufferPool::builder("pool")
        .directory(&dir.0)
        .buffers(4)
        .buffer_size(256)
        .create()
        .unwrap();
    let held = pool.acquire().unwrap().freeze();
    save(
        "pool_image",
        "pool-4x256-one-held",
        std::fs::read(dir.0.join("xmem.pool")).unwrap(),
    );
    drop((held, pool));
    let mut publisher = Publisher::builder("cam")
        .directory(&dir.0)
        .buffers(4)
        .buffer_size(64)
        .depth(4)
        .create()
        .unwrap();
    let sub = Subscriber::builder("cam").directory(&dir.0).open().unwrap();
    for _ in 0..3 {
        let f = publisher.loan().unwrap();
        publisher.publish(f).unwrap();
    }
    save(
        "stream_image",
        "stream-depth4-one-subscriber",
        std::fs::read(dir.0.join("xmem.cam")).unwrap(),
    );
    save(
        "pool_image",
        "stream-pool-4x64",
        std::fs::read(dir.0.join("xmem.cam.pool")).unwrap(),
    );
    drop((sub, publisher));
    let mut writer = SegmentWriter::builder("pose")
        .directory(&dir.0)
        .size(4096)
        .create()
        .unwrap();
    writer.write(&[7u8; 4096]).unwrap();
    save(
        "segment_image",
        "segment-4k",
        std::fs::read(dir.0.join("xmem.pose")).unwrap(),
    );
    drop(writer);
}
