//! Where an object's pages come from: huge pages, a NUMA node, locked in RAM.
//!
//! Shared-memory files get huge pages by living on a hugetlbfs mount (tmpfs huge pages depend
//! on a kernel setting most systems leave off), so "huge pages" here means "place the file on
//! hugetlbfs". Every function returns a reason a person can act on when the machine cannot.

use std::ffi::c_void;
use std::path::{Path, PathBuf};

/// `f_type` of a hugetlbfs file system.
const HUGETLBFS_MAGIC: u64 = 0x958458f6;

/// A mounted hugetlbfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HugeTlbMount {
    /// Mount point.
    pub path: PathBuf,
    /// Huge page size in bytes.
    pub page_size: u64,
}

/// The default huge page size (`Hugepagesize` in `/proc/meminfo`), if the kernel has one.
pub fn default_huge_page_size() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("Hugepagesize:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn parse_size(s: &str) -> Option<u64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "" => n,
        "K" | "k" => n << 10,
        "M" | "m" => n << 20,
        "G" | "g" => n << 30,
        _ => return None,
    })
}

/// Every hugetlbfs mount, from `/proc/mounts`.
pub fn hugetlbfs_mounts() -> Vec<HugeTlbMount> {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return Vec::new();
    };
    mounts
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (_dev, path, fstype, opts) = (f.next()?, f.next()?, f.next()?, f.next()?);
            if fstype != "hugetlbfs" {
                return None;
            }
            let page_size = opts
                .split(',')
                .find_map(|o| o.strip_prefix("pagesize=").and_then(parse_size))
                .or_else(default_huge_page_size)?;
            Some(HugeTlbMount {
                path: PathBuf::from(path.replace("\\040", " ")),
                page_size,
            })
        })
        .collect()
}

/// The hugetlbfs mount `dir` is on, if it is one.
pub fn hugetlbfs_at(dir: &Path) -> Option<HugeTlbMount> {
    let st = rustix::fs::statfs(dir).ok()?;
    if st.f_type as u64 != HUGETLBFS_MAGIC {
        return None;
    }
    Some(HugeTlbMount {
        path: dir.to_path_buf(),
        page_size: st.f_bsize as u64,
    })
}

/// Free huge pages of `page_size` bytes.
pub fn free_huge_pages(page_size: u64) -> u64 {
    std::fs::read_to_string(format!(
        "/sys/kernel/mm/hugepages/hugepages-{}kB/free_hugepages",
        page_size / 1024
    ))
    .ok()
    .and_then(|s| s.trim().parse().ok())
    .unwrap_or(0)
}

/// The NUMA nodes this machine has (`/sys/devices/system/node/nodeN`).
pub fn numa_nodes() -> Vec<u32> {
    let mut nodes: Vec<u32> = std::fs::read_dir("/sys/devices/system/node")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("node")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    nodes.sort_unstable();
    nodes
}

/// Binds the pages of `[ptr, ptr+len)` to NUMA node `node` (`mbind(MPOL_BIND)`), moving pages
/// already allocated. `Err` says why not.
pub fn bind_to_node(ptr: *mut u8, len: usize, node: u32) -> Result<(), String> {
    const MPOL_BIND: libc::c_long = 2;
    const MPOL_MF_STRICT: libc::c_ulong = 1;
    const MPOL_MF_MOVE: libc::c_ulong = 2;
    let nodes = numa_nodes();
    if !nodes.contains(&node) {
        return Err(format!("this machine has no NUMA node {node} (it has {nodes:?})"));
    }
    if node >= 64 {
        return Err(format!(
            "NUMA node {node} is beyond the 64 nodes xmem can bind to"
        ));
    }
    let mask: libc::c_ulong = 1 << node;
    // SAFETY: the range is a mapping the caller owns; mbind changes where its pages live, not
    // their contents; `mask` outlives the call and holds `maxnode` = 64 bits.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            ptr.cast::<c_void>(),
            len,
            MPOL_BIND,
            &mask as *const libc::c_ulong,
            64 as libc::c_ulong,
            MPOL_MF_STRICT | MPOL_MF_MOVE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    Err(match err.raw_os_error() {
        Some(libc::ENOSYS) => "this kernel was built without NUMA support".into(),
        Some(libc::EPERM) => format!("binding to node {node} was refused ({err}); it needs CAP_SYS_NICE for pages shared with other processes"),
        _ => format!("mbind to node {node} failed: {err}"),
    })
}

/// Locks `[ptr, ptr+len)` in RAM (`mlock`). `Err` says what limit to raise.
pub fn lock_in_memory(ptr: *mut u8, len: usize) -> Result<(), String> {
    // SAFETY: the range is a mapping the caller owns; mlock does not change its contents.
    match unsafe { rustix::mm::mlock(ptr.cast::<c_void>(), len) } {
        Ok(()) => Ok(()),
        Err(e) => Err(format!(
            "mlock of {len} bytes failed ({e}); raise the locked-memory limit (`ulimit -l`, \
             LimitMEMLOCK= in a systemd unit) or give the process CAP_IPC_LOCK"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("x"), None);
    }

    #[test]
    fn this_machine_has_node_zero_and_refuses_others() {
        let nodes = numa_nodes();
        if nodes.is_empty() {
            eprintln!("skipped: /sys shows no NUMA nodes");
            return;
        }
        let err = bind_to_node(std::ptr::null_mut(), 0, 999).unwrap_err();
        assert!(err.contains("no NUMA node 999"), "{err}");
    }

    #[test]
    fn tmp_is_not_hugetlbfs() {
        assert_eq!(hugetlbfs_at(Path::new("/tmp")), None);
        for m in hugetlbfs_mounts() {
            assert!(m.page_size.is_power_of_two());
        }
    }
}
