//! `xmem clean`

use anyhow::Result;
use xmem_core::object::{self, ObjectKind, ObjectState};
use xmem_core::os::{shm, ShmDir};

pub fn run(dry_run: bool, damaged: bool) -> Result<()> {
    let dir = ShmDir::default();
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut acted = 0;
    for info in object::list(&dir)? {
        let name = &info.name;
        match (&info.state, info.kind) {
            (ObjectState::Ready, Some(ObjectKind::Pool)) => {
                let report = match xmem_core::pool::clean_path(&info.path, dry_run) {
                    Ok(r) => r,
                    Err(e) => {
                        println!("{name}: skipped: {e}");
                        continue;
                    }
                };
                let r = &report.reclaimed;
                if !r.is_empty() {
                    acted += 1;
                    println!(
                        "{name}: {} {} reference(s) of dead process(es) {:?}",
                        if dry_run { "would return" } else { "returned" },
                        r.references,
                        r.dead_processes
                    );
                }
                if report.removed {
                    acted += 1;
                    println!("{name}: {verb} (no live process uses it)");
                }
            }
            (ObjectState::Abandoned, _) => {
                acted += 1;
                if !dry_run {
                    shm::unlink(&info.path)?;
                }
                println!("{name}: {verb} (abandoned by a creator that died during initialisation)");
            }
            (ObjectState::Damaged(why), _) if damaged => {
                acted += 1;
                if !dry_run {
                    shm::unlink(&info.path)?;
                }
                println!("{name}: {verb} (damaged: {why})");
            }
            (ObjectState::Damaged(why), _) => {
                println!("{name}: damaged ({why}); `xmem clean --damaged` removes it");
            }
            (ObjectState::Initialising, _) => println!("{name}: being initialised, left alone"),
            (ObjectState::Ready, kind) => {
                println!(
                    "{name}: {} objects are not cleaned by this xmem",
                    kind.map(|k| k.to_string()).unwrap_or_default()
                )
            }
        }
    }
    if acted == 0 {
        println!("nothing to clean in {}", dir.path().display());
    }
    Ok(())
}
