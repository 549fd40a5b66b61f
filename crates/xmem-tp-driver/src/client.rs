//! The client side of the driver protocol: attach with retries, keep the lease alive, and say
//! when it is gone (revoked, expired, the driver shut down or silent).
//!
//! A tensor-pool driver's death is nearly invisible to keepalives: every client subscribes to
//! the control stream, so keepalive offers keep succeeding after the driver died (aeron.md
//! §2.5). The client therefore also watches the driver's announces of its stream: none for three
//! announce periods is a lost driver.

use std::time::{Duration, Instant};

use xmem_aeron::{Client, Publication, Subscription};
use xmem_tensorpool::codec::{peek_header, ShmPoolAnnounce, WIRE_SCHEMA_ID};
use xmem_tp_control::Endpoint;

use crate::config::DEFAULT_CHANNEL;
use crate::protocol::{
    decode_notice, AttachRequest, Code, DetachRequest, Grant, Keepalive, Notice, RevokeReason, Role,
};

/// How a [`DriverClient`] reaches its driver.
#[derive(Debug, Clone)]
pub struct DriverClientOptions {
    /// The driver's control stream (requests out, responses in).
    pub control: Endpoint,
    /// Its announce stream (the control stream is watched as well).
    pub announce: Endpoint,
    /// Keepalive cadence (the driver's `lease_keepalive_interval_ms`).
    pub keepalive_interval: Duration,
    /// Keepalives missed before the lease counts as lost here.
    pub grace_intervals: u32,
    /// How long an attach is retried.
    pub attach_timeout: Duration,
    /// How often an unanswered attach is re-sent (C: 200 ms).
    pub retry_interval: Duration,
    /// The driver's announce period: none for three of them is a lost driver.
    pub announce_period: Duration,
}

impl Default for DriverClientOptions {
    fn default() -> Self {
        DriverClientOptions {
            control: Endpoint {
                channel: DEFAULT_CHANNEL.into(),
                stream_id: 1000,
            },
            announce: Endpoint {
                channel: DEFAULT_CHANNEL.into(),
                stream_id: 1001,
            },
            keepalive_interval: Duration::from_secs(1),
            grace_intervals: 3,
            attach_timeout: Duration::from_secs(5),
            retry_interval: Duration::from_millis(200),
            announce_period: Duration::from_secs(1),
        }
    }
}

/// Why an attach did not give a lease.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// The driver said no.
    #[error("the driver refused the attach ({code:?}): {message}")]
    Refused {
        /// Its code.
        code: Code,
        /// Its reason.
        message: String,
    },
    /// No answer in time.
    #[error("no tensor-pool driver answered on {control} within {waited:?}; is one running (`xmem tp driver --config …`)?")]
    Timeout {
        /// The control stream.
        control: Endpoint,
        /// How long.
        waited: Duration,
    },
    /// An OK response that breaks the protocol (null fields, wrong geometry): dropped.
    #[error("the driver's attach response breaks the protocol: {0}")]
    Protocol(String),
    /// Aeron.
    #[error(transparent)]
    Aeron(#[from] xmem_aeron::Error),
}

impl AttachError {
    /// Whether trying again later can succeed (a timeout, an internal error, a protocol error).
    pub fn is_retryable(&self) -> bool {
        match self {
            AttachError::Refused { code, .. } => *code == Code::InternalError,
            AttachError::Timeout { .. } | AttachError::Protocol(_) => true,
            AttachError::Aeron(e) => e.is_retryable(),
        }
    }
}

/// A lease held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The client id used (the one asked for, or the one auto-assigned).
    pub client_id: u32,
    /// The role.
    pub role: Role,
    /// What the driver granted (the regions as an announce).
    pub grant: Grant,
}

impl Attachment {
    /// The stream.
    pub fn stream_id(&self) -> u32 {
        self.grant.announce.stream_id
    }
}

/// What happened to the lease, or to the stream, since the last poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Our lease was revoked (detached, expired, revoked): stop using the mapping, reattach.
    Revoked(RevokeReason),
    /// Keepalives could not be sent for the lease's lifetime: the lease is taken as lost.
    KeepaliveFailed,
    /// The driver said it shuts down: every lease is gone.
    DriverShutdown,
    /// No announce of our stream for three announce periods: the driver is taken as dead.
    DriverSilent,
    /// The stream's producer lost its lease (consumers wait for a higher epoch).
    ProducerRevoked,
    /// An announce of our stream with a higher epoch than the one held.
    NewEpoch(ShmPoolAnnounce),
}

impl Event {
    /// Whether the lease is gone (reattach), rather than news about the stream.
    pub fn ends_lease(&self) -> bool {
        !matches!(self, Event::ProducerRevoked | Event::NewEpoch(_))
    }
}

/// Waiting for an answer: yield for the first 2 ms (a local driver answers in microseconds),
/// then sleep a millisecond at a time.
fn idle(waited: Duration) {
    if waited < Duration::from_millis(2) {
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The delay before reattach attempt `failures` (C: 100 ms · 2ⁿ, at most 3.2 s).
pub fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100 << failures.min(5))
}

/// A connection to one tensor-pool driver, holding at most one lease.
pub struct DriverClient {
    opts: DriverClientOptions,
    control_out: Publication,
    control_in: Subscription,
    announce_in: Option<Subscription>,
    next_correlation: i64,
    lease: Option<Attachment>,
    epoch: u64,
    last_keepalive_ok: Instant,
    next_keepalive: Instant,
    last_announce: Instant,
}

/// A random u64 from the OS layer (getrandom).
fn random_u64() -> u64 {
    xmem_core::os::random::u64()
}

/// A random nonzero client id (the protocol's auto-assign: 0 is never sent).
pub fn random_client_id() -> u32 {
    ((random_u64() >> 17) as u32).max(1)
}

impl DriverClient {
    /// Subscribes to the driver's streams over `client`.
    pub fn new(client: &Client, opts: DriverClientOptions) -> Result<DriverClient, xmem_aeron::Error> {
        let control_out = client.publication(&opts.control.channel, opts.control.stream_id)?;
        let control_in = client.subscription(&opts.control.untethered(), opts.control.stream_id)?;
        let announce_in = if opts.announce == opts.control {
            None
        } else {
            Some(client.subscription(&opts.announce.untethered(), opts.announce.stream_id)?)
        };
        let now = Instant::now();
        Ok(DriverClient {
            opts,
            control_out,
            control_in,
            announce_in,
            // A random positive seed per process (D-B.1-1): never reused while outstanding.
            next_correlation: (random_u64() >> 2) as i64,
            lease: None,
            epoch: 0,
            last_keepalive_ok: now,
            next_keepalive: now,
            last_announce: now,
        })
    }

    /// The lease held, if any.
    pub fn lease(&self) -> Option<&Attachment> {
        self.lease.as_ref()
    }

    fn correlation(&mut self) -> i64 {
        self.next_correlation = self.next_correlation.wrapping_add(1).max(1);
        self.next_correlation
    }

    /// Attaches to `stream_id` as `role`, re-sending every retry interval until answered or the
    /// timeout. `client_id` 0 auto-assigns one, and a new one is picked when the driver answers
    /// "client_id already attached" (D-B.2-2). Responses to other requests, and repeats of ours
    /// after the answer, are ignored (D-B.1-2).
    pub fn attach(&mut self, stream_id: u32, role: Role, client_id: u32) -> Result<&Attachment, AttachError> {
        let auto = client_id == 0;
        self.attach_with(AttachRequest::new(0, stream_id, client_id, role), auto)
    }

    /// As [`DriverClient::attach`], for a request with other fields set (a desired node id, a
    /// hugepages policy); its correlation id is replaced by this client's next one. With `auto`,
    /// the client id is this client's to choose: 0 becomes a random one, and any id is replaced
    /// by a new random one when the driver answers "client_id already attached".
    pub fn attach_with(
        &mut self,
        mut request: AttachRequest,
        auto: bool,
    ) -> Result<&Attachment, AttachError> {
        let role = Role::from_wire(request.role).ok_or_else(|| AttachError::Refused {
            code: Code::InvalidParams,
            message: format!("role {} is no role", request.role),
        })?;
        if request.client_id == 0 {
            request.client_id = random_client_id();
        }
        request.correlation_id = self.correlation();
        let deadline = Instant::now() + self.opts.attach_timeout;
        let mut next_send = Instant::now();
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(AttachError::Timeout {
                    control: self.opts.control.clone(),
                    waited: self.opts.attach_timeout,
                });
            }
            if now >= next_send && self.control_out.is_connected() {
                let _ = self.control_out.offer(&request.encode());
                next_send = now + self.opts.retry_interval;
            }
            let mut answer = None;
            let want = request.correlation_id;
            self.control_in.poll(32, |m| {
                if let Some(Notice::Attach(r)) = decode_notice(m.bytes) {
                    if r.correlation_id == want && answer.is_none() {
                        answer = Some(r);
                    }
                }
            })?;
            let Some(r) = answer else {
                idle(now.saturating_duration_since(next_send - self.opts.retry_interval));
                continue;
            };
            match r.code() {
                Some(Code::Ok) => {
                    let grant = r.grant().map_err(AttachError::Protocol)?;
                    let now = Instant::now();
                    self.epoch = grant.announce.epoch;
                    self.last_keepalive_ok = now;
                    self.next_keepalive = now + self.opts.keepalive_interval;
                    self.last_announce = now;
                    self.lease = Some(Attachment {
                        client_id: request.client_id,
                        role,
                        grant,
                    });
                    return Ok(self.lease.as_ref().expect("just set"));
                }
                Some(Code::Rejected) if auto && r.error_message.contains("already attached") => {
                    request.client_id = random_client_id();
                    request.correlation_id = self.correlation();
                    next_send = Instant::now();
                }
                Some(code) => {
                    return Err(AttachError::Refused {
                        code,
                        message: r.error_message,
                    })
                }
                None => return Err(AttachError::Protocol(format!("unknown response code {}", r.code))),
            }
        }
    }

    /// One duty cycle: the keepalive when due, the driver's notices, our stream's announces.
    /// Returns what happened; an event that [`Event::ends_lease`] has dropped the lease.
    pub fn poll(&mut self) -> Result<Vec<Event>, xmem_aeron::Error> {
        let mut events = Vec::new();
        let Some(lease) = self.lease.clone() else {
            // Drain what came meanwhile, so that old notices never meet the next lease.
            self.control_in.poll(64, |_| {})?;
            if let Some(a) = &mut self.announce_in {
                a.poll(64, |_| {})?;
            }
            return Ok(events);
        };
        let now = Instant::now();
        let lifetime = self.opts.keepalive_interval * self.opts.grace_intervals;
        if now >= self.next_keepalive {
            self.next_keepalive = now + self.opts.keepalive_interval;
            let k = Keepalive {
                lease_id: lease.grant.lease_id,
                stream_id: lease.stream_id(),
                client_id: lease.client_id,
                role: lease.role.wire(),
                client_timestamp_ns: xmem_core::os::time::monotonic_ns(),
            };
            if self.control_out.offer(&k.encode()).is_sent() {
                self.last_keepalive_ok = now;
            }
        }
        if now.duration_since(self.last_keepalive_ok) >= lifetime {
            events.push(Event::KeepaliveFailed);
        }
        let mut messages = Vec::new();
        self.control_in.poll(64, |m| messages.push(m.bytes.to_vec()))?;
        if let Some(a) = &mut self.announce_in {
            a.poll(64, |m| messages.push(m.bytes.to_vec()))?;
        }
        let stream_id = lease.stream_id();
        for bytes in messages {
            match decode_notice(&bytes) {
                Some(Notice::Revoked(r)) if r.stream_id == stream_id => {
                    if r.lease_id == lease.grant.lease_id
                        || (r.client_id == lease.client_id && r.role == lease.role)
                    {
                        events.push(Event::Revoked(r.reason));
                    } else if r.role == Role::Producer {
                        events.push(Event::ProducerRevoked);
                    }
                }
                Some(Notice::Shutdown(_)) => events.push(Event::DriverShutdown),
                Some(_) => {}
                None => {
                    let Ok(h) = peek_header(&bytes) else { continue };
                    if h.schema_id != WIRE_SCHEMA_ID || h.template_id != 1 {
                        continue;
                    }
                    let Ok(a) = ShmPoolAnnounce::decode(&bytes) else {
                        continue;
                    };
                    if a.stream_id != stream_id {
                        continue;
                    }
                    self.last_announce = Instant::now();
                    if a.epoch > self.epoch {
                        self.epoch = a.epoch;
                        events.push(Event::NewEpoch(a));
                    }
                }
            }
        }
        if self.last_announce.elapsed() >= self.opts.announce_period * 3 {
            events.push(Event::DriverSilent);
        }
        if events.iter().any(Event::ends_lease) {
            self.lease = None;
        }
        Ok(events)
    }

    /// Detaches (best effort: waits up to one retry interval for the answer) and drops the lease.
    pub fn detach(&mut self) -> Result<(), xmem_aeron::Error> {
        let Some(lease) = self.lease.take() else {
            return Ok(());
        };
        let request = DetachRequest {
            correlation_id: self.correlation(),
            lease_id: lease.grant.lease_id,
            stream_id: lease.stream_id(),
            client_id: lease.client_id,
            role: lease.role.wire(),
        };
        let _ = self.control_out.offer(&request.encode());
        let deadline = Instant::now() + self.opts.retry_interval.max(Duration::from_millis(500));
        let mut done = false;
        while !done && Instant::now() < deadline {
            self.control_in.poll(32, |m| {
                if let Some(Notice::Detach(r)) = decode_notice(m.bytes) {
                    done |= r.correlation_id == request.correlation_id;
                }
            })?;
            if !done {
                idle(Instant::now().saturating_duration_since(deadline - Duration::from_millis(500)));
            }
        }
        Ok(())
    }
}

impl Drop for DriverClient {
    fn drop(&mut self) {
        let _ = self.detach();
    }
}
