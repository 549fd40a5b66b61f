//! The driver schema (901) as typed messages: what a client sends, what a driver answers.
//!
//! Requests are read at fixed offsets rather than through the strict generic decoder, so that a
//! request with an unknown role or a zero client id still reaches the attach checks and gets its
//! response code (INVALID_PARAMS), as the C driver gives. Everything else, and every encode, goes
//! through the schema codec.

use xmem_tensorpool::codec::{
    decode_exact, peek_header, CodecError, Message, PoolAnnounce, Value, DRIVER_SCHEMA_ID,
};

/// Most bytes of an `errorMessage` (the spec's limit).
pub const MAX_ERROR_MESSAGE: usize = 1024;

/// The role of a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Writes the stream (one per stream).
    Producer,
    /// Reads it.
    Consumer,
}

impl Role {
    /// The wire value.
    pub fn wire(self) -> u8 {
        match self {
            Role::Producer => 1,
            Role::Consumer => 2,
        }
    }

    /// From the wire value.
    pub fn from_wire(v: u8) -> Option<Role> {
        match v {
            1 => Some(Role::Producer),
            2 => Some(Role::Consumer),
            _ => None,
        }
    }

    /// "producer" or "consumer".
    pub fn name(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        }
    }
}

/// `publishMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishMode {
    /// The stream must exist (C consumers send it).
    RequireExisting,
    /// Create it if policy allows (C producers send it; the default for null).
    ExistingOrCreate,
}

/// `requireHugepages`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hugepages {
    /// The driver's default.
    Unspecified,
    /// Ordinary pages.
    Standard,
    /// hugetlbfs.
    Required,
}

/// `ResponseCode` (wire schema values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Done.
    Ok,
    /// A feature or version this side lacks.
    Unsupported,
    /// A malformed request.
    InvalidParams,
    /// Refused by policy or state.
    Rejected,
    /// The driver failed; retry with backoff.
    InternalError,
}

impl Code {
    /// The wire value.
    pub fn wire(self) -> i32 {
        match self {
            Code::Ok => 0,
            Code::Unsupported => 1,
            Code::InvalidParams => 2,
            Code::Rejected => 3,
            Code::InternalError => 4,
        }
    }

    /// From the wire value (`None`: an unknown code, which makes the response invalid).
    pub fn from_wire(v: i32) -> Option<Code> {
        Some(match v {
            0 => Code::Ok,
            1 => Code::Unsupported,
            2 => Code::InvalidParams,
            3 => Code::Rejected,
            4 => Code::InternalError,
            _ => return None,
        })
    }
}

/// `LeaseRevokeReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    /// The client detached.
    Detached,
    /// No keepalive came in time.
    Expired,
    /// An administrator or the driver took it.
    Revoked,
}

impl RevokeReason {
    fn wire(self) -> u8 {
        match self {
            RevokeReason::Detached => 1,
            RevokeReason::Expired => 2,
            RevokeReason::Revoked => 3,
        }
    }

    fn from_wire(v: i128) -> Option<RevokeReason> {
        Some(match v {
            1 => RevokeReason::Detached,
            2 => RevokeReason::Expired,
            3 => RevokeReason::Revoked,
            _ => return None,
        })
    }
}

/// `ShutdownReason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShutdownReason {
    /// A normal close.
    Normal,
    /// An administrator asked.
    Admin,
    /// The driver failed.
    Error,
}

impl ShutdownReason {
    fn wire(self) -> u8 {
        match self {
            ShutdownReason::Normal => 0,
            ShutdownReason::Admin => 1,
            ShutdownReason::Error => 2,
        }
    }

    fn from_wire(v: i128) -> Option<ShutdownReason> {
        Some(match v {
            0 => ShutdownReason::Normal,
            1 => ShutdownReason::Admin,
            2 => ShutdownReason::Error,
            _ => return None,
        })
    }
}

/// `ShmAttachRequest`, with its enums still raw: the driver judges them (checks 1, 5, 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachRequest {
    /// Echoed in the response.
    pub correlation_id: i64,
    /// The stream (0: a dynamic one from `stream_id_range`).
    pub stream_id: u32,
    /// The client (never 0).
    pub client_id: u32,
    /// `Role` on the wire (1 producer, 2 consumer).
    pub role: u8,
    /// 0, or the layout version the client speaks.
    pub expected_layout_version: u32,
    /// `PublishMode` on the wire (255: null).
    pub publish_mode: u8,
    /// `HugepagesPolicy` on the wire.
    pub require_hugepages: u8,
    /// A node id wanted (`None`: assign one).
    pub desired_node_id: Option<u32>,
}

impl AttachRequest {
    /// A request of `role` for `stream_id`, as xmem's clients send it: EXISTING_OR_CREATE for a
    /// producer and REQUIRE_EXISTING for a consumer (what the C clients send).
    pub fn new(correlation_id: i64, stream_id: u32, client_id: u32, role: Role) -> AttachRequest {
        AttachRequest {
            correlation_id,
            stream_id,
            client_id,
            role: role.wire(),
            expected_layout_version: xmem_tensorpool::layout::LAYOUT_VERSION,
            publish_mode: match role {
                Role::Producer => 2,
                Role::Consumer => 1,
            },
            require_hugepages: 0,
            desired_node_id: None,
        }
    }

    /// The publish mode (`None` for a value that is no mode; null is EXISTING_OR_CREATE).
    pub fn publish_mode(&self) -> Option<PublishMode> {
        match self.publish_mode {
            1 => Some(PublishMode::RequireExisting),
            2 | 255 => Some(PublishMode::ExistingOrCreate),
            _ => None,
        }
    }

    /// The hugepages policy (`None` for a value that is none).
    pub fn hugepages(&self) -> Option<Hugepages> {
        match self.require_hugepages {
            0 => Some(Hugepages::Unspecified),
            1 => Some(Hugepages::Standard),
            2 => Some(Hugepages::Required),
            _ => None,
        }
    }

    /// Encodes it (enum values as given: tests send bad ones on purpose).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = header(27, 1);
        b.extend_from_slice(&self.correlation_id.to_le_bytes());
        b.extend_from_slice(&self.stream_id.to_le_bytes());
        b.extend_from_slice(&self.client_id.to_le_bytes());
        b.push(self.role);
        b.extend_from_slice(&self.expected_layout_version.to_le_bytes());
        b.push(self.publish_mode);
        b.push(self.require_hugepages);
        b.extend_from_slice(&self.desired_node_id.unwrap_or(u32::MAX).to_le_bytes());
        b
    }
}

/// `ShmDetachRequest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetachRequest {
    /// Echoed.
    pub correlation_id: i64,
    /// The lease.
    pub lease_id: u64,
    /// Its stream.
    pub stream_id: u32,
    /// Its client.
    pub client_id: u32,
    /// `Role` on the wire.
    pub role: u8,
}

impl DetachRequest {
    /// Encodes it.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = header(25, 3);
        b.extend_from_slice(&self.correlation_id.to_le_bytes());
        b.extend_from_slice(&self.lease_id.to_le_bytes());
        b.extend_from_slice(&self.stream_id.to_le_bytes());
        b.extend_from_slice(&self.client_id.to_le_bytes());
        b.push(self.role);
        b
    }
}

/// `ShmLeaseKeepalive` (one-way: no reply comes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// The lease.
    pub lease_id: u64,
    /// Its stream.
    pub stream_id: u32,
    /// Its client.
    pub client_id: u32,
    /// `Role` on the wire.
    pub role: u8,
    /// The client's clock.
    pub client_timestamp_ns: u64,
}

impl Keepalive {
    /// Encodes it.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = header(25, 5);
        b.extend_from_slice(&self.lease_id.to_le_bytes());
        b.extend_from_slice(&self.stream_id.to_le_bytes());
        b.extend_from_slice(&self.client_id.to_le_bytes());
        b.push(self.role);
        b.extend_from_slice(&self.client_timestamp_ns.to_le_bytes());
        b
    }
}

/// `ShmDriverShutdownRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownRequest {
    /// Echoed nowhere (the driver answers with its shutdown notice).
    pub correlation_id: i64,
    /// Why.
    pub reason: ShutdownReason,
    /// Must equal the configured `shutdown_token`.
    pub token: String,
    /// A note for the logs.
    pub message: String,
}

impl ShutdownRequest {
    /// Encodes it.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut m = driver("ShmDriverShutdownRequest");
        m.set("correlationId", self.correlation_id)?;
        m.set("reason", self.reason.wire())?;
        m.set_data("token", self.token.as_bytes())?;
        m.set_data("errorMessage", self.message.as_bytes())?;
        m.encode()
    }
}

/// A request that reached the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Template 1.
    Attach(AttachRequest),
    /// Template 3.
    Detach(DetachRequest),
    /// Template 5.
    Keepalive(Keepalive),
    /// Template 8.
    Shutdown(ShutdownRequest),
}

/// Why bytes on the control stream are no request the driver serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotARequest {
    /// Another schema's message (the wire schema's hellos, discovery…): not the driver's.
    OtherSchema(u16),
    /// A driver message that is no request (responses, revokes: the driver's own echo).
    NotRequest(u16),
    /// A schema version above 1; `correlation_id` when an attach's could still be read, to
    /// answer UNSUPPORTED.
    Version {
        /// The version sent.
        version: u16,
        /// The attach's correlation id, if readable.
        correlation_id: Option<i64>,
    },
    /// A block length other than the schema's; the attach's correlation id when readable, to
    /// answer INVALID_PARAMS.
    BlockLength {
        /// The template.
        template: u16,
        /// The length sent.
        got: u16,
        /// The attach's correlation id, if readable.
        correlation_id: Option<i64>,
    },
    /// Bytes that fail the codec.
    Malformed(CodecError),
}

/// The schema id of xmem's own administrative requests. Schema 901 has no request that revokes
/// a lease (only the REVOKED reason of `ShmLeaseRevoked`), so xmem adds one under an id of its
/// own: every peer gates on schemaId, so C and Julia clients ignore it.
pub const XMEM_ADMIN_SCHEMA_ID: u16 = 0x786d; // "xm"

/// Tokens and notes longer than this are refused (the shutdown token's bound).
const MAX_ADMIN_TEXT: usize = 1024;

/// xmem's `LeaseRevokeRequest` (schema [`XMEM_ADMIN_SCHEMA_ID`], template 1, version 1): the
/// driver revokes lease `lease_id` with reason REVOKED when `token` is its `shutdown_token`.
/// Layout, little-endian as SBE: the 8-byte message header (blockLength 16), correlationId
/// i64, leaseId u64, then `token` and `message`, each a u32 length and that many UTF-8 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevokeRequest {
    /// For the logs.
    pub correlation_id: i64,
    /// The lease to end.
    pub lease_id: u64,
    /// Must equal the driver's `shutdown_token` (an empty one refuses every request).
    pub token: String,
    /// Why: the revoke notice's errorMessage.
    pub message: String,
}

impl RevokeRequest {
    /// Encodes it.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(40 + self.token.len() + self.message.len());
        for v in [16u16, 1, XMEM_ADMIN_SCHEMA_ID, 1] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&self.correlation_id.to_le_bytes());
        b.extend_from_slice(&self.lease_id.to_le_bytes());
        for text in [&self.token, &self.message] {
            b.extend_from_slice(&(text.len() as u32).to_le_bytes());
            b.extend_from_slice(text.as_bytes());
        }
        b
    }

    /// `None`: not this message. `Some(Err)`: this schema, but malformed (why). Never panics.
    pub fn decode(bytes: &[u8]) -> Option<Result<RevokeRequest, String>> {
        let h = peek_header(bytes).ok()?;
        if h.schema_id != XMEM_ADMIN_SCHEMA_ID {
            return None;
        }
        Some(Self::decode_body(
            h.template_id,
            h.block_length,
            h.version,
            &bytes[8..],
        ))
    }

    fn decode_body(template: u16, block: u16, version: u16, body: &[u8]) -> Result<RevokeRequest, String> {
        if template != 1 || version != 1 || block != 16 {
            return Err(format!(
                "template {template} version {version} blockLength {block} (this driver reads template 1 v1, blockLength 16)"
            ));
        }
        if body.len() < 16 {
            return Err(format!("{} bytes, shorter than the 16-byte block", body.len()));
        }
        let mut at = 16;
        let mut text = || -> Result<String, String> {
            if body.len() < at + 4 {
                return Err("a text's length is cut off".into());
            }
            let n = le_u32(body, at) as usize;
            at += 4;
            if n > MAX_ADMIN_TEXT || body.len() < at + n {
                return Err(format!(
                    "a text of {n} bytes (at most {MAX_ADMIN_TEXT}, and within the message)"
                ));
            }
            let t =
                std::str::from_utf8(&body[at..at + n]).map_err(|_| "a text that is not UTF-8".to_string())?;
            at += n;
            Ok(t.to_string())
        };
        let token = text()?;
        let message = text()?;
        Ok(RevokeRequest {
            correlation_id: le_u64(body, 0) as i64,
            lease_id: le_u64(body, 8),
            token,
            message,
        })
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads a request. Never panics; a block is only read after its length was checked.
pub fn decode_request(bytes: &[u8]) -> Result<Request, NotARequest> {
    let h = peek_header(bytes).map_err(NotARequest::Malformed)?;
    if h.schema_id != DRIVER_SCHEMA_ID {
        return Err(NotARequest::OtherSchema(h.schema_id));
    }
    let body = &bytes[8..];
    let attach_correlation = || (h.template_id == 1 && body.len() >= 8).then(|| le_u64(body, 0) as i64);
    if h.version > 1 {
        return Err(NotARequest::Version {
            version: h.version,
            correlation_id: attach_correlation(),
        });
    }
    let want = match h.template_id {
        1 => 27,
        3 | 5 => 25,
        8 => 9,
        t => return Err(NotARequest::NotRequest(t)),
    };
    if h.block_length != want {
        return Err(NotARequest::BlockLength {
            template: h.template_id,
            got: h.block_length,
            correlation_id: attach_correlation(),
        });
    }
    if body.len() < want as usize {
        return Err(NotARequest::Malformed(CodecError::Truncated {
            what: "request block".into(),
            at: 8,
            need: want as usize,
            got: body.len(),
        }));
    }
    let trailing = |used: usize| {
        if body.len() != used {
            Err(NotARequest::Malformed(CodecError::Trailing(body.len() - used)))
        } else {
            Ok(())
        }
    };
    Ok(match h.template_id {
        1 => {
            trailing(27)?;
            let node = le_u32(body, 23);
            Request::Attach(AttachRequest {
                correlation_id: le_u64(body, 0) as i64,
                stream_id: le_u32(body, 8),
                client_id: le_u32(body, 12),
                role: body[16],
                expected_layout_version: le_u32(body, 17),
                publish_mode: body[21],
                require_hugepages: body[22],
                desired_node_id: (node != u32::MAX).then_some(node),
            })
        }
        3 => {
            trailing(25)?;
            Request::Detach(DetachRequest {
                correlation_id: le_u64(body, 0) as i64,
                lease_id: le_u64(body, 8),
                stream_id: le_u32(body, 16),
                client_id: le_u32(body, 20),
                role: body[24],
            })
        }
        5 => {
            trailing(25)?;
            Request::Keepalive(Keepalive {
                lease_id: le_u64(body, 0),
                stream_id: le_u32(body, 8),
                client_id: le_u32(body, 12),
                role: body[16],
                client_timestamp_ns: le_u64(body, 17),
            })
        }
        _ => {
            let m = decode_exact(bytes).map_err(NotARequest::Malformed)?;
            Request::Shutdown(ShutdownRequest {
                correlation_id: m.int("correlationId").unwrap_or(0) as i64,
                reason: ShutdownReason::from_wire(m.int("reason").unwrap_or(0))
                    .unwrap_or(ShutdownReason::Admin),
                token: text(&m, "token"),
                message: text(&m, "errorMessage"),
            })
        }
    })
}

/// `ShmAttachResponse` as on the wire: every optional may be null (a client checks).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttachResponse {
    /// The request's.
    pub correlation_id: i64,
    /// `ResponseCode` on the wire.
    pub code: i32,
    /// The lease.
    pub lease_id: Option<u64>,
    /// Its hard deadline (the driver's CLOCK_MONOTONIC).
    pub lease_expiry_ns: Option<u64>,
    /// The stream (the allocated one for a dynamic attach).
    pub stream_id: Option<u32>,
    /// The epoch.
    pub epoch: Option<u64>,
    /// The layout version.
    pub layout_version: Option<u32>,
    /// Ring slots.
    pub header_nslots: Option<u32>,
    /// Bytes per ring slot (256).
    pub header_slot_bytes: Option<u16>,
    /// The node id of the lease (TraceLink ids).
    pub node_id: Option<u32>,
    /// The payload pools.
    pub pools: Vec<PoolAnnounce>,
    /// The ring's URI.
    pub header_region_uri: String,
    /// Why, for a refusal.
    pub error_message: String,
}

/// What an OK attach grants, checked (D-4.2-2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The lease.
    pub lease_id: u64,
    /// Its deadline on the driver's clock, if sent.
    pub lease_expiry_ns: Option<u64>,
    /// The node id, if assigned.
    pub node_id: Option<u32>,
    /// The regions, as an announce (stamped when the response was read).
    pub announce: xmem_tensorpool::codec::ShmPoolAnnounce,
}

impl AttachResponse {
    /// A refusal: every optional null, no pools, an empty ring URI, and why.
    pub fn refusal(correlation_id: i64, code: Code, why: &str) -> AttachResponse {
        AttachResponse {
            correlation_id,
            code: code.wire(),
            error_message: clip(why),
            ..AttachResponse::default()
        }
    }

    /// The code (`None` for an unknown one: a protocol error).
    pub fn code(&self) -> Option<Code> {
        Code::from_wire(self.code)
    }

    /// Checks an OK response as the spec requires of a client: every required field present,
    /// 256-byte slots, a nonempty ring URI, at least one pool, each with a URI and the ring's
    /// slot count. Anything else is a protocol error: fail closed, drop, reattach.
    pub fn grant(&self) -> Result<Grant, String> {
        let need = |what: &str| format!("an OK attach response without {what}");
        let lease_id = self.lease_id.ok_or_else(|| need("leaseId"))?;
        let stream_id = self.stream_id.ok_or_else(|| need("streamId"))?;
        let epoch = self.epoch.ok_or_else(|| need("epoch"))?;
        let layout_version = self.layout_version.ok_or_else(|| need("layoutVersion"))?;
        let nslots = self.header_nslots.ok_or_else(|| need("headerNslots"))?;
        let slot_bytes = self.header_slot_bytes.ok_or_else(|| need("headerSlotBytes"))?;
        if slot_bytes != 256 {
            return Err(format!("headerSlotBytes {slot_bytes}, not 256"));
        }
        if nslots == 0 {
            return Err("headerNslots 0".into());
        }
        if self.header_region_uri.is_empty() {
            return Err(need("headerRegionUri"));
        }
        if self.pools.is_empty() {
            return Err(need("payload pools"));
        }
        for p in &self.pools {
            if p.region_uri.is_empty() {
                return Err(format!("pool {} without a regionUri", p.pool_id));
            }
            if p.nslots != nslots {
                return Err(format!(
                    "pool {} has {} slots, the ring {nslots}",
                    p.pool_id, p.nslots
                ));
            }
        }
        Ok(Grant {
            lease_id,
            lease_expiry_ns: self.lease_expiry_ns,
            node_id: self.node_id,
            announce: xmem_tensorpool::codec::ShmPoolAnnounce {
                stream_id,
                producer_id: 0,
                epoch,
                announce_timestamp_ns: xmem_core::os::time::monotonic_ns(),
                announce_clock_domain: xmem_tensorpool::stream::CLOCK_MONOTONIC,
                layout_version,
                header_nslots: nslots,
                header_slot_bytes: slot_bytes,
                pools: self.pools.clone(),
                header_region_uri: self.header_region_uri.clone(),
            },
        })
    }

    /// Encodes it.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut m = driver("ShmAttachResponse");
        m.set("correlationId", self.correlation_id)?;
        m.set("code", self.code)?;
        opt(&mut m, "leaseId", self.lease_id)?;
        opt(&mut m, "leaseExpiryTimestampNs", self.lease_expiry_ns)?;
        opt(&mut m, "streamId", self.stream_id)?;
        opt(&mut m, "epoch", self.epoch)?;
        opt(&mut m, "layoutVersion", self.layout_version)?;
        opt(&mut m, "headerNslots", self.header_nslots)?;
        opt(&mut m, "headerSlotBytes", self.header_slot_bytes)?;
        opt(&mut m, "nodeId", self.node_id)?;
        for p in &self.pools {
            let e = m.push_entry("payloadPools")?;
            e.fields = vec![
                Value::Int(p.pool_id.into()),
                Value::Int(p.nslots.into()),
                Value::Int(p.stride_bytes.into()),
            ];
            e.data = vec![p.region_uri.as_bytes().to_vec()];
        }
        m.set_data("headerRegionUri", self.header_region_uri.as_bytes())?;
        m.set_data("errorMessage", self.error_message.as_bytes())?;
        m.encode()
    }
}

/// `ShmDetachResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DetachResponse {
    /// The request's.
    pub correlation_id: i64,
    /// `ResponseCode` on the wire.
    pub code: i32,
    /// Why, for a refusal.
    pub error_message: String,
}

impl DetachResponse {
    /// Encodes it.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut m = driver("ShmDetachResponse");
        m.set("correlationId", self.correlation_id)?;
        m.set("code", self.code)?;
        m.set_data("errorMessage", self.error_message.as_bytes())?;
        m.encode()
    }
}

/// `ShmLeaseRevoked`: the lease is gone; stop using the mapping and reattach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRevoked {
    /// When (driver clock).
    pub timestamp_ns: u64,
    /// The lease.
    pub lease_id: u64,
    /// Its stream.
    pub stream_id: u32,
    /// Its client.
    pub client_id: u32,
    /// Its role.
    pub role: Role,
    /// Why.
    pub reason: RevokeReason,
    /// A note.
    pub message: String,
}

impl LeaseRevoked {
    /// Encodes it.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut m = driver("ShmLeaseRevoked");
        m.set("timestampNs", self.timestamp_ns)?;
        m.set("leaseId", self.lease_id)?;
        m.set("streamId", self.stream_id)?;
        m.set("clientId", self.client_id)?;
        m.set("role", self.role.wire())?;
        m.set("reason", self.reason.wire())?;
        m.set_data("errorMessage", self.message.as_bytes())?;
        m.encode()
    }
}

/// `ShmDriverShutdown`: every lease of this driver is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverShutdown {
    /// When.
    pub timestamp_ns: u64,
    /// Why.
    pub reason: ShutdownReason,
    /// A note.
    pub message: String,
}

impl DriverShutdown {
    /// Encodes it.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut m = driver("ShmDriverShutdown");
        m.set("timestampNs", self.timestamp_ns)?;
        m.set("reason", self.reason.wire())?;
        m.set_data("errorMessage", self.message.as_bytes())?;
        m.encode()
    }
}

/// What a client hears from the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Template 2.
    Attach(AttachResponse),
    /// Template 4.
    Detach(DetachResponse),
    /// Template 7.
    Revoked(LeaseRevoked),
    /// Template 6.
    Shutdown(DriverShutdown),
}

/// Reads a driver message meant for clients (`None`: another schema, a request, or bytes that
/// fail the codec or carry an unknown enum value — all ignored by a client). One exception
/// (D-4.6-1): an attach response whose code is no code of the schema comes back with that code
/// and nothing else, so that the client waiting on its correlation id fails at once with a
/// protocol error (§4.7a: fail closed, then reattach) instead of waiting out its timeout.
pub fn decode_notice(bytes: &[u8]) -> Option<Notice> {
    let h = peek_header(bytes).ok()?;
    if h.schema_id != DRIVER_SCHEMA_ID || !matches!(h.template_id, 2 | 4 | 6 | 7) {
        return None;
    }
    let Ok(m) = decode_exact(bytes) else {
        return unknown_attach_code(h.template_id, h.block_length, bytes);
    };
    let int = |f: &str| m.int(f);
    Some(match h.template_id {
        2 => Notice::Attach(AttachResponse {
            correlation_id: int("correlationId")? as i64,
            code: int("code")? as i32,
            lease_id: int("leaseId").map(|v| v as u64),
            lease_expiry_ns: int("leaseExpiryTimestampNs").map(|v| v as u64),
            stream_id: int("streamId").map(|v| v as u32),
            epoch: int("epoch").map(|v| v as u64),
            layout_version: int("layoutVersion").map(|v| v as u32),
            header_nslots: int("headerNslots").map(|v| v as u32),
            header_slot_bytes: int("headerSlotBytes").map(|v| v as u16),
            node_id: int("nodeId").map(|v| v as u32),
            pools: m
                .group("payloadPools")
                .unwrap_or_default()
                .iter()
                .map(|e| PoolAnnounce {
                    pool_id: e.fields[0].as_int().unwrap_or(0) as u16,
                    nslots: e.fields[1].as_int().unwrap_or(0) as u32,
                    stride_bytes: e.fields[2].as_int().unwrap_or(0) as u32,
                    region_uri: String::from_utf8_lossy(e.data.first().map_or(&[][..], |d| d)).into_owned(),
                })
                .collect(),
            header_region_uri: text(&m, "headerRegionUri"),
            error_message: text(&m, "errorMessage"),
        }),
        4 => Notice::Detach(DetachResponse {
            correlation_id: int("correlationId")? as i64,
            code: int("code")? as i32,
            error_message: text(&m, "errorMessage"),
        }),
        7 => Notice::Revoked(LeaseRevoked {
            timestamp_ns: int("timestampNs")? as u64,
            lease_id: int("leaseId")? as u64,
            stream_id: int("streamId")? as u32,
            client_id: int("clientId")? as u32,
            role: Role::from_wire(int("role")? as u8)?,
            reason: RevokeReason::from_wire(int("reason")?)?,
            message: text(&m, "errorMessage"),
        }),
        _ => Notice::Shutdown(DriverShutdown {
            timestamp_ns: int("timestampNs")? as u64,
            reason: ShutdownReason::from_wire(int("reason")?)?,
            message: text(&m, "errorMessage"),
        }),
    })
}

/// An attach response that failed the codec: its correlation id and code, when the code is
/// one the schema does not define (the block's first 12 bytes, which every version keeps).
fn unknown_attach_code(template_id: u16, block_length: u16, bytes: &[u8]) -> Option<Notice> {
    let body = &bytes[8..];
    if template_id != 2 || block_length < 12 || body.len() < 12 {
        return None;
    }
    let code = le_u32(body, 8) as i32;
    Code::from_wire(code).is_none().then(|| {
        Notice::Attach(AttachResponse {
            correlation_id: le_u64(body, 0) as i64,
            code,
            ..AttachResponse::default()
        })
    })
}

fn header(block: u16, template: u16) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + block as usize);
    for v in [block, template, DRIVER_SCHEMA_ID, 1] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

fn driver(name: &str) -> Message {
    Message::new("driver", name).expect("the driver schema has the messages this crate sends")
}

fn opt<T: Into<i128>>(m: &mut Message, field: &str, v: Option<T>) -> Result<(), CodecError> {
    match v {
        Some(v) => m.set(field, v)?,
        None => m.set_null(field)?,
    };
    Ok(())
}

fn text(m: &Message, d: &str) -> String {
    String::from_utf8_lossy(m.data(d).unwrap_or_default()).into_owned()
}

/// `s` cut to [`MAX_ERROR_MESSAGE`] bytes at a character boundary.
pub fn clip(s: &str) -> String {
    let mut end = s.len().min(MAX_ERROR_MESSAGE);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
