//! One Aeron client per process, its publications and subscriptions.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusteron_client::{
    Aeron, AeronContext, AeronFragmentClosureAssembler, AeronHeader, AeronOfferError, AeronPublication,
    AeronSubscription, Handlers, IntoCString,
};

use crate::dir::{driver_status, DriverStatus};
use crate::error::{Error, Result};

/// How a [`Client`] connects.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The Aeron directory; `None` is [`crate::default_dir`].
    pub dir: Option<PathBuf>,
    /// How long the driver may be silent before the client takes it for dead. tensor_pool_c uses
    /// 5 s (Aeron's default is 10 s).
    pub driver_timeout: Duration,
    /// The longest wait for the driver to add a publication or subscription.
    pub add_timeout: Duration,
    /// How long the client's conductor thread sleeps when it has nothing to do (Aeron: 16 ms);
    /// each add of a publication, subscription or counter waits about this long.
    pub conductor_idle: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            dir: None,
            driver_timeout: Duration::from_secs(5),
            add_timeout: Duration::from_secs(5),
            conductor_idle: Duration::from_millis(1),
        }
    }
}

/// Errors the client's conductor thread reported, kept for the thread that uses the client.
#[derive(Default)]
struct Reported {
    /// The first report that the driver is gone (a driver timeout closes the client).
    lost: Option<String>,
    /// How many reports came in all.
    count: u64,
}

/// Set with `Reported::lost`, read without the lock on every [`Client::check`].
type LostFlag = Arc<std::sync::atomic::AtomicBool>;

/// A connection to a media driver. Create one per process and share it: each client is a
/// conductor thread, a heartbeat and a set of mapped logs.
#[derive(Clone)]
pub struct Client {
    aeron: Aeron,
    dir: PathBuf,
    add_timeout: Duration,
    reported: Arc<Mutex<Reported>>,
    lost: LostFlag,
}

/// Aeron's client error codes for a driver that stopped answering (aeronc.h:
/// AERON_CLIENT_ERROR_DRIVER_TIMEOUT, _CLIENT_TIMEOUT, _CONDUCTOR_SERVICE_TIMEOUT).
const DRIVER_GONE_CODES: [i32; 3] = [-1000, -1001, -1002];

impl Client {
    /// Connects to the driver in `opts.dir`. A directory with no live driver is refused at once
    /// ([`Error::NoDriver`], saying what is there) instead of Aeron's wait of the driver timeout.
    pub fn connect(opts: &ClientOptions) -> Result<Client> {
        let dir = opts.dir.clone().unwrap_or_else(crate::default_dir);
        match driver_status(&dir) {
            DriverStatus::Active { .. } => {}
            DriverStatus::Absent => return Err(Error::NoDriver { dir, why: None }),
            DriverStatus::Dead { pid, silent_for } => {
                return Err(Error::NoDriver {
                    dir,
                    why: Some(format!(
                        "the driver that was there, pid {pid}, is gone: silent for {silent_for:?}"
                    )),
                })
            }
            DriverStatus::Unreadable(why) => return Err(Error::NoDriver { dir, why: Some(why) }),
        }
        let connect = |op: &str, e: rusteron_client::AeronCError| Error::Connect {
            dir: dir.clone(),
            detail: format!("{op}: {e}"),
        };
        let dir_str = dir.to_str().ok_or_else(|| Error::Connect {
            dir: dir.clone(),
            detail: "the directory's name is not UTF-8".into(),
        })?;
        let ctx = AeronContext::new().map_err(|e| connect("context", e))?;
        ctx.set_dir(&dir_str.into_c_string())
            .map_err(|e| connect("dir", e))?;
        ctx.set_driver_timeout_ms(opts.driver_timeout.as_millis() as u64)
            .map_err(|e| connect("driver timeout", e))?;
        // The client conductor sleeps this long when idle (Aeron's default: 16 ms). Every add
        // of a publication, subscription or counter waits for it at least once; at 1 ms a
        // tensor-pool driver's lease counters and a client's streams cost milliseconds, not
        // tens of them, for a conductor thread that wakes 1000 times a second.
        ctx.set_idle_sleep_duration_ns(opts.conductor_idle.as_nanos() as u64)
            .map_err(|e| connect("idle sleep", e))?;
        let reported = Arc::new(Mutex::new(Reported::default()));
        let sink = reported.clone();
        let lost: LostFlag = Arc::default();
        let lost_flag = lost.clone();
        let log_dir = dir.clone();
        ctx.set_error_handler(Some(move |code: i32, msg: &str| {
            // On Aeron's conductor thread: record, never panic (a panic here aborts).
            if let Ok(mut r) = sink.lock() {
                r.count += 1;
                if DRIVER_GONE_CODES.contains(&code) && r.lost.is_none() {
                    r.lost = Some(msg.to_string());
                    lost_flag.store(true, std::sync::atomic::Ordering::Release);
                }
            }
            tracing::warn!(dir = %log_dir.display(), code, "aeron: {msg}");
        }))
        .map_err(|e| connect("error handler", e))?;
        let aeron = Aeron::new(&ctx).map_err(|e| connect("client", e))?;
        aeron.start().map_err(|e| connect("start", e))?;
        Ok(Client {
            aeron,
            dir,
            add_timeout: opts.add_timeout,
            reported,
            lost,
        })
    }

    /// The Aeron directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `Err(DriverLost)` once the driver has stopped answering (the client is closed then and
    /// everything it made is dead; connect again when a driver runs).
    pub fn check(&self) -> Result<()> {
        if !self.lost.load(std::sync::atomic::Ordering::Acquire) && !self.aeron.is_closed() {
            return Ok(());
        }
        let lost = self.reported.lock().ok().and_then(|r| r.lost.clone());
        match lost {
            Some(detail) => Err(Error::DriverLost {
                dir: self.dir.clone(),
                detail,
            }),
            None if self.aeron.is_closed() => Err(Error::DriverLost {
                dir: self.dir.clone(),
                detail: "the Aeron client was closed".into(),
            }),
            None => Ok(()),
        }
    }

    /// Adds a publication (shared by every publisher of the stream in this driver). Waits for
    /// the driver at most the client's add timeout.
    pub fn publication(&self, channel: &str, stream_id: i32) -> Result<Publication> {
        let c = channel_cstr(channel)?;
        let add = |e: rusteron_client::AeronCError| Error::Add {
            what: "publication",
            channel: channel.to_string(),
            stream_id,
            detail: e.capture_errmsg().to_string(),
        };
        let poller = self.aeron.async_add_publication(&c, stream_id).map_err(add)?;
        let started = Instant::now();
        let inner = loop {
            match poller.poll().map_err(add)? {
                Some(p) => break p,
                None => self.wait_for_add(started, "publication", channel, stream_id)?,
            }
        };
        Ok(Publication {
            inner,
            channel: channel.to_string(),
            stream_id,
        })
    }

    /// Adds a subscription. Waits for the driver at most the client's add timeout.
    pub fn subscription(&self, channel: &str, stream_id: i32) -> Result<Subscription> {
        let c = channel_cstr(channel)?;
        let add = |e: rusteron_client::AeronCError| Error::Add {
            what: "subscription",
            channel: channel.to_string(),
            stream_id,
            detail: e.capture_errmsg().to_string(),
        };
        let poller = self
            .aeron
            .async_add_subscription(&c, stream_id, Handlers::NONE, Handlers::NONE)
            .map_err(add)?;
        let started = Instant::now();
        let inner = loop {
            match poller.poll().map_err(add)? {
                Some(s) => break s,
                None => self.wait_for_add(started, "subscription", channel, stream_id)?,
            }
        };
        let assembler = AeronFragmentClosureAssembler::new().map_err(|e| Error::Aeron {
            op: "fragment assembler",
            detail: e.to_string(),
        })?;
        Ok(Subscription {
            inner,
            assembler,
            channel: channel.to_string(),
            stream_id,
        })
    }

    /// Adds counters in the driver's counters file, readable by any process on the machine
    /// ([`read_counters`]: what `xmem tp stat` shows); they go when the client closes. Every
    /// request is sent before any answer is awaited: one round trip to the driver, not one each.
    pub fn counters(&self, type_id: i32, counters: &[(Vec<u8>, String)]) -> Result<Vec<Counter>> {
        let add = |e: rusteron_client::AeronCError| Error::Aeron {
            op: "add counter",
            detail: e.capture_errmsg().to_string(),
        };
        let pollers = counters
            .iter()
            .map(|(key, label)| self.aeron.async_add_counter(type_id, key, label).map_err(add))
            .collect::<Result<Vec<_>>>()?;
        let mut done: Vec<Option<rusteron_client::AeronCounter>> = (0..pollers.len()).map(|_| None).collect();
        let started = Instant::now();
        while done.iter().any(Option::is_none) {
            for (p, d) in pollers.iter().zip(done.iter_mut()) {
                if d.is_none() {
                    *d = p.poll().map_err(add)?;
                }
            }
            if done.iter().any(Option::is_none) {
                self.wait_for_add(started, "counter", "the counters file", type_id)?;
            }
        }
        Ok(done
            .into_iter()
            .flatten()
            .map(|inner| Counter { inner })
            .collect())
    }

    /// Starts adding one counter without waiting: [`PendingCounter::poll`] it until it is
    /// there. (An add takes the client conductor's and the media driver's round trip, tens of
    /// milliseconds: a server's request path must not wait for it.)
    pub fn counter_async(&self, type_id: i32, key: &[u8], label: &str) -> Result<PendingCounter> {
        let poller = self
            .aeron
            .async_add_counter(type_id, key, label)
            .map_err(|e| Error::Aeron {
                op: "add counter",
                detail: e.capture_errmsg().to_string(),
            })?;
        Ok(PendingCounter { poller })
    }

    fn wait_for_add(&self, started: Instant, what: &str, channel: &str, stream_id: i32) -> Result<()> {
        self.check()?;
        if started.elapsed() > self.add_timeout {
            return Err(Error::Timeout {
                dir: self.dir.clone(),
                what: format!("adding a {what} on {channel} stream {stream_id}"),
                waited: started.elapsed(),
            });
        }
        // The driver answers through the client's conductor thread; nothing to do but wait.
        std::thread::sleep(Duration::from_micros(200));
        Ok(())
    }
}

fn channel_cstr(channel: &str) -> Result<CString> {
    CString::new(channel).map_err(|_| Error::InvalidChannel(channel.to_string()))
}

/// A counter being added ([`Client::counter_async`]).
pub struct PendingCounter {
    poller: rusteron_client::AeronAsyncAddCounter,
}

impl PendingCounter {
    /// The counter once the driver has added it (`None`: not yet).
    pub fn poll(&self) -> Result<Option<Counter>> {
        self.poller
            .poll()
            .map(|c| c.map(|inner| Counter { inner }))
            .map_err(|e| Error::Aeron {
                op: "add counter",
                detail: e.capture_errmsg().to_string(),
            })
    }
}

/// What became of one offer. Nothing waits: a message that did not go is the caller's to count
/// or to send again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// In the log: subscribers will see it.
    Sent,
    /// No subscriber is connected; the message went nowhere.
    NotConnected,
    /// The slowest subscriber is a term window behind (flow control).
    BackPressured,
    /// The driver was rotating the log; offering again at once usually succeeds.
    AdminAction,
    /// The publication was closed (or its client lost the driver).
    Closed,
    /// The log reached its largest position; the publication must be recreated.
    MaxPositionExceeded,
    /// Another failure (a message longer than the term allows).
    Failed,
}

impl From<Result<i64, AeronOfferError>> for Offer {
    fn from(r: Result<i64, AeronOfferError>) -> Offer {
        match r {
            Ok(_) => Offer::Sent,
            Err(AeronOfferError::NotConnected) => Offer::NotConnected,
            Err(AeronOfferError::BackPressured) => Offer::BackPressured,
            Err(AeronOfferError::AdminAction) => Offer::AdminAction,
            Err(AeronOfferError::Closed) => Offer::Closed,
            Err(AeronOfferError::MaxPositionExceeded) => Offer::MaxPositionExceeded,
            Err(_) => Offer::Failed,
        }
    }
}

impl Offer {
    /// Whether the message is in the log.
    pub fn is_sent(self) -> bool {
        self == Offer::Sent
    }
}

/// A publication: offers that never wait.
pub struct Publication {
    inner: AeronPublication,
    channel: String,
    stream_id: i32,
}

impl Publication {
    /// Offers `bytes` as one message.
    pub fn offer(&self, bytes: &[u8]) -> Offer {
        Offer::from(self.inner.offer(bytes))
    }

    /// Offers `parts`, back to back, as one message: each is copied straight into the log, so
    /// a header and a payload held apart need no buffer of their own. At most
    /// [`Publication::MAX_PARTS`] parts (more: [`Offer::Failed`]).
    pub fn offer_parts(&self, parts: &[&[u8]]) -> Offer {
        Offer::from(self.inner.offer_parts(parts))
    }

    /// How many parts [`Publication::offer_parts`] takes.
    pub const MAX_PARTS: usize = rusteron_client::MAX_OFFER_PARTS;

    /// Whether some subscriber is connected.
    pub fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The stream id.
    pub fn stream_id(&self) -> i32 {
        self.stream_id
    }
}

/// One message as a subscription delivers it (reassembled when Aeron fragmented it).
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    /// The message's bytes, valid during the callback only.
    pub bytes: &'a [u8],
    /// The Aeron session of the publication it came from: tells two publishers apart.
    pub session_id: i32,
}

/// A subscription.
pub struct Subscription {
    inner: AeronSubscription,
    assembler: AeronFragmentClosureAssembler,
    channel: String,
    stream_id: i32,
}

type Sink<'f> = &'f mut dyn FnMut(Message<'_>);

fn deliver(sink: &mut Sink<'_>, bytes: &[u8], header: AeronHeader) {
    let session_id = header.session_id().unwrap_or(0);
    sink(Message { bytes, session_id });
}

impl Subscription {
    /// Delivers up to `limit` fragments' worth of messages to `f`; returns how many fragments
    /// were read (0: nothing waiting).
    pub fn poll(&mut self, limit: usize, mut f: impl FnMut(Message<'_>)) -> Result<usize> {
        let mut sink: Sink<'_> = &mut f;
        let n = self
            .assembler
            .poll(&self.inner, &mut sink, deliver, limit)
            .map_err(|e| Error::Aeron {
                op: "poll",
                detail: e.to_string(),
            })?;
        Ok(n.max(0) as usize)
    }

    /// Whether some publication is connected.
    pub fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }

    /// How many publications (images) it receives from.
    pub fn image_count(&self) -> usize {
        self.inner.image_count().map(|n| n.max(0) as usize).unwrap_or(0)
    }

    /// The channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The stream id.
    pub fn stream_id(&self) -> i32 {
        self.stream_id
    }
}

/// A counter of this process in the driver's counters file.
pub struct Counter {
    inner: rusteron_client::AeronCounter,
}

impl Counter {
    /// Sets its value (a relaxed store: readers take it as a gauge).
    pub fn set(&self, value: u64) {
        self.inner.addr_atomic().store(
            value.min(i64::MAX as u64) as i64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// One counter as the counters file holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterValue {
    /// The counter's id in the file.
    pub id: i32,
    /// Its type (Aeron's own are below 1000).
    pub type_id: i32,
    /// Its key bytes.
    pub key: Vec<u8>,
    /// Its label.
    pub label: String,
    /// Its value.
    pub value: i64,
}

/// Every allocated counter in the counters file of the driver in `dir` (no client needed).
pub fn read_counters(dir: &Path) -> Result<Vec<CounterValue>> {
    let c_dir = dir
        .to_str()
        .and_then(|d| CString::new(d).ok())
        .ok_or_else(|| Error::InvalidChannel(dir.display().to_string()))?;
    let cnc = rusteron_client::AeronCnc::open(&c_dir).map_err(|e| Error::NoDriver {
        dir: dir.to_path_buf(),
        why: Some(format!("cnc.dat: {e}")),
    })?;
    let mut out = Vec::new();
    cnc.counters_reader()
        .foreach_counter_fn(|value, id, type_id, key, label| {
            out.push(CounterValue {
                id,
                type_id,
                key: key.to_vec(),
                label: label.to_string(),
                value,
            })
        });
    Ok(out)
}
