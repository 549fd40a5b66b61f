//! `xmem tp clean`: what dead tensor-pool producers and media drivers leave in shared memory.
//! A producer that exits cleanly removes its epoch's regions; one that is killed cannot, and a
//! killed media driver leaves its Aeron directory. In no-driver mode nobody else owns them
//! (a tensor-pool driver garbage-collects its own epochs), so this is how they go.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use xmem_aeron::dir::DriverStatus;

use crate::fmt;

/// `xmem tp clean`.
#[derive(clap::Args, Debug)]
pub(crate) struct CleanArgs {
    /// Base directory of the regions (as given to `xmem tp produce --base`).
    #[arg(long, default_value = "/dev/shm")]
    base: PathBuf,
    /// The Aeron directory to check for a dead media driver's files (default `AERON_DIR`, or
    /// Aeron's default).
    #[arg(long)]
    aeron_dir: Option<PathBuf>,
    /// Say what would be removed; remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// How long a producer's regions must have been idle (no activity time stamp refreshed)
    /// before they go, whatever its pid says (`10s`, `1m`): a pid may be reused, or belong to
    /// another pid namespace.
    #[arg(long, default_value = "10s", value_parser = super::demo::parse_duration)]
    grace: Duration,
}

/// Why an epoch directory may go, or `None` while its producer may live.
fn stale(epoch: &Path, grace: Duration, now_ns: u64) -> Option<String> {
    let ring = epoch.join("header.ring");
    match xmem_tensorpool::region::Region::open_any(&ring) {
        Ok(r) => {
            let sb = r.superblock();
            let idle = Duration::from_nanos(now_ns.saturating_sub(r.activity_ns()));
            let alive = u32::try_from(sb.pid).is_ok_and(xmem_core::os::process::exists);
            (!alive && idle >= grace).then(|| {
                format!(
                    "stream {} epoch {}: producer pid {} is gone, idle for {}",
                    sb.stream_id,
                    sb.epoch,
                    sb.pid,
                    fmt::duration(idle)
                )
            })
        }
        // Half made by a producer that died while creating it, or damaged: judged by age.
        Err(e) => {
            let age = std::fs::metadata(epoch)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            (age >= grace).then(|| {
                format!(
                    "its header ring cannot be used ({e}), untouched for {}",
                    fmt::duration(age)
                )
            })
        }
    }
}

fn subdirs(p: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(p)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

pub(crate) fn clean(args: CleanArgs) -> Result<()> {
    // Producers stamp activity with the monotonic clock (one host, one clock).
    let now_ns = xmem_core::os::time::monotonic_ns();
    let verb = if args.dry_run { "would remove" } else { "removed" };
    let mut acted = 0;
    let roots = subdirs(&args.base).into_iter().filter(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("tensorpool-"))
    });
    for root in roots {
        for ns in subdirs(&root) {
            for stream in subdirs(&ns) {
                for epoch in subdirs(&stream) {
                    if let Some(why) = stale(&epoch, args.grace, now_ns) {
                        if !args.dry_run {
                            std::fs::remove_dir_all(&epoch)?;
                        }
                        outln!("{}: {verb} ({why})", epoch.display())?;
                        acted += 1;
                    }
                }
                // Directories the layout made and nothing uses any more.
                if !args.dry_run {
                    let _ = std::fs::remove_dir(&stream);
                }
            }
            if !args.dry_run {
                let _ = std::fs::remove_dir(&ns);
            }
        }
        if !args.dry_run {
            let _ = std::fs::remove_dir(&root);
        }
    }
    let aeron = args.aeron_dir.unwrap_or_else(xmem_aeron::default_dir);
    if let DriverStatus::Dead { pid, silent_for } = xmem_aeron::dir::driver_status(&aeron) {
        if !args.dry_run {
            std::fs::remove_dir_all(&aeron)?;
        }
        outln!(
            "{}: {verb} (media driver pid {pid} is gone, silent for {})",
            aeron.display(),
            fmt::duration(silent_for)
        )?;
        acted += 1;
    }
    if acted == 0 {
        outln!(
            "nothing to clean under {} or in {}",
            args.base.display(),
            aeron.display()
        )?;
    }
    Ok(())
}
