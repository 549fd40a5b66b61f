//! The registry a provider answers from (tensor-pool digest §6): keyed by (driver instance,
//! stream), fed by announces, entries gone after three announce periods without one, the newest
//! epoch winning.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use xmem_tensorpool::codec::ShmPoolAnnounce;

use crate::messages::{Found, Request, Response, Status, MAX_NAME, MAX_RESULTS};

/// Who vouches for a stream: the driver that announced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// The driver's instance id.
    pub instance_id: String,
    /// Its control channel.
    pub control_channel: String,
    /// Its control stream id.
    pub control_stream_id: u32,
}

#[derive(Debug, Clone)]
struct Entry {
    found: Found,
    seen: Instant,
}

/// Streams known, by (instance, stream).
#[derive(Debug)]
pub struct Registry {
    entries: BTreeMap<(String, u32), Entry>,
    /// Names and tags learnt before a stream's first announce (or kept across its epochs).
    names: BTreeMap<u32, String>,
    tags: BTreeMap<u32, Vec<String>>,
    period: Duration,
    max_results: usize,
}

impl Registry {
    /// A registry whose entries expire after three `announce_period`s, answering at most
    /// `max_results` results (capped at the spec's 1000).
    pub fn new(announce_period: Duration, max_results: usize) -> Registry {
        Registry {
            entries: BTreeMap::new(),
            names: BTreeMap::new(),
            tags: BTreeMap::new(),
            period: announce_period,
            max_results: max_results.min(MAX_RESULTS),
        }
    }

    /// Takes an announce from `authority`. Refused (`false`): an announce a client could not
    /// use (slot size, no pools, pool slots unlike the ring's) or an older epoch than the one
    /// held.
    pub fn on_announce(&mut self, authority: &Authority, a: &ShmPoolAnnounce) -> bool {
        if a.stream_id == 0
            || a.header_slot_bytes != 256
            || a.pools.is_empty()
            || a.header_nslots == 0
            || a.pools.iter().any(|p| p.nslots != a.header_nslots)
        {
            return false;
        }
        self.prune();
        let key = (authority.instance_id.clone(), a.stream_id);
        if let Some(e) = self.entries.get(&key) {
            if a.epoch < e.found.epoch {
                return false;
            }
        }
        let found = Found {
            stream_id: a.stream_id,
            producer_id: a.producer_id,
            epoch: a.epoch,
            layout_version: a.layout_version,
            header_nslots: a.header_nslots,
            header_slot_bytes: a.header_slot_bytes,
            max_dims: 8,
            data_source_id: None,
            driver_control_stream_id: authority.control_stream_id,
            pools: a.pools.clone(),
            tags: self.tags.get(&a.stream_id).cloned().unwrap_or_default(),
            header_region_uri: a.header_region_uri.clone(),
            data_source_name: self.names.get(&a.stream_id).cloned().unwrap_or_default(),
            driver_instance_id: authority.instance_id.clone(),
            driver_control_channel: authority.control_channel.clone(),
        };
        self.entries.insert(
            key,
            Entry {
                found,
                seen: Instant::now(),
            },
        );
        true
    }

    /// A stream's name (from its DataSourceAnnounce).
    pub fn set_name(&mut self, stream_id: u32, name: &str) {
        let mut name = name.to_string();
        name.truncate(MAX_NAME);
        for ((_, s), e) in self.entries.iter_mut() {
            if *s == stream_id {
                e.found.data_source_name = name.clone();
            }
        }
        self.names.insert(stream_id, name);
    }

    /// A stream's tags (de-duplicated, order kept).
    pub fn set_tags(&mut self, stream_id: u32, tags: &[String]) {
        let mut seen = BTreeSet::new();
        let tags: Vec<String> = tags.iter().filter(|t| seen.insert(t.as_str())).cloned().collect();
        for ((_, s), e) in self.entries.iter_mut() {
            if *s == stream_id {
                e.found.tags = tags.clone();
            }
        }
        self.tags.insert(stream_id, tags);
    }

    fn prune(&mut self) {
        let window = self.period * 3;
        self.entries.retain(|_, e| e.seen.elapsed() <= window);
    }

    /// The live entries, oldest key first.
    pub fn entries(&mut self) -> Vec<Found> {
        self.prune();
        self.entries.values().map(|e| e.found.clone()).collect()
    }

    /// The answer to `r` (filters with AND; tags case-sensitive, de-duplicated; names byte for
    /// byte). OK even for no result; ERROR past the result cap.
    pub fn query(&mut self, r: &Request) -> Response {
        self.prune();
        let wanted: BTreeSet<&str> = r.tags.iter().map(String::as_str).collect();
        let results: Vec<Found> = self
            .entries
            .values()
            .map(|e| &e.found)
            .filter(|f| r.stream_id.is_none_or(|s| s == f.stream_id))
            .filter(|f| r.producer_id.is_none_or(|p| p == f.producer_id))
            .filter(|f| r.data_source_id.is_none_or(|d| Some(d) == f.data_source_id))
            .filter(|f| r.data_source_name.is_empty() || r.data_source_name == f.data_source_name)
            .filter(|f| wanted.iter().all(|t| f.tags.iter().any(|ft| ft == t)))
            .cloned()
            .collect();
        if results.len() > self.max_results {
            return Response {
                request_id: r.request_id,
                status: Status::Error,
                results: Vec::new(),
                error_message: format!("result limit exceeded ({} > {})", results.len(), self.max_results),
            };
        }
        Response {
            request_id: r.request_id,
            status: Status::Ok,
            results,
            error_message: String::new(),
        }
    }
}
