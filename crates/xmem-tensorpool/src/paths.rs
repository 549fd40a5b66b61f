//! Where regions live (§2.6): the canonical layout a producer creates, and the checks a consumer
//! makes before it maps what an announce names.
//!
//! Producers write `<base>/tensorpool-<user>/<namespace>/<stream_id>/<epoch>/header.ring` and
//! `…/<epoch>/<pool_id>.pool`. Consumers never derive or scan paths: they take the announced
//! URI, resolve it, require it inside one of their allowed directories, open it component by
//! component without following a symlink, and check that what they opened is the regular file
//! they resolved (same device and inode), with the permission policy they were given.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use crate::error::{Error, Result};

/// `statfs` magic of hugetlbfs.
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

fn io(path: &Path, what: &'static str, detail: impl ToString) -> Error {
    Error::Io {
        what,
        path: path.to_path_buf(),
        detail: detail.to_string(),
    }
}

/// The canonical directory layout of one producer's regions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The layout under `base` (`/dev/shm` by default) for `namespace` (`[A-Za-z0-9_-]+`), for the
    /// effective user.
    pub fn new(base: impl Into<PathBuf>, namespace: &str) -> Result<Layout> {
        let base = base.into();
        if !base.is_absolute() {
            return Err(io(&base, "use the base directory", "it must be an absolute path"));
        }
        if namespace.is_empty()
            || !namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(Error::Invalid {
                field: "namespace",
                value: namespace.len() as i128,
                rule: "a namespace is one or more of A-Z a-z 0-9 _ -",
            });
        }
        let user = sanitize_user(effective_user_name().as_deref());
        Ok(Layout {
            root: base.join(format!("tensorpool-{user}")).join(namespace),
        })
    }

    /// `<base>/tensorpool-<user>/<namespace>`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of one epoch of a stream.
    pub fn epoch_dir(&self, stream_id: u32, epoch: u64) -> PathBuf {
        self.root.join(stream_id.to_string()).join(epoch.to_string())
    }

    /// The header ring of one epoch of a stream.
    pub fn header_ring(&self, stream_id: u32, epoch: u64) -> PathBuf {
        self.epoch_dir(stream_id, epoch).join("header.ring")
    }

    /// Payload pool `pool_id` of one epoch of a stream.
    pub fn pool(&self, stream_id: u32, epoch: u64, pool_id: u16) -> PathBuf {
        self.epoch_dir(stream_id, epoch).join(format!("{pool_id}.pool"))
    }
}

/// The user name as it appears in paths: anything outside `[A-Za-z0-9_-]` becomes `_`; no name
/// is `unknown` (as the C implementation).
pub fn sanitize_user(name: Option<&str>) -> String {
    match name {
        Some(n) if !n.is_empty() => n
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect(),
        _ => "unknown".into(),
    }
}

/// The effective user's login name, from the password database.
fn effective_user_name() -> Option<String> {
    let uid = rustix::process::geteuid().as_raw();
    let mut buf = vec![0u8; 4096];
    // SAFETY: an all-zero `passwd` is a valid value of a plain C struct (null pointers, zeros).
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is to a live local of the right type; `buf` is writable for its
    // length; getpwuid_r writes only there and into `pwd`/`result`.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr().cast(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: on success `pw_name` points to a NUL-terminated string inside `buf`, alive here.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    name.to_str().ok().map(str::to_string)
}

/// The directories a consumer may map regions from, and its permission policy.
#[derive(Debug, Clone)]
pub struct AllowedDirs {
    dirs: Vec<PathBuf>,
    forbidden_mode: u32,
    owner: Option<u32>,
}

impl AllowedDirs {
    /// Allows regions under `dirs`, each canonicalized now (once, at start-up). A directory that
    /// does not exist is an error: it would allow nothing.
    pub fn new<P: AsRef<Path>>(dirs: impl IntoIterator<Item = P>) -> Result<AllowedDirs> {
        let dirs = dirs
            .into_iter()
            .map(|d| {
                let d = d.as_ref();
                std::fs::canonicalize(d).map_err(|e| io(d, "resolve the allowed directory", e))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AllowedDirs {
            dirs,
            forbidden_mode: 0,
            owner: None,
        })
    }

    /// Refuses files with any of these mode bits (e.g. `0o002`, world-writable).
    pub fn forbid_mode_bits(mut self, bits: u32) -> AllowedDirs {
        self.forbidden_mode = bits;
        self
    }

    /// Refuses files not owned by this uid.
    pub fn require_owner(mut self, uid: u32) -> AllowedDirs {
        self.owner = Some(uid);
        self
    }

    /// The canonical allowed directories.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Opens the region file `path` read-only after the checks of §2.6, and, when
    /// `require_hugepages`, checks it is on hugetlbfs. Fails closed.
    pub fn open(&self, path: &Path, require_hugepages: bool) -> Result<File> {
        self.open_checked(path, require_hugepages, false)
    }

    /// As [`AllowedDirs::open`], read-write: a producer in driver mode writes into the regions
    /// its driver created (and never creates, truncates or unlinks them).
    pub fn open_writable(&self, path: &Path, require_hugepages: bool) -> Result<File> {
        self.open_checked(path, require_hugepages, true)
    }

    fn open_checked(&self, path: &Path, require_hugepages: bool, writable: bool) -> Result<File> {
        // (1) Absolute.
        if !path.is_absolute() {
            return Err(io(path, "open", "a region path must be absolute"));
        }
        // (2) Resolved.
        let resolved = std::fs::canonicalize(path).map_err(|e| io(path, "resolve", e))?;
        // (4) Inside an allowed directory: a prefix followed by `/` or the end.
        if !self.dirs.iter().any(|d| resolved.starts_with(d)) {
            return Err(io(
                &resolved,
                "open",
                format!("outside the allowed directories {:?}", self.dirs),
            ));
        }
        // (6) Walked from `/` one component at a time, never following a symlink.
        let mut dir = rustix::fs::open(
            "/",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io(&resolved, "open", e))?;
        let components: Vec<Component> = resolved.components().collect();
        let last = components.len() - 1;
        for (i, c) in components.iter().enumerate() {
            let Component::Normal(name) = c else { continue };
            let access = if writable { OFlags::RDWR } else { OFlags::RDONLY };
            let flags = if i == last {
                access | OFlags::NOFOLLOW | OFlags::CLOEXEC
            } else {
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::DIRECTORY | OFlags::CLOEXEC
            };
            dir = rustix::fs::openat(&dir, *name, flags, Mode::empty()).map_err(|e| {
                io(
                    &resolved,
                    "open",
                    format!("{e} at component {name:?} (a symlink is refused)"),
                )
            })?;
        }
        let file = File::from(dir);
        // (5) A regular file, and (6) the very file resolved.
        let st = rustix::fs::fstat(file.as_fd()).map_err(|e| io(&resolved, "stat", e))?;
        let mode = st.st_mode as u32;
        if mode & libc::S_IFMT != libc::S_IFREG {
            return Err(io(&resolved, "open", "not a regular file"));
        }
        let named = rustix::fs::stat(&resolved).map_err(|e| io(&resolved, "stat", e))?;
        if (named.st_dev, named.st_ino) != (st.st_dev, st.st_ino) {
            return Err(io(&resolved, "open", "the file changed while it was opened"));
        }
        // The permission policy.
        if mode & self.forbidden_mode != 0 {
            return Err(io(
                &resolved,
                "open",
                format!(
                    "mode {:o} has forbidden bits {:o}",
                    mode & 0o7777,
                    self.forbidden_mode
                ),
            ));
        }
        if let Some(uid) = self.owner {
            if st.st_uid != uid {
                return Err(io(
                    &resolved,
                    "open",
                    format!("owned by uid {}, not {uid}", st.st_uid),
                ));
            }
        }
        if require_hugepages {
            let fs = rustix::fs::fstatfs(file.as_fd()).map_err(|e| io(&resolved, "statfs", e))?;
            if fs.f_type as i64 != HUGETLBFS_MAGIC {
                return Err(io(
                    &resolved,
                    "open",
                    "require_hugepages=true but the file is not on hugetlbfs",
                ));
            }
        }
        Ok(file)
    }
}
