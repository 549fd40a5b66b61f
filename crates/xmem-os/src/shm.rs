//! Shared-memory files: named objects in a shared-memory directory, and anonymous memfds.
//!
//! On Linux a POSIX shared-memory object *is* a file in `/dev/shm` (glibc's `shm_open` opens
//! `/dev/shm/NAME`), so xmem opens them as files in a directory. That lets the same code place
//! objects in another tmpfs or a hugetlbfs mount, and lets `xmem ls` list them with `readdir`.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use super::error::{OsError as Error, Result};

/// Environment variable that moves the default shared-memory directory (default `/dev/shm`).
pub const SHM_DIR_ENV: &str = "XMEM_SHM_DIR";

/// A directory holding shared-memory objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShmDir {
    path: PathBuf,
}

impl Default for ShmDir {
    /// `$XMEM_SHM_DIR` if set, else `/dev/shm`.
    fn default() -> Self {
        let path = std::env::var_os(SHM_DIR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/dev/shm"));
        ShmDir { path }
    }
}

impl ShmDir {
    /// A directory at `path` (a tmpfs or hugetlbfs mount).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ShmDir { path: path.into() }
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of the file named `file_name` in this directory.
    pub fn join(&self, file_name: &str) -> PathBuf {
        self.path.join(file_name)
    }

    /// Names of the files in the directory (not recursive).
    pub fn list(&self) -> Result<Vec<String>> {
        let entries = std::fs::read_dir(&self.path).map_err(|e| Error::os("list", &self.path, e))?;
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        Ok(names)
    }
}

fn missing_directory(op: &'static str, path: &Path) -> Error {
    Error::os(
        op,
        path,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the shared-memory directory does not exist",
        ),
    )
}

/// An open shared-memory file (named or anonymous).
#[derive(Debug)]
pub struct ShmFile {
    fd: OwnedFd,
    path: PathBuf,
}

/// Outcome of [`ShmFile::create_exclusive`].
pub enum Created {
    /// The file was created by this call.
    New(ShmFile),
    /// A file of that name already exists.
    Exists,
}

impl ShmFile {
    /// Creates `path` exclusively (`O_CREAT|O_EXCL`) with exactly `mode` (the umask is undone).
    pub fn create_exclusive(path: &Path, mode: u32) -> Result<Created> {
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        match rfs::open(path, flags, Mode::from_raw_mode(mode)) {
            Ok(fd) => {
                let file = ShmFile {
                    fd,
                    path: path.to_path_buf(),
                };
                // open() applies the umask; a pool asked to be 0o660 must really be 0o660.
                rfs::fchmod(&file.fd, Mode::from_raw_mode(mode)).map_err(|e| Error::os("chmod", path, e))?;
                Ok(Created::New(file))
            }
            Err(Errno::EXIST) => Ok(Created::Exists),
            Err(Errno::NOENT) => Err(missing_directory("create", path)),
            Err(e) => Err(Error::os("create", path, e)),
        }
    }

    /// Creates an unnamed file in `path`'s directory (`O_TMPFILE`) that becomes `path` only when
    /// [`ShmFile::publish`] links it there: nobody sees it half made, and a creator that dies
    /// before publishing leaves nothing behind. `Ok(None)` where the filesystem cannot do this.
    pub fn create_unnamed(path: &Path, mode: u32) -> Result<Option<ShmFile>> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let flags = OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC;
        match rfs::open(dir, flags, Mode::from_raw_mode(mode)) {
            Ok(fd) => {
                let file = ShmFile {
                    fd,
                    path: path.to_path_buf(),
                };
                rfs::fchmod(&file.fd, Mode::from_raw_mode(mode)).map_err(|e| Error::os("chmod", path, e))?;
                Ok(Some(file))
            }
            // Filesystems (and old kernels) without O_TMPFILE.
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => Ok(None),
            Err(Errno::NOENT) => Err(missing_directory("create", path)),
            Err(e) => Err(Error::os("create", path, e)),
        }
    }

    /// Gives a file made by [`ShmFile::create_unnamed`] its name, atomically and never replacing
    /// another file: `Ok(false)` if the name is taken (this file then stays unnamed).
    pub fn publish(&self) -> Result<bool> {
        let cwd = rfs::CWD;
        let linked = match rfs::linkat(&self.fd, "", cwd, &self.path, rfs::AtFlags::EMPTY_PATH) {
            // Without CAP_DAC_READ_SEARCH older kernels refuse AT_EMPTY_PATH; /proc does the same.
            Err(Errno::NOENT | Errno::PERM) => {
                let fd = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&self.fd));
                rfs::linkat(cwd, fd.as_str(), cwd, &self.path, rfs::AtFlags::SYMLINK_FOLLOW)
            }
            other => other,
        };
        match linked {
            Ok(()) => Ok(true),
            Err(Errno::EXIST) => Ok(false),
            Err(e) => Err(Error::os("publish", &self.path, e)),
        }
    }

    /// Opens an existing file read-write. `Ok(None)` if it does not exist.
    pub fn open(path: &Path) -> Result<Option<ShmFile>> {
        Self::open_with(path, OFlags::RDWR)
    }

    /// Opens an existing file read-only. `Ok(None)` if it does not exist.
    pub fn open_read_only(path: &Path) -> Result<Option<ShmFile>> {
        Self::open_with(path, OFlags::RDONLY)
    }

    fn open_with(path: &Path, access: OFlags) -> Result<Option<ShmFile>> {
        let flags = access | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK;
        match rfs::open(path, flags, Mode::empty()) {
            Ok(fd) => {
                let file = ShmFile {
                    fd,
                    path: path.to_path_buf(),
                };
                // Refuse FIFOs, devices and directories before anyone maps them.
                let st = rfs::fstat(&file.fd).map_err(|e| Error::os("stat", path, e))?;
                if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::RegularFile {
                    return Err(Error::NotXmem {
                        path: path.to_path_buf(),
                        detail: "not a regular file".into(),
                    });
                }
                Ok(Some(file))
            }
            Err(Errno::NOENT) => Ok(None),
            Err(Errno::LOOP) => Err(Error::NotXmem {
                path: path.to_path_buf(),
                detail: "a symbolic link".into(),
            }),
            Err(e) => Err(Error::os("open", path, e)),
        }
    }

    /// Creates an anonymous shared-memory file (memfd); share it by passing the descriptor.
    pub fn anonymous(debug_name: &str) -> Result<ShmFile> {
        let fd = rfs::memfd_create(
            debug_name,
            rfs::MemfdFlags::CLOEXEC | rfs::MemfdFlags::ALLOW_SEALING,
        )
        .map_err(|e| Error::os("memfd_create", debug_name, e))?;
        Ok(ShmFile {
            fd,
            path: PathBuf::from(format!("memfd:{debug_name}")),
        })
    }

    /// Fixes the size of a memfd for good (seals against shrinking and growing, and against
    /// removing the seals): a process it is passed to cannot truncate it under the others'
    /// mappings, which would kill them with SIGBUS. Named files cannot be sealed.
    pub fn seal_size(&self) -> Result<()> {
        rfs::fcntl_add_seals(
            &self.fd,
            rfs::SealFlags::SHRINK | rfs::SealFlags::GROW | rfs::SealFlags::SEAL,
        )
        .map_err(|e| Error::os("seal", &self.path, e))
    }

    /// Wraps a descriptor received from another process (an anonymous pool's memfd).
    pub fn from_fd(fd: OwnedFd) -> Result<ShmFile> {
        let path = PathBuf::from(format!("fd:{}", std::os::fd::AsRawFd::as_raw_fd(&fd)));
        let st = rfs::fstat(&fd).map_err(|e| Error::os("stat", &path, e))?;
        if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::RegularFile {
            return Err(Error::NotXmem {
                path,
                detail: "not a regular file".into(),
            });
        }
        Ok(ShmFile { fd, path })
    }

    /// The file's path (or a `memfd:`/`fd:` description).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's size in bytes.
    pub fn size(&self) -> Result<u64> {
        let st = rfs::fstat(&self.fd).map_err(|e| Error::os("stat", &self.path, e))?;
        Ok(st.st_size as u64)
    }

    /// `(device, inode)`: the identity of the underlying object, the same in every process.
    pub fn identity(&self) -> Result<(u64, u64)> {
        let st = rfs::fstat(&self.fd).map_err(|e| Error::os("stat", &self.path, e))?;
        Ok((st.st_dev, st.st_ino))
    }

    /// Who may open the file: what a descriptor broker admits for the object (see
    /// [`fdpass`](crate::fdpass)).
    pub fn admission(&self) -> Result<crate::fdpass::Admission> {
        let st = rfs::fstat(&self.fd).map_err(|e| Error::os("stat", &self.path, e))?;
        Ok(crate::fdpass::Admission {
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode & 0o777,
        })
    }

    /// The file's last modification time in nanoseconds since the epoch.
    pub fn modified_unix_ns(&self) -> Result<u64> {
        let st = rfs::fstat(&self.fd).map_err(|e| Error::os("stat", &self.path, e))?;
        Ok(mtime_ns(&st))
    }

    /// Sets the file's size (no memory is allocated yet).
    pub fn set_size(&self, size: u64) -> Result<()> {
        rfs::ftruncate(&self.fd, size).map_err(|e| self.space_error("truncate", size, e))
    }

    /// Allocates the file's memory now, so that running out of space is an error here and not a
    /// `SIGBUS` on first touch.
    pub fn reserve(&self, size: u64) -> Result<()> {
        match rfs::fallocate(&self.fd, rfs::FallocateFlags::empty(), 0, size) {
            Ok(()) => Ok(()),
            // Some file systems cannot preallocate; the size is set, touching will allocate.
            Err(Errno::OPNOTSUPP) | Err(Errno::NOSYS) => Ok(()),
            Err(e) => Err(self.space_error("allocate", size, e)),
        }
    }

    /// [`set_size`](Self::set_size) then [`reserve`](Self::reserve).
    pub fn allocate(&self, size: u64) -> Result<()> {
        self.set_size(size)?;
        self.reserve(size)
    }

    fn space_error(&self, op: &'static str, size: u64, e: Errno) -> Error {
        if e == Errno::NOSPC || e == Errno::NOMEM || e == Errno::FBIG {
            Error::NoSpace {
                dir: self.path.parent().map(Path::to_path_buf).unwrap_or_default(),
                needed: size,
            }
        } else {
            Error::os(op, &self.path, e)
        }
    }

    /// Takes an exclusive `flock`, waiting for it.
    pub fn lock_exclusive(&self) -> Result<()> {
        rfs::flock(&self.fd, FlockOperation::LockExclusive).map_err(|e| Error::os("lock", &self.path, e))
    }

    /// Tries an exclusive `flock`; `Ok(false)` if another open file description holds a lock.
    pub fn try_lock_exclusive(&self) -> Result<bool> {
        self.try_lock(FlockOperation::NonBlockingLockExclusive)
    }

    /// Tries a shared `flock`; `Ok(false)` if another open file description holds it exclusively.
    pub fn try_lock_shared(&self) -> Result<bool> {
        self.try_lock(FlockOperation::NonBlockingLockShared)
    }

    fn try_lock(&self, op: FlockOperation) -> Result<bool> {
        match rfs::flock(&self.fd, op) {
            Ok(()) => Ok(true),
            Err(Errno::WOULDBLOCK) => Ok(false),
            Err(e) => Err(Error::os("lock", &self.path, e)),
        }
    }

    /// Releases this file description's `flock`.
    pub fn unlock(&self) -> Result<()> {
        rfs::flock(&self.fd, FlockOperation::Unlock).map_err(|e| Error::os("unlock", &self.path, e))
    }

    /// Whether the descriptor was opened writable.
    pub fn is_writable(&self) -> bool {
        rustix::fs::fcntl_getfl(&self.fd)
            .map(|f| f.contains(OFlags::RDWR) || f.contains(OFlags::WRONLY))
            .unwrap_or(false)
    }

    /// Duplicates the descriptor (for handing an anonymous object to another process).
    pub fn try_clone_fd(&self) -> Result<OwnedFd> {
        self.fd.try_clone().map_err(|e| Error::os("dup", &self.path, e))
    }
}

impl AsFd for ShmFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Who owns a file and how it may be opened, read without opening it (`lstat`): what `xmem ls`
/// says of an object this process may not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStatus {
    /// The owner's uid.
    pub uid: u32,
    /// Permission bits (`0o600`…).
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, ns since the epoch.
    pub modified_unix_ns: u64,
    /// `(device, inode)`, as [`ShmFile::identity`] gives for an open file.
    pub identity: (u64, u64),
}

/// The status of the file at `path` (a link is not followed); `Ok(None)` if there is none.
pub fn file_status(path: &Path) -> Result<Option<FileStatus>> {
    match rfs::lstat(path) {
        Ok(st) => Ok(Some(FileStatus {
            uid: st.st_uid,
            mode: st.st_mode & 0o7777,
            size: st.st_size as u64,
            modified_unix_ns: mtime_ns(&st),
            identity: (st.st_dev, st.st_ino),
        })),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(Error::os("stat", path, e)),
    }
}

/// Removes the file at `path`. `Ok(false)` if it was already gone.
pub fn unlink(path: &Path) -> Result<bool> {
    match rfs::unlink(path) {
        Ok(()) => Ok(true),
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(Error::os("remove", path, e)),
    }
}

/// A stat's modification time in ns since the epoch.
#[allow(clippy::unnecessary_cast)] // the field types differ between architectures
fn mtime_ns(st: &rfs::Stat) -> u64 {
    (st.st_mtime as u64).saturating_mul(1_000_000_000) + st.st_mtime_nsec as u64
}

/// Unlinks `path` only if it still names the object whose `(device, inode)` is `identity` (not
/// a newer object of that name). Looks by `lstat`, so it works without a free file descriptor.
pub fn unlink_if_same(path: &Path, identity: (u64, u64)) -> Result<bool> {
    match file_status(path)? {
        Some(st) if st.identity == identity => unlink(path),
        _ => Ok(false),
    }
}
