//! The driver: the one process of a host that creates, truncates and unlinks the shared memory
//! of its streams, and leases it to producers and consumers (tensor-pool digest §5; what the C
//! driver does, aeron.md §2.5).
//!
//! Everything runs in [`Driver::do_work`] on the caller's thread, as `tp_driver_do_work` does:
//! requests in, responses and revokes out, leases expired, announces every period, old epochs
//! collected.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use xmem_aeron::{Client, Offer, Publication, Subscription};
use xmem_tensorpool::codec::ShmPoolAnnounce;
use xmem_tensorpool::layout::LAYOUT_VERSION;
use xmem_tensorpool::paths::Layout;
use xmem_tensorpool::stream::{next_epoch, remove_epoch_dir, EpochFiles, EpochSpec};

use crate::config::{DriverConfig, Profile};
use crate::leases::{LeaseCounter, PendingLeaseCounter};
use crate::protocol::{
    clip, AttachRequest, AttachResponse, Code, DetachRequest, DetachResponse, DriverShutdown, Hugepages,
    Keepalive, LeaseRevoked, NotARequest, PublishMode, Request, RevokeReason, Role, ShutdownReason,
    ShutdownRequest,
};
use crate::Result;

/// `statfs` magic of hugetlbfs.
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// How many answered attaches are remembered, to re-send the identical OK for a repeated request
/// (the C client repeats its request every 200 ms until answered).
const ANSWERED_CAPACITY: usize = 1024;

/// One lease.
#[derive(Debug, Clone)]
pub struct Lease {
    /// Its id (unique in this driver process, never reused).
    pub lease_id: u64,
    /// The stream.
    pub stream_id: u32,
    /// The client.
    pub client_id: u32,
    /// The role.
    pub role: Role,
    /// The node id assigned.
    pub node_id: u32,
    /// When it expires without a keepalive.
    pub expiry: Instant,
    counter: Option<LeaseCounter>,
}

/// A stream the driver serves.
#[derive(Debug)]
struct StreamState {
    profile: Profile,
    /// The current epoch's files (`None` until the first attach).
    current: Option<EpochFiles>,
    /// The producer's lease.
    producer: Option<u64>,
    /// Epochs this driver made of the stream, oldest first, with when.
    epochs: VecDeque<(u64, PathBuf, Instant)>,
}

/// What the driver did, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Attaches granted.
    pub attached: u64,
    /// Attaches refused (any code).
    pub refused: u64,
    /// Repeated requests answered with the same OK.
    pub repeated: u64,
    /// Detaches.
    pub detached: u64,
    /// Keepalives taken.
    pub keepalives: u64,
    /// Keepalives that matched no lease (ignored, as C does).
    pub stray_keepalives: u64,
    /// Leases expired.
    pub expired: u64,
    /// Epochs made.
    pub epochs: u64,
    /// Epoch directories removed by GC.
    pub collected: u64,
    /// Announces sent.
    pub announces: u64,
    /// Messages that were no request of ours (other schemas, our own echo).
    pub ignored: u64,
    /// Driver-schema messages refused as malformed.
    pub malformed: u64,
    /// Shutdown and revoke requests with a wrong or missing token (ignored).
    pub bad_tokens: u64,
    /// Leases revoked by an administrator ([`Driver::revoke`], or a revoke request).
    pub revoked: u64,
    /// Responses, revokes or announces Aeron did not take (lost, as in C; clients retry).
    pub lost_sends: u64,
}

/// Where a shutdown stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    Running,
    Draining { until: Instant },
    Done,
}

/// The driver.
pub struct Driver {
    config: DriverConfig,
    layout: Layout,
    client: Client,
    control_out: Publication,
    announce_out: Publication,
    control_in: Subscription,
    streams: BTreeMap<u32, StreamState>,
    leases: HashMap<u64, Lease>,
    next_lease_id: u64,
    cooling: Vec<(u32, Instant)>,
    answered: VecDeque<((i64, u32), u64, Vec<u8>)>,
    next_announce: Instant,
    shutdown: Shutdown,
    stats: DriverStats,
    rng: u64,
    discovery: Option<xmem_tp_discovery::Provider>,
    pending_counters: Vec<(u64, PendingLeaseCounter)>,
    /// The configuration's id ranges, parsed once.
    ranges: crate::config::Ranges,
    /// Whether the base directory is on hugetlbfs (one statfs at start, not one per attach).
    on_hugetlbfs: bool,
}

/// A random u64 from the OS layer (getrandom).
fn random_u64() -> u64 {
    xmem_core::os::random::u64()
}

impl Driver {
    /// A driver for `config` over `client`: subscribes to the control stream, publishes on it
    /// and on the announce stream, and (when configured) collects what an earlier driver left.
    pub fn new(client: &Client, config: DriverConfig) -> Result<Driver> {
        if config.supervisor.is_some() {
            // Two supervisors would grant one consumer two different streams.
            tracing::warn!(
                "[supervisor] is read but not served: this driver hosts no supervisor; per-consumer \
                 streams are granted by each producer's consumer manager, as tensor_pool_c's producer does"
            );
        }
        let layout = Layout::new(&config.shm.base_dir, &config.shm.namespace)?;
        let d = &config.driver;
        let control_out = client.publication(&d.control_channel, d.control_stream_id)?;
        let (announce_channel, announce_stream) = config.announce();
        let announce_out = client.publication(&announce_channel, announce_stream)?;
        let control_in = client.subscription(&d.control_channel, d.control_stream_id)?;
        let mut streams = BTreeMap::new();
        for s in config.streams.values() {
            let profile = config.profiles[&s.profile].clone();
            streams.insert(
                s.stream_id,
                StreamState {
                    profile,
                    current: None,
                    producer: None,
                    epochs: VecDeque::new(),
                },
            );
        }
        let mut driver = Driver {
            layout,
            client: client.clone(),
            control_out,
            announce_out,
            control_in,
            streams,
            leases: HashMap::new(),
            next_lease_id: random_u64() | 1,
            cooling: Vec::new(),
            answered: VecDeque::new(),
            next_announce: Instant::now(),
            shutdown: Shutdown::Running,
            stats: DriverStats::default(),
            rng: random_u64() | 1,
            discovery: None,
            pending_counters: Vec::new(),
            ranges: config.ranges(),
            on_hugetlbfs: is_hugetlbfs(Path::new(&config.shm.base_dir)),
            config,
        };
        if let Some(d) = driver.config.discovery.clone().filter(|d| d.enabled) {
            let c = &driver.config.driver;
            let options = xmem_tp_discovery::ProviderOptions {
                requests: xmem_tp_control::Endpoint {
                    channel: d.request_channel.clone(),
                    stream_id: d.request_stream_id,
                },
                announces: None,
                metadata: Some(xmem_tp_control::Endpoint {
                    channel: d.metadata_channel.clone(),
                    stream_id: d.metadata_stream_id,
                }),
                authority: xmem_tp_discovery::Authority {
                    instance_id: c.instance_id.clone(),
                    control_channel: c.control_channel.clone(),
                    control_stream_id: c.control_stream_id as u32,
                },
            };
            let registry = xmem_tp_discovery::Registry::new(driver.config.announce_period(), d.max_results);
            let mut provider = xmem_tp_discovery::Provider::new(client, options, registry)?;
            for s in driver.config.streams.values() {
                provider.registry().set_tags(s.stream_id, &s.tags);
            }
            driver.discovery = Some(provider);
        }
        if driver.config.policies.epoch_gc_on_startup {
            driver.collect_on_startup();
        }
        tracing::info!(
            instance = %driver.config.driver.instance_id,
            control = %format!("{} stream {}", driver.config.driver.control_channel, driver.config.driver.control_stream_id),
            announce = %format!("{announce_channel} stream {announce_stream}"),
            base = %driver.layout.root().display(),
            "tensor-pool driver up"
        );
        Ok(driver)
    }

    /// The configuration in effect.
    pub fn config(&self) -> &DriverConfig {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    /// The live leases.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }

    /// The current epoch of `stream_id` (`None`: not created yet, or not served).
    pub fn epoch(&self, stream_id: u32) -> Option<u64> {
        self.streams
            .get(&stream_id)?
            .current
            .as_ref()
            .map(|f| f.announce.epoch)
    }

    /// The canonical directory of this driver's namespace.
    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// Whether a requested shutdown has completed (the notice is sent; close it).
    pub fn is_shut_down(&self) -> bool {
        self.shutdown == Shutdown::Done
    }

    /// One duty cycle. Returns the work done (0: idle).
    pub fn do_work(&mut self) -> Result<usize> {
        self.client.check()?;
        let mut requests = Vec::new();
        let mut work = self.control_in.poll(64, |m| requests.push(m.bytes.to_vec()))?;
        for bytes in requests {
            self.on_message(&bytes);
        }
        if let Some(p) = &mut self.discovery {
            work += p.poll()?;
        }
        self.poll_counters();
        let now = Instant::now();
        work += self.expire_leases(now);
        if now >= self.next_announce {
            self.next_announce = now + self.config.announce_period();
            self.announce_all();
            for lease in self.leases.values() {
                if let Some(c) = &lease.counter {
                    c.set_remaining(lease.expiry.saturating_duration_since(now));
                }
            }
            work += 1;
        }
        if let Shutdown::Draining { until } = self.shutdown {
            if self.leases.is_empty() || now >= until {
                self.announce_all();
                self.notify_shutdown(ShutdownReason::Admin, "shutdown requested");
                self.shutdown = Shutdown::Done;
            }
        }
        Ok(work)
    }

    /// Revokes lease `lease_id` for an administrator (reason REVOKED, `why` as its message):
    /// the client hears it at once, and a producer's stream gets a new epoch, as on any loss
    /// of the producer. `false`: no such lease.
    pub fn revoke(&mut self, lease_id: u64, why: &str) -> bool {
        if !self.leases.contains_key(&lease_id) {
            return false;
        }
        self.stats.revoked += 1;
        self.end_lease(lease_id, RevokeReason::Revoked, why);
        true
    }

    fn on_revoke_request(&mut self, r: Result<crate::protocol::RevokeRequest, String>) {
        let r = match r {
            Ok(r) => r,
            Err(why) => {
                self.stats.malformed += 1;
                tracing::warn!("a malformed lease revoke request was ignored: {why}");
                return;
            }
        };
        let token = &self.config.policies.shutdown_token;
        if token.is_empty() || r.token != *token {
            self.stats.bad_tokens += 1;
            tracing::warn!(
                lease_id = r.lease_id,
                "a lease revoke request with a wrong or missing token was ignored"
            );
            return;
        }
        let why = if r.message.is_empty() {
            "revoked by an administrator"
        } else {
            &r.message
        };
        if !self.revoke(r.lease_id, why) {
            tracing::warn!(
                lease_id = r.lease_id,
                "a revoke request for no lease held here was ignored"
            );
        }
    }

    /// Handles one message from the control stream.
    pub fn on_message(&mut self, bytes: &[u8]) {
        if let Some(r) = crate::protocol::RevokeRequest::decode(bytes) {
            return self.on_revoke_request(r);
        }
        match crate::protocol::decode_request(bytes) {
            Ok(Request::Attach(r)) => self.on_attach(&r),
            Ok(Request::Detach(r)) => self.on_detach(&r),
            Ok(Request::Keepalive(k)) => self.on_keepalive(&k),
            Ok(Request::Shutdown(r)) => self.on_shutdown_request(&r),
            Err(NotARequest::OtherSchema(_) | NotARequest::NotRequest(_)) => self.stats.ignored += 1,
            Err(NotARequest::Version {
                version,
                correlation_id,
            }) => {
                self.stats.malformed += 1;
                if let Some(c) = correlation_id {
                    let why = format!(
                        "driver schema version {version} is not supported; this driver speaks version 1"
                    );
                    self.refuse(c, Code::Unsupported, &why);
                }
            }
            Err(NotARequest::BlockLength {
                template,
                got,
                correlation_id,
            }) => {
                self.stats.malformed += 1;
                if let Some(c) = correlation_id {
                    let why = format!(
                        "ShmAttachRequest blockLength {got}, the schema's is 27 (template {template})"
                    );
                    self.refuse(c, Code::InvalidParams, &why);
                }
            }
            Err(NotARequest::Malformed(e)) => {
                self.stats.malformed += 1;
                tracing::debug!("malformed driver message ignored: {e}");
            }
        }
    }

    fn send(&mut self, publication: AnnounceOrControl, bytes: &[u8]) {
        let p = match publication {
            AnnounceOrControl::Control => &self.control_out,
            AnnounceOrControl::Announce => &self.announce_out,
        };
        match p.offer(bytes) {
            Offer::Sent => {}
            other => {
                self.stats.lost_sends += 1;
                tracing::debug!("driver message not sent: {other:?}");
            }
        }
    }

    fn refuse(&mut self, correlation_id: i64, code: Code, why: &str) {
        self.stats.refused += 1;
        tracing::info!(correlation_id, ?code, "attach refused: {why}");
        match AttachResponse::refusal(correlation_id, code, why).encode() {
            Ok(bytes) => self.send(AnnounceOrControl::Control, &bytes),
            Err(e) => tracing::error!("encoding a refusal: {e}"),
        }
    }

    fn on_attach(&mut self, r: &AttachRequest) {
        if self.shutdown != Shutdown::Running {
            return self.refuse(r.correlation_id, Code::Rejected, "the driver is shutting down");
        }
        // A repeat of a request already granted: the identical OK again.
        if let Some((_, lease, bytes)) = self
            .answered
            .iter()
            .find(|(k, _, _)| *k == (r.correlation_id, r.client_id))
        {
            if self.leases.contains_key(lease) {
                let bytes = bytes.clone();
                self.stats.repeated += 1;
                return self.send(AnnounceOrControl::Control, &bytes);
            }
        }
        match self.grant(r) {
            Ok(response) => {
                let lease_id = response.lease_id.unwrap_or(0);
                match response.encode() {
                    Ok(bytes) => {
                        self.send(AnnounceOrControl::Control, &bytes);
                        if self.answered.len() == ANSWERED_CAPACITY {
                            self.answered.pop_front();
                        }
                        self.answered
                            .push_back(((r.correlation_id, r.client_id), lease_id, bytes));
                    }
                    Err(e) => tracing::error!("encoding an attach response: {e}"),
                }
            }
            Err((code, why)) => self.refuse(r.correlation_id, code, &why),
        }
    }

    /// The attach checks in the C driver's order; on success the announce has gone out and the
    /// OK response is returned to send.
    fn grant(&mut self, r: &AttachRequest) -> std::result::Result<AttachResponse, (Code, String)> {
        let invalid = |why: String| (Code::InvalidParams, why);
        let rejected = |why: String| (Code::Rejected, why);
        // 1. role
        let role = Role::from_wire(r.role).ok_or_else(|| {
            invalid(format!(
                "role {} is neither PRODUCER (1) nor CONSUMER (2)",
                r.role
            ))
        })?;
        // 2. clientId
        if r.client_id == 0 {
            return Err(invalid(
                "clientId 0 is the auto-assign sentinel; send a nonzero id".into(),
            ));
        }
        // 3. duplicate clientId
        if self.leases.values().any(|l| l.client_id == r.client_id) {
            return Err(rejected("client_id already attached".into()));
        }
        // 4. layout version
        if r.expected_layout_version != 0 && r.expected_layout_version != LAYOUT_VERSION {
            return Err(rejected(format!(
                "expectedLayoutVersion {} does not match the active layout version {LAYOUT_VERSION}",
                r.expected_layout_version
            )));
        }
        // 5. publish mode
        let mode = r
            .publish_mode()
            .ok_or_else(|| invalid(format!("publishMode {} is no mode", r.publish_mode)))?;
        let hugepages = r
            .hugepages()
            .ok_or_else(|| invalid(format!("requireHugepages {} is no policy", r.require_hugepages)))?;
        // 6. the stream: provisioned, or dynamic
        let ranges = &self.ranges;
        let stream_id = if r.stream_id == 0 {
            let range = ranges.streams.clone().ok_or_else(|| {
                invalid("streamId 0 asks for a dynamic stream, but stream_id_range is empty".into())
            })?;
            if mode != PublishMode::ExistingOrCreate || !self.config.policies.allow_dynamic_streams {
                return Err(rejected(
                    "stream not provisioned (dynamic streams are off)".into(),
                ));
            }
            range
                .clone()
                .find(|id| !self.streams.contains_key(id))
                .ok_or_else(|| {
                    rejected(format!(
                        "stream_id_range {}-{} is used up",
                        range.start(),
                        range.end()
                    ))
                })?
        } else {
            r.stream_id
        };
        if !self.streams.contains_key(&stream_id) {
            if mode != PublishMode::ExistingOrCreate || !self.config.policies.allow_dynamic_streams {
                return Err(rejected(format!("stream not provisioned: {stream_id}")));
            }
            if !ranges
                .streams
                .as_ref()
                .is_some_and(|range| range.contains(&stream_id))
            {
                return Err(rejected(format!(
                    "stream not provisioned: {stream_id} is outside stream_id_range {:?}",
                    self.config.driver.stream_id_range
                )));
            }
        }
        // 7. the profile has pools
        let profile = match self.streams.get(&stream_id) {
            Some(s) => s.profile.clone(),
            None => self.config.profiles[&self.config.policies.default_profile].clone(),
        };
        if profile.payload_pools.is_empty() {
            return Err(invalid(format!(
                "the profile of stream {stream_id} has no payload pools"
            )));
        }
        // 8. exclusive producer
        if role == Role::Producer {
            if let Some(s) = self.streams.get(&stream_id) {
                if s.producer.is_some_and(|l| self.leases.contains_key(&l)) {
                    return Err(rejected(format!("stream {stream_id} already has a producer")));
                }
            }
        }
        // 9. hugepages
        let on_hugetlbfs = self.on_hugetlbfs;
        let want_huge = match hugepages {
            Hugepages::Required => true,
            Hugepages::Standard => false,
            Hugepages::Unspecified => self.config.shm.require_hugepages,
        };
        if want_huge && !on_hugetlbfs {
            return Err(rejected(format!(
                "hugepages required, but {} is not on hugetlbfs",
                self.config.shm.base_dir
            )));
        }
        if !want_huge && on_hugetlbfs && hugepages == Hugepages::Standard {
            return Err(rejected(
                "standard pages asked, but the base directory is on hugetlbfs".into(),
            ));
        }
        // 10. node id
        let now = Instant::now();
        self.cooling.retain(|(_, until)| *until > now);
        let node_id = match r.desired_node_id {
            Some(n) if n == 0 || self.node_taken(n) => {
                return Err(rejected(format!("desiredNodeId {n} is in use or cooling down")));
            }
            Some(n) => n,
            None => self.fresh_node_id(),
        };
        // 11. a producer attach, or the first attach of a stream: a new epoch.
        let state = self.streams.entry(stream_id).or_insert_with(|| StreamState {
            profile: profile.clone(),
            current: None,
            producer: None,
            epochs: VecDeque::new(),
        });
        let needs_epoch = role == Role::Producer || state.current.is_none();
        if needs_epoch {
            let producer_id = if role == Role::Producer { r.client_id } else { 0 };
            self.new_epoch(stream_id, producer_id).map_err(|e| {
                (
                    Code::InternalError,
                    format!("creating the regions of stream {stream_id}: {e}"),
                )
            })?;
        }
        // 12. the lease
        let lease_id = self.next_lease_id;
        self.next_lease_id = self.next_lease_id.wrapping_add(1).max(1);
        let expiry = now + self.config.lease_lifetime();
        let pending = PendingLeaseCounter::start(
            &self.client,
            &crate::leases::LeaseInfo {
                lease_id,
                stream_id,
                client_id: r.client_id,
                role,
                node_id,
                driver_pid: std::process::id(),
            },
        );
        self.leases.insert(
            lease_id,
            Lease {
                lease_id,
                stream_id,
                client_id: r.client_id,
                role,
                node_id,
                expiry,
                counter: None,
            },
        );
        if let Some(p) = pending {
            self.pending_counters.push((lease_id, p));
        }
        let state = self.streams.get_mut(&stream_id).expect("inserted above");
        if role == Role::Producer {
            state.producer = Some(lease_id);
        }
        let announce = state
            .current
            .as_ref()
            .map(|f| f.announce.clone())
            .expect("an epoch exists after step 11");
        self.stats.attached += 1;
        tracing::info!(
            lease_id,
            stream_id,
            client_id = r.client_id,
            role = role.name(),
            node_id,
            epoch = announce.epoch,
            "attached"
        );
        // 13. the announce, then the response.
        self.send_announce(&announce);
        Ok(AttachResponse {
            correlation_id: r.correlation_id,
            code: Code::Ok.wire(),
            lease_id: Some(lease_id),
            lease_expiry_ns: Some(
                xmem_core::os::time::monotonic_ns() + self.config.lease_lifetime().as_nanos() as u64,
            ),
            stream_id: Some(stream_id),
            epoch: Some(announce.epoch),
            layout_version: Some(announce.layout_version),
            header_nslots: Some(announce.header_nslots),
            header_slot_bytes: Some(announce.header_slot_bytes),
            node_id: Some(node_id),
            pools: announce.pools.clone(),
            header_region_uri: announce.header_region_uri.clone(),
            error_message: String::new(),
        })
    }

    /// Lease counters whose add completed go to their leases (or away, if the lease ended).
    fn poll_counters(&mut self) {
        let leases = &mut self.leases;
        self.pending_counters.retain(|(lease_id, p)| match p.poll() {
            Ok(Some(c)) => {
                if let Some(l) = leases.get_mut(lease_id) {
                    c.set_remaining(l.expiry.saturating_duration_since(Instant::now()));
                    l.counter = Some(c);
                }
                false
            }
            Ok(None) => true,
            Err(()) => false,
        });
    }

    fn node_taken(&self, n: u32) -> bool {
        self.leases.values().any(|l| l.node_id == n) || self.cooling.iter().any(|(c, _)| *c == n)
    }

    fn fresh_node_id(&mut self) -> u32 {
        loop {
            // xorshift64: cheap, seeded from /dev/urandom.
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let n = (self.rng >> 16) as u32;
            if n != 0 && n != u32::MAX && !self.node_taken(n) {
                return n;
            }
        }
    }

    /// Makes a new epoch of `stream_id` (files first; the old epoch stays for consumers still
    /// reading it, until GC).
    fn new_epoch(&mut self, stream_id: u32, producer_id: u32) -> Result<()> {
        let state = self.streams.get_mut(&stream_id).expect("the stream exists");
        let previous = state.current.as_ref().map_or(0, |f| f.announce.epoch);
        let epoch = next_epoch(&self.layout, stream_id).max(previous + 1);
        let files = EpochFiles::create(
            &self.layout,
            &EpochSpec {
                stream_id,
                epoch,
                nslots: state.profile.header_nslots,
                pools: state
                    .profile
                    .payload_pools
                    .iter()
                    .map(|p| (p.pool_id, p.stride_bytes))
                    .collect(),
                mode: self.config.mode(),
                producer_id,
            },
        )?;
        state.epochs.push_back((epoch, files.dir.clone(), Instant::now()));
        state.current = Some(files);
        self.stats.epochs += 1;
        tracing::info!(stream_id, epoch, "new epoch");
        self.collect(stream_id);
        Ok(())
    }

    /// Epoch GC of one stream: keeps the newest `epoch_gc_keep`, removes older ones past the
    /// minimum age.
    fn collect(&mut self, stream_id: u32) {
        let p = &self.config.policies;
        if !p.epoch_gc_enabled {
            return;
        }
        let keep = p.epoch_gc_keep as usize;
        let min_age = Duration::from_nanos(p.epoch_gc_min_age_ns.unwrap_or(0));
        let Some(state) = self.streams.get_mut(&stream_id) else {
            return;
        };
        while state.epochs.len() > keep {
            let (epoch, dir, made) = state.epochs.front().cloned().expect("len > keep");
            if made.elapsed() < min_age {
                break;
            }
            state.epochs.pop_front();
            remove_epoch_dir(&dir);
            self.stats.collected += 1;
            tracing::debug!(stream_id, epoch, "epoch collected");
        }
    }

    /// At start-up, every epoch directory under the namespace is an earlier driver's: those past
    /// the minimum age are removed.
    fn collect_on_startup(&mut self) {
        let min_age = Duration::from_nanos(self.config.policies.epoch_gc_min_age_ns.unwrap_or(0));
        let Ok(streams) = std::fs::read_dir(self.layout.root()) else {
            return;
        };
        for stream in streams.flatten() {
            let Ok(epochs) = std::fs::read_dir(stream.path()) else {
                continue;
            };
            for epoch in epochs.flatten() {
                let old_enough = epoch
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age >= min_age);
                let is_epoch = epoch
                    .file_name()
                    .to_str()
                    .is_some_and(|n| n.parse::<u64>().is_ok());
                if is_epoch && old_enough {
                    remove_epoch_dir(&epoch.path());
                    self.stats.collected += 1;
                }
            }
        }
        tracing::info!(collected = self.stats.collected, "epoch GC at start-up");
    }

    fn on_detach(&mut self, r: &DetachRequest) {
        let matches = self.leases.get(&r.lease_id).is_some_and(|l| {
            l.stream_id == r.stream_id && l.client_id == r.client_id && l.role.wire() == r.role
        });
        let response = if matches {
            self.end_lease(r.lease_id, RevokeReason::Detached, "detached");
            self.stats.detached += 1;
            DetachResponse {
                correlation_id: r.correlation_id,
                code: Code::Ok.wire(),
                error_message: String::new(),
            }
        } else {
            DetachResponse {
                correlation_id: r.correlation_id,
                code: Code::Rejected.wire(),
                error_message: "lease not found".into(),
            }
        };
        if let Ok(bytes) = response.encode() {
            self.send(AnnounceOrControl::Control, &bytes);
        }
    }

    fn on_keepalive(&mut self, k: &Keepalive) {
        let lifetime = self.config.lease_lifetime();
        match self.leases.get_mut(&k.lease_id) {
            Some(l)
                if l.stream_id == k.stream_id && l.client_id == k.client_id && l.role.wire() == k.role =>
            {
                l.expiry = Instant::now() + lifetime;
                self.stats.keepalives += 1;
            }
            _ => self.stats.stray_keepalives += 1,
        }
    }

    fn on_shutdown_request(&mut self, r: &ShutdownRequest) {
        let token = &self.config.policies.shutdown_token;
        if token.is_empty() || r.token != *token {
            self.stats.bad_tokens += 1;
            tracing::warn!("a shutdown request with a wrong or missing token was ignored");
            return;
        }
        if self.shutdown == Shutdown::Running {
            tracing::info!(reason = ?r.reason, "shutdown requested: draining");
            self.shutdown = Shutdown::Draining {
                until: Instant::now() + Duration::from_millis(self.config.policies.shutdown_timeout_ms),
            };
        }
    }

    /// Revokes `lease_id` (the revoke is sent first); a producer's loss makes a new epoch and
    /// announces it.
    fn end_lease(&mut self, lease_id: u64, reason: RevokeReason, why: &str) {
        let Some(lease) = self.leases.remove(&lease_id) else {
            return;
        };
        let cooldown = Duration::from_millis(self.config.policies.node_id_reuse_cooldown_ms);
        if !cooldown.is_zero() {
            self.cooling.push((lease.node_id, Instant::now() + cooldown));
        }
        let revoked = LeaseRevoked {
            timestamp_ns: xmem_core::os::time::monotonic_ns(),
            lease_id,
            stream_id: lease.stream_id,
            client_id: lease.client_id,
            role: lease.role,
            reason,
            message: clip(why),
        };
        if let Ok(bytes) = revoked.encode() {
            self.send(AnnounceOrControl::Control, &bytes);
        }
        tracing::info!(
            lease_id,
            stream_id = lease.stream_id,
            client_id = lease.client_id,
            role = lease.role.name(),
            ?reason,
            "lease ended"
        );
        let stream_id = lease.stream_id;
        let was_producer = self
            .streams
            .get(&stream_id)
            .is_some_and(|s| s.producer == Some(lease_id));
        if was_producer {
            if let Some(s) = self.streams.get_mut(&stream_id) {
                s.producer = None;
            }
            match self.new_epoch(stream_id, 0) {
                Ok(()) => {
                    if let Some(a) = self.current_announce(stream_id) {
                        self.send_announce(&a);
                    }
                }
                Err(e) => tracing::error!(stream_id, "a new epoch after the producer left: {e}"),
            }
        }
    }

    fn expire_leases(&mut self, now: Instant) -> usize {
        let expired: Vec<u64> = self
            .leases
            .values()
            .filter(|l| l.expiry <= now)
            .map(|l| l.lease_id)
            .collect();
        for id in &expired {
            self.stats.expired += 1;
            self.end_lease(*id, RevokeReason::Expired, "lease expired");
        }
        expired.len()
    }

    fn current_announce(&self, stream_id: u32) -> Option<ShmPoolAnnounce> {
        let s = self.streams.get(&stream_id)?;
        let mut a = s.current.as_ref()?.announce.clone();
        a.producer_id = s
            .producer
            .and_then(|l| self.leases.get(&l))
            .map_or(0, |l| l.client_id);
        Some(a)
    }

    fn send_announce(&mut self, a: &ShmPoolAnnounce) {
        let mut a = a.clone();
        a.announce_timestamp_ns = xmem_core::os::time::monotonic_ns();
        match a.encode() {
            Ok(bytes) => {
                self.send(AnnounceOrControl::Announce, &bytes);
                self.stats.announces += 1;
                if let Some(p) = &mut self.discovery {
                    p.on_announce(&a);
                }
            }
            Err(e) => tracing::error!("encoding an announce: {e}"),
        }
    }

    fn announce_all(&mut self) {
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            if let Some(a) = self.current_announce(id) {
                self.send_announce(&a);
            }
        }
    }

    fn notify_shutdown(&mut self, reason: ShutdownReason, why: &str) {
        let notice = DriverShutdown {
            timestamp_ns: xmem_core::os::time::monotonic_ns(),
            reason,
            message: clip(why),
        };
        if let Ok(bytes) = notice.encode() {
            self.send(AnnounceOrControl::Control, &bytes);
        }
    }

    /// Closes the driver: `ShmDriverShutdown` on the control stream (unless a requested
    /// shutdown sent it), then every region of its streams removed.
    pub fn close(mut self) {
        if self.shutdown != Shutdown::Done {
            self.notify_shutdown(ShutdownReason::Normal, "driver closed");
        }
        self.remove_all();
    }

    fn remove_all(&mut self) {
        for (_, s) in std::mem::take(&mut self.streams) {
            drop(s.current);
            for (_, dir, _) in s.epochs {
                remove_epoch_dir(&dir);
            }
        }
        self.leases.clear();
    }
}

#[derive(Clone, Copy)]
enum AnnounceOrControl {
    Control,
    Announce,
}

/// Whether `path` lies on hugetlbfs (`statfs`); a path that cannot be looked at is not.
#[allow(clippy::unnecessary_cast)] // f_type is i64 here, but not on every target
fn is_hugetlbfs(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| s.f_type as i64 == HUGETLBFS_MAGIC)
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("instance", &self.config.driver.instance_id)
            .field("streams", &self.streams.len())
            .field("leases", &self.leases.len())
            .finish()
    }
}
