//! `xmem clean`

use std::time::Duration;

use anyhow::Result;
use xmem_core::discovery::{self, Action, CleanupOptions};
use xmem_core::object::ObjectState;
use xmem_core::os::{placement, ShmDir};

use crate::fmt;

pub(crate) fn run(dry_run: bool, damaged: bool, grace: Duration) -> Result<()> {
    let options = CleanupOptions {
        grace,
        dry_run,
        damaged,
    };
    let mut dirs = vec![ShmDir::default()];
    dirs.extend(
        placement::hugetlbfs_mounts()
            .into_iter()
            .map(|m| ShmDir::new(m.path)),
    );
    let (mut acted, mut unreadable) = (0, 0);
    for dir in &dirs {
        for c in discovery::cleanup_in(dir, options)? {
            acted += 1;
            let name = &c.name;
            match c.action {
                Action::Reclaimed {
                    dead_processes,
                    references,
                } => outln!(
                    "{name}: {} {references} reference(s) of dead process(es) {dead_processes:?}",
                    if dry_run { "would return" } else { "returned" }
                )?,
                Action::Removed { why } => outln!(
                    "{name}: {} ({why})",
                    if dry_run { "would remove" } else { "removed" }
                )?,
                Action::Waiting { left } => outln!("{name}: orphaned; removable in {}", fmt::duration(left))?,
            }
        }
        for e in discovery::list_in(dir)? {
            if let ObjectState::Unreadable(why) = &e.state {
                unreadable += 1;
                outln!("{}: left alone, {why}", e.name)?;
            } else if let Some(why) = e.damage().filter(|_| !damaged) {
                outln!("{}: damaged ({why}); `xmem clean --damaged` removes it", e.name)?;
            }
        }
    }
    if acted == 0 && unreadable == 0 {
        outln!("nothing to clean in {}", dirs[0].path().display())?;
    } else if acted == 0 {
        outln!(
            "nothing this user can clean in {}; {unreadable} object(s) not readable (above)",
            dirs[0].path().display()
        )?;
    }
    Ok(())
}
