//! Producer and consumer over announces and descriptors: the canonical layout, the checks before
//! mapping (W-15.10-1, W-15.21a-1, W-9-2, W-15.22-1 huge pages), epochs and remapping (W-15.2-1,
//! W-15.21-1, W-10.1-1), descriptors (W-10.2.1-1).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use xmem_tensorpool::codec::{FrameDescriptor, ShmPoolAnnounce};
use xmem_tensorpool::commit::{Drop, FrameSpec};
use xmem_tensorpool::layout::{Dtype, TensorHeader};
use xmem_tensorpool::paths::{sanitize_user, AllowedDirs, Layout};
use xmem_tensorpool::stream::{check_announce, AnnounceFile, Remap, TpConsumer, TpProducer};
use xmem_tensorpool::Error;

/// A base directory for one test under /dev/shm, removed (and checked empty of leftovers) after.
struct Base(PathBuf);

impl Base {
    fn new(tag: &str) -> Base {
        let p = PathBuf::from("/dev/shm").join(format!("xmem-tp-stream-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Base(p)
    }

    fn allowed(&self) -> AllowedDirs {
        AllowedDirs::new([&self.0]).unwrap()
    }
}

impl std::ops::Drop for Base {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).expect("remove the test's base directory");
    }
}

fn spec(len: u32) -> FrameSpec {
    FrameSpec {
        tensor: TensorHeader::row_major(Dtype::Uint8, &[len as i32]),
        values_len: len,
        timestamp_ns: 1,
        meta_version: 0,
    }
}

fn producer(base: &Base, stream: u32) -> TpProducer {
    TpProducer::builder(stream)
        .base_dir(&base.0)
        .namespace("test")
        .nslots(4)
        .pool(1, 256)
        .pool(2, 4096)
        .create()
        .unwrap()
}

fn files_under(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn regions_sit_in_the_canonical_layout_and_go_when_the_producer_does() {
    let base = Base::new("layout");
    let p = producer(&base, 10_000);
    let a = p.announce().clone();
    let layout = Layout::new(&base.0, "test").unwrap();
    let dir = layout.epoch_dir(10_000, a.epoch);
    let user = dir.strip_prefix(&base.0).unwrap().components().next().unwrap();
    assert!(
        user.as_os_str().to_string_lossy().starts_with("tensorpool-"),
        "{dir:?}"
    );
    assert_eq!(p.epoch_dir(), dir);
    let mut names: Vec<String> = files_under(&dir)
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["1.pool", "2.pool", "header.ring"]);
    assert_eq!(
        a.header_region_uri,
        format!(
            "shm:file?path={}|require_hugepages=false",
            dir.join("header.ring").display()
        )
    );
    check_announce(&a).unwrap();
    drop(p);
    // Nothing left: no file, and no directory it made (tensorpool-<user>/<namespace>/<stream>).
    let left: Vec<_> = std::fs::read_dir(&base.0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn user_names_and_namespaces_are_sanitized_or_refused() {
    assert_eq!(sanitize_user(Some("a.b c/d")), "a_b_c_d");
    assert_eq!(sanitize_user(Some("")), "unknown");
    assert_eq!(sanitize_user(None), "unknown");
    for bad in ["", "a/b", "..", "x y"] {
        assert!(Layout::new("/dev/shm", bad).is_err(), "{bad:?}");
    }
    assert!(Layout::new("relative", "ok").is_err());
}

#[test]
fn w_10_2_1_1_descriptors_route_to_the_right_pool_and_round_trip() {
    let base = Base::new("desc");
    let mut p = producer(&base, 10_001);
    let mut c = TpConsumer::new(base.allowed());
    assert_eq!(
        c.on_announce(p.announce()).unwrap(),
        Remap::Mapped {
            epoch: p.announce().epoch
        }
    );
    let mut buf = Vec::new();
    for (len, pool) in [(100u32, 1u16), (256, 1), (257, 2), (4096, 2)] {
        let d = p.publish(&spec(len), |b| b.fill(len as u8)).unwrap().unwrap();
        // Through the wire encoding, as the control plane will carry it.
        let d = FrameDescriptor::decode(&d.encode()).unwrap();
        let got = c.read(&d, &mut buf).unwrap();
        assert_eq!((got.seq, got.slot.pool_id), (d.seq, pool), "{len} bytes");
        assert!(buf.len() == len as usize && buf.iter().all(|&x| x == len as u8));
    }
    assert!(
        p.publish(&spec(4097), |_| {}).unwrap().is_none(),
        "no pool fits: dropped, not blocked"
    );
    assert_eq!(c.counters().accepted, 4);
}

#[test]
fn w_15_21_1_the_same_epoch_is_a_no_op_another_epoch_remaps() {
    let base = Base::new("remap");
    let mut c = TpConsumer::new(base.allowed());
    let mut buf = Vec::new();
    let mut first = producer(&base, 10_002);
    let e1 = first.announce().epoch;
    assert_eq!(
        c.on_announce(first.announce()).unwrap(),
        Remap::Mapped { epoch: e1 }
    );
    assert_eq!(c.on_announce(first.announce()).unwrap(), Remap::Same);
    let d1 = first.publish(&spec(8), |b| b.fill(1)).unwrap().unwrap();
    c.read(&d1, &mut buf).unwrap();
    // The producer restarts: a new epoch, higher, in its own directory.
    drop(first);
    let mut second = producer(&base, 10_002);
    let e2 = second.announce().epoch;
    assert!(e2 > e1);
    let d2 = second.publish(&spec(8), |b| b.fill(2)).unwrap().unwrap();
    // W-15.2-1: before the new announce, its descriptors do not match the mapping: dropped.
    assert_eq!(
        c.read(&d2, &mut buf).unwrap_err(),
        Drop::Epoch { got: e2, mapped: e1 }
    );
    assert_eq!(c.counters().drops_late, 1);
    assert_eq!(
        c.on_announce(second.announce()).unwrap(),
        Remap::Remapped { from: e1, to: e2 }
    );
    assert_eq!(c.read(&d2, &mut buf).unwrap().seq, 0);
    assert_eq!(buf, [2; 8]);
    // A stale descriptor of the old epoch is dropped too.
    assert!(matches!(c.read(&d1, &mut buf), Err(Drop::Epoch { .. })));
    assert_eq!(c.counters().accepted, 2, "counted across the remap");
}

/// Epochs rise even against the clock: a killed producer's epoch directory from a clock that
/// ran ahead (set back since) still lies there, and the next epoch is above it.
#[test]
fn a_new_epoch_is_above_every_epoch_left_on_disk() {
    let base = Base::new("epochs");
    let layout = Layout::new(&base.0, "test").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let ahead = now + 3_600_000_000_000; // an hour ahead
    let left = layout.epoch_dir(10_005, ahead);
    std::fs::create_dir_all(&left).unwrap();
    let p = producer(&base, 10_005);
    let first = p.announce().epoch;
    assert_eq!(first, ahead + 1);
    drop(p);
    std::fs::remove_dir(&left).unwrap();
    // And this process never repeats or lowers an epoch, whatever the clock says.
    let again = producer(&base, 10_005);
    assert!(again.announce().epoch > first && again.announce().epoch < ahead + 1000);
}

#[test]
fn w_10_1_1_an_announce_that_does_not_match_its_regions_maps_nothing() {
    let base = Base::new("announce");
    let p = producer(&base, 10_003);
    let good = p.announce().clone();
    let mut c = TpConsumer::new(base.allowed());
    type Change = fn(&mut ShmPoolAnnounce);
    let changes: [(&str, Change); 7] = [
        ("slot bytes", |a| a.header_slot_bytes = 512),
        ("pool slots", |a| a.pools[0].nslots = 8),
        ("ring slots", |a| {
            a.header_nslots = 8;
            a.pools.iter_mut().for_each(|p| p.nslots = 8)
        }),
        ("stride", |a| a.pools[0].stride_bytes = 128),
        ("stride rule", |a| a.pools[0].stride_bytes = 100),
        ("epoch", |a| a.epoch += 1),
        ("layout", |a| a.layout_version = 2),
    ];
    for (what, change) in changes {
        let mut a = good.clone();
        change(&mut a);
        assert!(c.on_announce(&a).is_err(), "{what}");
        assert_eq!(c.epoch(), None, "{what}: nothing stays mapped");
    }
    c.on_announce(&good).unwrap();
    // A bad announce of a new epoch unmaps the old one (fail closed).
    let mut bad = good.clone();
    bad.epoch += 1;
    bad.pools[0].region_uri = "shm:file?path=relative".into();
    assert!(c.on_announce(&bad).is_err());
    assert_eq!(c.epoch(), None);
    let mut buf = Vec::new();
    assert_eq!(c.next(&mut buf).unwrap_err(), Drop::Unmapped);
}

#[test]
fn w_15_10_1_regions_outside_the_allowed_directories_or_behind_symlinks_are_refused() {
    let base = Base::new("contain");
    let p = producer(&base, 10_004);
    let ring = p.epoch_dir().join("header.ring");
    // Allowed: the base. Not allowed: a sibling directory.
    let other = Base::new("contain-other");
    let outside = AllowedDirs::new([&other.0]).unwrap();
    assert!(
        matches!(outside.open(&ring, false), Err(Error::Io { detail, .. }) if detail.contains("outside"))
    );
    let allowed = base.allowed();
    allowed.open(&ring, false).unwrap();
    // `..` cannot climb out: the path is resolved first.
    let climbing = other
        .0
        .join("../")
        .join(base.0.file_name().unwrap())
        .join("x/../nothing");
    assert!(allowed.open(&climbing, false).is_err());
    // A symlink inside the allowed directory to a file outside it.
    let secret = other.0.join("secret");
    std::fs::write(&secret, [0u8; 64]).unwrap();
    let link = base.0.join("link.ring");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    assert!(allowed.open(&link, false).is_err());
    // Relative paths, directories, missing files.
    assert!(allowed.open(Path::new("header.ring"), false).is_err());
    assert!(
        matches!(allowed.open(p.epoch_dir(), false), Err(Error::Io { detail, .. }) if detail.contains("regular"))
    );
    assert!(allowed.open(&p.epoch_dir().join("9.pool"), false).is_err());
    // A directory that does not exist allows nothing, and says so.
    assert!(AllowedDirs::new([base.0.join("missing")]).is_err());
    std::fs::remove_file(&link).unwrap();
}

#[test]
fn w_15_21a_1_the_permission_policy_and_huge_pages_are_enforced() {
    let base = Base::new("perm");
    let p = producer(&base, 10_005);
    let ring = p.epoch_dir().join("header.ring");
    let strict = base.allowed().forbid_mode_bits(0o002);
    strict.open(&ring, false).unwrap();
    std::fs::set_permissions(&ring, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert!(
        matches!(strict.open(&ring, false), Err(Error::Io { detail, .. }) if detail.contains("forbidden"))
    );
    let uid = rustix::process::geteuid().as_raw();
    base.allowed().require_owner(uid).open(&ring, false).unwrap();
    assert!(base.allowed().require_owner(uid + 1).open(&ring, false).is_err());
    // W-15.22-1: require_hugepages=true on a file that is not on hugetlbfs (this is tmpfs).
    assert!(
        matches!(base.allowed().open(&ring, true), Err(Error::Io { detail, .. }) if detail.contains("hugetlbfs"))
    );
}

#[test]
fn the_announce_file_is_replaced_whole() {
    let base = Base::new("file");
    let p = producer(&base, 10_006);
    let f = AnnounceFile::in_dir(p.stream_dir());
    f.write(p.announce()).unwrap();
    assert_eq!(&f.read().unwrap(), p.announce());
    std::fs::write(f.path(), b"not an announce").unwrap();
    assert!(f.read().is_err());
    f.remove();
}
