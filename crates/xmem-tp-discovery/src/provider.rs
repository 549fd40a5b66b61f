//! The provider: listens to announces (and DataSourceAnnounce names), answers requests from the
//! registry. It runs inside a driver (fed the driver's own announces) or standalone
//! (`xmem-tp-discoveryd`, `xmem tp discoveryd`).

use std::collections::HashMap;

use xmem_aeron::{Client, Publication, Subscription};
use xmem_tensorpool::codec::{peek_header, ShmPoolAnnounce, WIRE_SCHEMA_ID};
use xmem_tp_control::messages::{self, Incoming};
use xmem_tp_control::Endpoint;

use crate::messages::{Request, Response, Status};
use crate::registry::{Authority, Registry};

/// Response publications kept open (one per client channel and stream).
const MAX_RESPONDERS: usize = 256;

/// What a provider did, by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProviderStats {
    /// Requests answered.
    pub answered: u64,
    /// Requests with an empty response channel (no answer is possible: silent).
    pub silent: u64,
    /// Requests answered ERROR for a zero response stream.
    pub bad_requests: u64,
    /// Messages on the request stream that were no discovery request (other schemas).
    pub ignored: u64,
    /// Announces taken into the registry.
    pub announces: u64,
    /// Announces refused (geometry, an older epoch).
    pub refused_announces: u64,
    /// Responses Aeron did not take (the client re-sends its request).
    pub lost: u64,
}

/// Where a provider listens.
#[derive(Debug, Clone)]
pub struct ProviderOptions {
    /// Requests come here (tensor_pool_c: 9000).
    pub requests: Endpoint,
    /// Announces to register (a standalone provider; `None` inside a driver).
    pub announces: Option<Endpoint>,
    /// DataSourceAnnounce, for names (`None`: names stay empty).
    pub metadata: Option<Endpoint>,
    /// The driver whose streams these are.
    pub authority: Authority,
}

/// A discovery provider.
pub struct Provider {
    client: Client,
    opts: ProviderOptions,
    registry: Registry,
    requests: Subscription,
    announces: Option<Subscription>,
    metadata: Option<Subscription>,
    responders: HashMap<(String, i32), Publication>,
    stats: ProviderStats,
}

impl Provider {
    /// A provider over `client` with `registry`.
    pub fn new(
        client: &Client,
        opts: ProviderOptions,
        registry: Registry,
    ) -> Result<Provider, xmem_aeron::Error> {
        let sub = |e: &Endpoint| client.subscription(&e.untethered(), e.stream_id);
        Ok(Provider {
            requests: sub(&opts.requests)?,
            announces: opts.announces.as_ref().map(sub).transpose()?,
            metadata: opts.metadata.as_ref().map(sub).transpose()?,
            client: client.clone(),
            registry,
            responders: HashMap::new(),
            stats: ProviderStats::default(),
            opts,
        })
    }

    /// The registry.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Counters so far.
    pub fn stats(&self) -> ProviderStats {
        self.stats
    }

    /// Registers an announce of this provider's driver (a driver calls it for each it sends).
    pub fn on_announce(&mut self, a: &ShmPoolAnnounce) {
        if self.registry.on_announce(&self.opts.authority, a) {
            self.stats.announces += 1;
        } else {
            self.stats.refused_announces += 1;
        }
    }

    /// One duty cycle: announces and names in, requests answered. Returns the work done.
    pub fn poll(&mut self) -> Result<usize, xmem_aeron::Error> {
        let mut heard = Vec::new();
        let mut work = 0;
        if let Some(s) = &mut self.announces {
            work += s.poll(32, |m| heard.push(m.bytes.to_vec()))?;
        }
        if let Some(s) = &mut self.metadata {
            work += s.poll(32, |m| heard.push(m.bytes.to_vec()))?;
        }
        for bytes in heard {
            let Ok(h) = peek_header(&bytes) else { continue };
            if h.schema_id != WIRE_SCHEMA_ID {
                continue;
            }
            match messages::decode(&bytes) {
                Ok(Incoming::Announce(a)) => self.on_announce(&a),
                Ok(Incoming::DataSource(d)) => self.registry.set_name(d.stream_id, &d.name),
                _ => {}
            }
        }
        let mut requests = Vec::new();
        work += self.requests.poll(32, |m| requests.push(m.bytes.to_vec()))?;
        for bytes in requests {
            self.on_request(&bytes)?;
        }
        Ok(work)
    }

    fn on_request(&mut self, bytes: &[u8]) -> Result<(), xmem_aeron::Error> {
        let Some(r) = Request::decode(bytes) else {
            self.stats.ignored += 1;
            return Ok(());
        };
        if r.response_channel.is_empty() {
            self.stats.silent += 1;
            return Ok(());
        }
        let response = if r.response_stream_id == 0 {
            self.stats.bad_requests += 1;
            Response {
                request_id: r.request_id,
                status: Status::Error,
                results: Vec::new(),
                error_message: "responseStreamId 0: give the stream to answer on".into(),
            }
        } else {
            self.registry.query(&r)
        };
        let Ok(bytes) = response.encode() else {
            tracing::error!("a discovery response could not be encoded");
            return Ok(());
        };
        let key = (r.response_channel.clone(), r.response_stream_id as i32);
        if !self.responders.contains_key(&key) {
            if self.responders.len() >= MAX_RESPONDERS {
                self.responders.clear(); // many clients' channels: start over rather than grow
            }
            let p = self.client.publication(&key.0, key.1)?;
            self.responders.insert(key.clone(), p);
        }
        if self.responders[&key].offer(&bytes).is_sent() {
            self.stats.answered += 1;
        } else {
            // New publications take a moment to connect; the client re-sends its request.
            self.stats.lost += 1;
        }
        Ok(())
    }
}
