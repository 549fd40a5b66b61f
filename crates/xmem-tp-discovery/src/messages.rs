//! The discovery schema (910) as typed messages, through the schema codec (whose `tags` groups
//! have blockLength 0, as both implementations write them).

use xmem_tensorpool::codec::{
    decode_exact, peek_header, CodecError, Entry, Message, PoolAnnounce, Value, DISCOVERY_SCHEMA_ID,
};

/// Most results one response carries (the spec's cap).
pub const MAX_RESULTS: usize = 1000;
/// Most bytes of a name the provider compares.
pub const MAX_NAME: usize = 256;

/// `DiscoveryStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The query ran (zero results included).
    Ok,
    /// Nothing is visible to this client.
    NotFound,
    /// A malformed request or an internal failure.
    Error,
}

impl Status {
    fn wire(self) -> u8 {
        match self {
            Status::Ok => 1,
            Status::NotFound => 2,
            Status::Error => 3,
        }
    }

    fn from_wire(v: i128) -> Option<Status> {
        Some(match v {
            1 => Status::Ok,
            2 => Status::NotFound,
            3 => Status::Error,
            _ => return None,
        })
    }
}

/// `DiscoveryRequest`: the filters (all combined with AND) and where to answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// Echoed in the response; a client re-sends the same one until answered.
    pub request_id: u64,
    /// The asking client.
    pub client_id: u32,
    /// Where to answer: a nonempty channel and a nonzero stream.
    pub response_channel: String,
    /// Its stream id.
    pub response_stream_id: u32,
    /// Only this stream.
    pub stream_id: Option<u32>,
    /// Only this producer.
    pub producer_id: Option<u32>,
    /// Only this data source id.
    pub data_source_id: Option<u64>,
    /// Only this data source name (byte for byte; empty: any).
    pub data_source_name: String,
    /// Only streams with every one of these tags (case-sensitive).
    pub tags: Vec<String>,
}

/// One stream found, with its driver's authority.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Found {
    /// The stream.
    pub stream_id: u32,
    /// Its producer (0 while none is attached).
    pub producer_id: u32,
    /// The current epoch.
    pub epoch: u64,
    /// Layout version.
    pub layout_version: u32,
    /// Ring slots.
    pub header_nslots: u32,
    /// Bytes per ring slot (256).
    pub header_slot_bytes: u16,
    /// Most dims (8).
    pub max_dims: u8,
    /// The data source id, if any.
    pub data_source_id: Option<u64>,
    /// The driver's control stream id (nonzero).
    pub driver_control_stream_id: u32,
    /// The pools.
    pub pools: Vec<PoolAnnounce>,
    /// Its tags.
    pub tags: Vec<String>,
    /// The ring's URI.
    pub header_region_uri: String,
    /// The data source's name.
    pub data_source_name: String,
    /// The driver's instance id.
    pub driver_instance_id: String,
    /// The driver's control channel (nonempty).
    pub driver_control_channel: String,
}

impl Found {
    /// The checks a client makes of each result (DS-5.2-1): a result that fails them is dropped.
    pub fn check(&self) -> Result<(), String> {
        if self.header_slot_bytes != 256 {
            return Err(format!("headerSlotBytes {}, not 256", self.header_slot_bytes));
        }
        if self.max_dims != 8 {
            return Err(format!("maxDims {}, not 8", self.max_dims));
        }
        if self.pools.is_empty() || self.pools.iter().any(|p| p.nslots != self.header_nslots) {
            return Err("pools missing, or their slots differ from the ring's".into());
        }
        if self.driver_instance_id.is_empty() || self.driver_control_channel.is_empty() {
            return Err("no driver authority (instance id, control channel)".into());
        }
        if self.driver_control_stream_id == 0 {
            return Err("driver control stream 0".into());
        }
        Ok(())
    }
}

/// `DiscoveryResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The request's.
    pub request_id: u64,
    /// Its status.
    pub status: Status,
    /// The results (none unless OK).
    pub results: Vec<Found>,
    /// Why, for NOT_FOUND or ERROR.
    pub error_message: String,
}

fn discovery(name: &str) -> Message {
    Message::new("discovery", name).expect("the discovery schema has its two messages")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn int(e: &Entry, i: usize) -> Option<i128> {
    e.fields.get(i).and_then(Value::as_int)
}

fn opt<T: Into<i128>>(m: &mut Message, f: &str, v: Option<T>) -> Result<(), CodecError> {
    match v {
        Some(v) => m.set(f, v)?,
        None => m.set_null(f)?,
    };
    Ok(())
}

impl Request {
    /// Encodes it.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut m = discovery("DiscoveryRequest");
        m.set("requestId", self.request_id)?;
        m.set("clientId", self.client_id)?;
        m.set("responseStreamId", self.response_stream_id)?;
        opt(&mut m, "streamId", self.stream_id)?;
        opt(&mut m, "producerId", self.producer_id)?;
        opt(&mut m, "dataSourceId", self.data_source_id)?;
        for t in &self.tags {
            m.push_entry("tags")?.data[0] = t.as_bytes().to_vec();
        }
        m.set_data("responseChannel", self.response_channel.as_bytes())?;
        m.set_data("dataSourceName", self.data_source_name.as_bytes())?;
        m.encode()
    }

    /// Decodes one (`None`: not a discovery request — another schema or template, gated before
    /// anything is read, DS-4.2-1 — or bytes that fail the codec).
    pub fn decode(bytes: &[u8]) -> Option<Request> {
        let h = peek_header(bytes).ok()?;
        if h.schema_id != DISCOVERY_SCHEMA_ID || h.template_id != 1 {
            return None;
        }
        let m = decode_exact(bytes).ok()?;
        Some(Request {
            request_id: m.int("requestId")? as u64,
            client_id: m.int("clientId")? as u32,
            response_stream_id: m.int("responseStreamId")? as u32,
            stream_id: m.int("streamId").map(|v| v as u32),
            producer_id: m.int("producerId").map(|v| v as u32),
            data_source_id: m.int("dataSourceId").map(|v| v as u64),
            tags: m
                .group("tags")
                .unwrap_or_default()
                .iter()
                .map(|e| text(e.data.first().map_or(&[][..], |d| d)))
                .collect(),
            response_channel: text(m.data("responseChannel").unwrap_or_default()),
            data_source_name: text(m.data("dataSourceName").unwrap_or_default()),
        })
    }
}

impl Response {
    /// Encodes it.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut m = discovery("DiscoveryResponse");
        m.set("requestId", self.request_id)?;
        m.set("status", self.status.wire())?;
        let results_def = &m.def.block.groups[m.def.block.group_index("results").expect("results")].block;
        let pools_i = results_def.group_index("payloadPools").expect("payloadPools");
        let tags_i = results_def.group_index("tags").expect("tags");
        let pools_def = results_def.groups[pools_i].block.clone();
        let tags_def = results_def.groups[tags_i].block.clone();
        for r in &self.results {
            let e = m.push_entry("results")?;
            e.fields = vec![
                Value::Int(r.stream_id.into()),
                Value::Int(r.producer_id.into()),
                Value::Int(r.epoch.into()),
                Value::Int(r.layout_version.into()),
                Value::Int(r.header_nslots.into()),
                Value::Int(r.header_slot_bytes.into()),
                Value::Int(r.max_dims.into()),
                r.data_source_id.map_or(Value::Null, |v| Value::Int(v.into())),
                Value::Int(r.driver_control_stream_id.into()),
            ];
            for p in &r.pools {
                let mut pe = Entry::zeroed(&pools_def);
                pe.fields = vec![
                    Value::Int(p.pool_id.into()),
                    Value::Int(p.nslots.into()),
                    Value::Int(p.stride_bytes.into()),
                ];
                pe.data = vec![p.region_uri.as_bytes().to_vec()];
                e.groups[pools_i].push(pe);
            }
            for t in &r.tags {
                let mut te = Entry::zeroed(&tags_def);
                te.data[0] = t.as_bytes().to_vec();
                e.groups[tags_i].push(te);
            }
            e.data = vec![
                r.header_region_uri.as_bytes().to_vec(),
                r.data_source_name.as_bytes().to_vec(),
                r.driver_instance_id.as_bytes().to_vec(),
                r.driver_control_channel.as_bytes().to_vec(),
            ];
        }
        m.set_data("errorMessage", self.error_message.as_bytes())?;
        m.encode()
    }

    /// Decodes one (`None`: not a discovery response, or malformed).
    pub fn decode(bytes: &[u8]) -> Option<Response> {
        let h = peek_header(bytes).ok()?;
        if h.schema_id != DISCOVERY_SCHEMA_ID || h.template_id != 2 {
            return None;
        }
        let m = decode_exact(bytes).ok()?;
        let results = m
            .group("results")
            .unwrap_or_default()
            .iter()
            .map(|e| {
                let d = |i: usize| text(e.data.get(i).map_or(&[][..], |d| d));
                Found {
                    stream_id: int(e, 0).unwrap_or(0) as u32,
                    producer_id: int(e, 1).unwrap_or(0) as u32,
                    epoch: int(e, 2).unwrap_or(0) as u64,
                    layout_version: int(e, 3).unwrap_or(0) as u32,
                    header_nslots: int(e, 4).unwrap_or(0) as u32,
                    header_slot_bytes: int(e, 5).unwrap_or(0) as u16,
                    max_dims: int(e, 6).unwrap_or(0) as u8,
                    data_source_id: int(e, 7).map(|v| v as u64),
                    driver_control_stream_id: int(e, 8).unwrap_or(0) as u32,
                    pools: e.groups[0]
                        .iter()
                        .map(|p| PoolAnnounce {
                            pool_id: int(p, 0).unwrap_or(0) as u16,
                            nslots: int(p, 1).unwrap_or(0) as u32,
                            stride_bytes: int(p, 2).unwrap_or(0) as u32,
                            region_uri: text(p.data.first().map_or(&[][..], |d| d)),
                        })
                        .collect(),
                    tags: e.groups[1]
                        .iter()
                        .map(|t| text(t.data.first().map_or(&[][..], |d| d)))
                        .collect(),
                    header_region_uri: d(0),
                    data_source_name: d(1),
                    driver_instance_id: d(2),
                    driver_control_channel: d(3),
                }
            })
            .collect();
        Some(Response {
            request_id: m.int("requestId")? as u64,
            status: Status::from_wire(m.int("status")?)?,
            results,
            error_message: text(m.data("errorMessage").unwrap_or_default()),
        })
    }
}
