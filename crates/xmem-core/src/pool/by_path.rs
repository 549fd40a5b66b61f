//! Looking at a pool by its path without attaching: inspecting, reclaiming dead processes'
//! references, removing it when unused (what `xmem inspect` and `xmem clean` do).

use super::*;

/// Inspects the pool called `name` without attaching to it.
pub fn inspect(name: &str) -> Result<PoolSnapshot> {
    inspect_path(&object::path_of(&ShmDir::default(), name)?, name)
}

/// Inspects the pool at `path` without attaching to it.
pub fn inspect_path(path: &Path, label: &str) -> Result<PoolSnapshot> {
    let obj =
        object::open(path, &open_spec(false, false, object::DEFAULT_OPEN_TIMEOUT))?.ok_or_else(|| {
            Error::NotFound {
                name: label.to_string(),
                path: path.to_path_buf(),
            }
        })?;
    Ok(inspect::snapshot(&PoolMap::new(label.to_string(), obj)?))
}

/// Returns the references of dead processes in the pool at `path` without attaching to it.
/// With `dry_run`, only reports them.
pub fn reclaim_path(path: &Path, dry_run: bool) -> Result<ReclaimReport> {
    let obj =
        object::open(path, &open_spec(!dry_run, false, object::DEFAULT_OPEN_TIMEOUT))?.ok_or_else(|| {
            Error::NotFound {
                name: path.display().to_string(),
                path: path.to_path_buf(),
            }
        })?;
    let map = PoolMap::new(path.display().to_string(), obj)?;
    Ok(registry::sweep(&map, ProcessIdentity::current(), dry_run))
}

/// What `clean_path` did (or would do, on a dry run).
#[derive(Debug, Clone, Default)]
pub struct CleanReport {
    /// Dead processes' references returned.
    pub reclaimed: ReclaimReport,
    /// Whether the pool was removed (nobody alive uses it).
    pub removed: bool,
}

/// Reclaims dead processes' references in the pool at `path` without attaching to it, and
/// removes the pool if no live process uses it. With `dry_run`, changes nothing.
pub fn clean_path(path: &Path, dry_run: bool) -> Result<CleanReport> {
    let obj =
        object::open(path, &open_spec(!dry_run, false, object::DEFAULT_OPEN_TIMEOUT))?.ok_or_else(|| {
            Error::NotFound {
                name: path.display().to_string(),
                path: path.to_path_buf(),
            }
        })?;
    let map = PoolMap::new(path.display().to_string(), obj)?;
    let reclaimed = registry::sweep(&map, ProcessIdentity::current(), dry_run);
    let removed = if dry_run {
        map.slots().iter().all(|s| {
            let owner = registry::Owner::decode(s.owner.load(Acquire));
            owner.state == SlotState::Free || owner.liveness() == crate::os::Liveness::Dead
        })
    } else {
        close_if_unused(&map, path)?
    };
    Ok(CleanReport { reclaimed, removed })
}
