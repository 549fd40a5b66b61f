//! What the image targets share: a private directory where the input becomes an object's file,
//! and the look every reader of the directory takes at it (`xmem ls`, `xmem clean --dry-run`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use xmem_core::os::ShmDir;

/// This fuzzing process's directory (on tmpfs, as objects usually are; `scripts/fuzz` removes
/// it afterwards).
pub fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = PathBuf::from("/dev/shm").join(format!("xmem-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("the fuzz directory");
        d
    })
}

/// Writes `data` as the file of object `case` and returns its path.
pub fn place(data: &[u8]) -> PathBuf {
    let path = dir().join("xmem.case");
    std::fs::write(&path, data).expect("write the case");
    path
}

/// Lists and judges every object in the directory, as `xmem ls` and `xmem clean` do.
pub fn look() {
    let shm = ShmDir::new(dir());
    if let Ok(entries) = xmem_core::discovery::list_in(&shm) {
        for e in &entries {
            let _ = e.damage();
            let _ = e.is_orphan();
        }
    }
    let _ = xmem_core::discovery::cleanup_in(
        &shm,
        xmem_core::discovery::CleanupOptions {
            dry_run: true,
            ..Default::default()
        },
    );
}

/// Removes the case (and anything opening it made beside it).
pub fn clear() {
    for e in std::fs::read_dir(dir()).into_iter().flatten().flatten() {
        let _ = std::fs::remove_file(e.path());
    }
}
