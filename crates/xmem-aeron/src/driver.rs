//! A media driver on a thread of this process (Aeron's "embedded" driver).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use rusteron_media_driver::bindings::aeron_threading_mode_enum;
use rusteron_media_driver::{AeronDriver, AeronDriverContext, IntoCString};

use crate::dir::{driver_status, DriverStatus};
use crate::error::{Error, Result};

/// How an embedded media driver is set up.
#[derive(Debug, Clone)]
pub struct DriverOptions {
    /// Its directory; `None` is [`crate::default_dir`].
    pub dir: Option<PathBuf>,
    /// Term length of IPC logs whose channel names none (Aeron's default is 64 MiB, three of
    /// which make one log: 192 MiB of /dev/shm). The tensor-pool channel names 4 MiB itself.
    pub ipc_term_length: u32,
    /// Term length of UDP logs whose channel names none (Aeron's default is 16 MiB).
    pub udp_term_length: u32,
    /// How long a client may go without a heartbeat before the driver drops it (Aeron: 10 s).
    pub client_liveness_timeout: Duration,
}

impl Default for DriverOptions {
    fn default() -> Self {
        DriverOptions {
            dir: None,
            ipc_term_length: 4 << 20,
            udp_term_length: 4 << 20,
            client_liveness_timeout: Duration::from_secs(10),
        }
    }
}

/// A media driver running on a thread of this process, stopped (and its directory removed) when
/// dropped. Clients of other processes may use it while it runs.
pub struct MediaDriver {
    dir: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    replaced: Option<DriverStatus>,
}

impl MediaDriver {
    /// Starts a driver in `opts.dir`. A directory left by a dead driver is replaced at once (its
    /// files are deleted on start); one with a live driver is refused ([`Error::DriverRunning`]).
    pub fn launch(opts: &DriverOptions) -> Result<MediaDriver> {
        let dir = opts.dir.clone().unwrap_or_else(crate::default_dir);
        let status = driver_status(&dir);
        let replaced = match status {
            DriverStatus::Active { pid } => return Err(Error::DriverRunning { dir, pid }),
            DriverStatus::Absent => None,
            other => Some(other),
        };
        let start = |what: &'static str, e: rusteron_media_driver::AeronCError| Error::DriverStart {
            dir: dir.clone(),
            detail: format!("{what}: {e}"),
        };
        let ctx = AeronDriverContext::new().map_err(|e| start("context", e))?;
        let dir_str = dir.to_str().ok_or_else(|| Error::DriverStart {
            dir: dir.clone(),
            detail: "the directory's name is not UTF-8".into(),
        })?;
        ctx.set_dir(&dir_str.into_c_string())
            .map_err(|e| start("dir", e))?;
        // Delete on start: no live driver is there (checked above), so what is there is a dead
        // one's, and Aeron would otherwise wait out its timeout (up to 20 s) before refusing.
        ctx.set_dir_delete_on_start(true)
            .map_err(|e| start("delete on start", e))?;
        ctx.set_dir_delete_on_shutdown(true)
            .map_err(|e| start("delete on shutdown", e))?;
        // One thread for the conductor, sender and receiver: xmem's control plane is light, and
        // the machines it runs on are often small.
        ctx.set_threading_mode(aeron_threading_mode_enum::AERON_THREADING_MODE_SHARED)
            .map_err(|e| start("threading mode", e))?;
        ctx.set_ipc_term_buffer_length(opts.ipc_term_length as usize)
            .map_err(|e| start("ipc term length", e))?;
        ctx.set_term_buffer_length(opts.udp_term_length as usize)
            .map_err(|e| start("term length", e))?;
        ctx.set_client_liveness_timeout_ns(opts.client_liveness_timeout.as_nanos() as u64)
            .map_err(|e| start("client liveness timeout", e))?;

        let stop = Arc::new(AtomicBool::new(false));
        let (started_tx, started_rx) = mpsc::channel::<std::result::Result<(), String>>();
        let stop_flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("aeron-driver".into())
            .spawn(move || {
                let driver = match AeronDriver::new(&ctx).and_then(|d| d.start(true).map(|_| d)) {
                    Ok(d) => d,
                    Err(e) => {
                        let _ = started_tx.send(Err(e.capture_errmsg().to_string()));
                        return;
                    }
                };
                let _ = started_tx.send(Ok(()));
                while !stop_flag.load(Ordering::Acquire) {
                    match driver.main_do_work() {
                        Ok(work) => driver.main_idle_strategy(work),
                        Err(e) => {
                            tracing::error!("the embedded media driver stopped: {e}");
                            break;
                        }
                    }
                }
                // Dropping the driver closes it and, with delete-on-shutdown, removes its files.
                drop(driver);
            })
            .map_err(|e| Error::DriverStart {
                dir: dir.clone(),
                detail: format!("spawning its thread: {e}"),
            })?;
        match started_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(detail)) => {
                let _ = thread.join();
                return Err(Error::DriverStart { dir, detail });
            }
            Err(_) => {
                let _ = thread.join();
                return Err(Error::DriverStart {
                    dir,
                    detail: "its thread ended during start".into(),
                });
            }
        }
        if let Some(old) = &replaced {
            tracing::info!(dir = %dir.display(), "replaced the files of a media driver that is gone ({old:?})");
        }
        Ok(MediaDriver {
            dir,
            stop,
            thread: Some(thread),
            replaced,
        })
    }

    /// The driver's directory, for clients.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What was in the directory before (a dead driver's files), if anything.
    pub fn replaced(&self) -> Option<&DriverStatus> {
        self.replaced.as_ref()
    }

    /// Whether the driver's thread still runs.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for MediaDriver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
