//! The driver's configuration: TOML with tensor_pool_c's sections, keys and defaults
//! (tensor-pool digest §5), environment overrides, and the checks that refuse a bad key or value
//! with one line that names it.
//!
//! An override is the key's path upper-cased with `.` turned into `_`
//! (`driver.control_stream_id` → `DRIVER_CONTROL_STREAM_ID`); the environment wins over the file.
//! Ranges are `"a-b"` strings; they may not overlap each other or the fixed stream ids.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The channel both implementations default to for control, announce and QoS (an explicit
/// term length: a second publication with another one is refused by Aeron).
pub const DEFAULT_CHANNEL: &str = "aeron:ipc?term-length=4m";

/// A configuration that cannot be used, with the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {key}: {problem}")]
pub struct ConfigError {
    /// The file (and line), or the environment variable.
    pub origin: String,
    /// The key, as a dotted path (`policies.announce_period_ms`).
    pub key: String,
    /// What is wrong and what would do.
    pub problem: String,
}

/// `[driver]`: who the driver is and where it listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriverSection {
    /// The driver's name in discovery results.
    pub instance_id: String,
    /// The Aeron directory ("": Aeron's default, or `AERON_DIR`).
    pub aeron_dir: String,
    /// Attach, detach and keepalive in; responses, revokes and the shutdown notice out.
    pub control_channel: String,
    /// Its stream id.
    pub control_stream_id: i32,
    /// Where `ShmPoolAnnounce` goes (default: the control channel).
    pub announce_channel: Option<String>,
    /// Its stream id (default: the control stream id).
    pub announce_stream_id: Option<i32>,
    /// The QoS stream (reserved; the driver does not use it).
    pub qos_channel: Option<String>,
    /// Its stream id.
    pub qos_stream_id: i32,
    /// Stream ids for dynamic streams, `"a-b"` (an attach with streamId 0 takes one).
    pub stream_id_range: String,
    /// Per-consumer descriptor stream ids, `"a-b"`.
    pub descriptor_stream_id_range: String,
    /// Per-consumer control stream ids, `"a-b"`.
    pub control_stream_id_range: String,
}

impl Default for DriverSection {
    fn default() -> Self {
        DriverSection {
            instance_id: "driver-01".into(),
            aeron_dir: String::new(),
            control_channel: DEFAULT_CHANNEL.into(),
            control_stream_id: 1000,
            announce_channel: None,
            announce_stream_id: None,
            qos_channel: None,
            qos_stream_id: 1200,
            stream_id_range: String::new(),
            descriptor_stream_id_range: String::new(),
            control_stream_id_range: String::new(),
        }
    }
}

/// `[shm]`: where the regions go and who may map them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShmSection {
    /// The base of the canonical layout.
    pub base_dir: String,
    /// The namespace under `tensorpool-<user>`.
    pub namespace: String,
    /// The hugepages policy when a request says UNSPECIFIED.
    pub require_hugepages: bool,
    /// The page size expected of the backing store.
    pub page_size_bytes: u32,
    /// File mode of created regions, octal ("660").
    pub permissions_mode: String,
    /// Directories URIs may point into (default: `base_dir`).
    pub allowed_base_dirs: Vec<String>,
}

impl Default for ShmSection {
    fn default() -> Self {
        ShmSection {
            base_dir: "/dev/shm".into(),
            namespace: "default".into(),
            require_hugepages: false,
            page_size_bytes: 4096,
            permissions_mode: "660".into(),
            allowed_base_dirs: Vec::new(),
        }
    }
}

/// `[policies]`: how leases, announces and epochs behave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policies {
    /// Create streams that no `[streams.*]` names when a client asks (EXISTING_OR_CREATE).
    pub allow_dynamic_streams: bool,
    /// The profile of dynamic streams.
    pub default_profile: String,
    /// ShmPoolAnnounce cadence.
    pub announce_period_ms: u64,
    /// How often clients send keepalives.
    pub lease_keepalive_interval_ms: u64,
    /// Keepalives missed before a lease expires.
    pub lease_expiry_grace_intervals: u32,
    /// How long a released node id stays unusable.
    pub node_id_reuse_cooldown_ms: u64,
    /// Fault every page of a new region in at creation.
    pub prefault_shm: bool,
    /// Lock regions in RAM (not supported by this driver: refused when true).
    pub mlock_shm: bool,
    /// Remove old epochs of each stream.
    pub epoch_gc_enabled: bool,
    /// Epochs kept per stream (the current one included).
    pub epoch_gc_keep: u32,
    /// An epoch younger than this is never removed (default: three announce periods).
    pub epoch_gc_min_age_ns: Option<u64>,
    /// Collect at start-up what an earlier driver left.
    pub epoch_gc_on_startup: bool,
    /// How long a requested shutdown drains before the notice.
    pub shutdown_timeout_ms: u64,
    /// The token a `ShmDriverShutdownRequest` must carry ("": requests are ignored).
    pub shutdown_token: String,
}

impl Default for Policies {
    fn default() -> Self {
        Policies {
            allow_dynamic_streams: false,
            default_profile: String::new(),
            announce_period_ms: 1000,
            lease_keepalive_interval_ms: 1000,
            lease_expiry_grace_intervals: 3,
            node_id_reuse_cooldown_ms: 1000,
            prefault_shm: true,
            mlock_shm: false,
            epoch_gc_enabled: true,
            epoch_gc_keep: 2,
            epoch_gc_min_age_ns: None,
            epoch_gc_on_startup: false,
            shutdown_timeout_ms: 2000,
            shutdown_token: String::new(),
        }
    }
}

/// One payload pool of a profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolDef {
    /// Its id (1 and up).
    pub pool_id: u16,
    /// Bytes per slot (a multiple of 64).
    pub stride_bytes: u32,
}

/// `[profiles.<name>]`: the geometry of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Profile {
    /// Slots of the ring and of each pool (a power of two).
    pub header_nslots: u32,
    /// The pools.
    pub payload_pools: Vec<PoolDef>,
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            header_nslots: 1024,
            payload_pools: Vec::new(),
        }
    }
}

/// `[streams.<name>]`: a stream the driver serves from the start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamDef {
    /// Its id.
    pub stream_id: u32,
    /// Its profile.
    pub profile: String,
    /// Discovery tags (an xmem key; tensor_pool_c sets tags through its API).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// `[discovery]` of a driver: a discovery provider inside it, answering from the driver's own
/// announces (an xmem section; tensor_pool_c runs `tp_discoveryd` beside its driver instead).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoverySection {
    /// Answer discovery requests.
    pub enabled: bool,
    /// Where requests come.
    pub request_channel: String,
    /// Its stream id (tensor_pool_c's daemon: 9000).
    pub request_stream_id: i32,
    /// DataSourceAnnounce, for stream names.
    pub metadata_channel: String,
    /// Its stream id.
    pub metadata_stream_id: i32,
    /// Most results a response carries.
    pub max_results: usize,
}

impl Default for DiscoverySection {
    fn default() -> Self {
        DiscoverySection {
            enabled: true,
            request_channel: DEFAULT_CHANNEL.into(),
            request_stream_id: 9000,
            metadata_channel: DEFAULT_CHANNEL.into(),
            metadata_stream_id: 1300,
            max_results: 1000,
        }
    }
}

/// `[supervisor]`: the per-consumer stream policy embedded in the driver (tensor_pool_c's
/// keys; every one optional).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)] // tensor_pool_c's keys, documented in its DRIVER_USAGE.md
pub struct SupervisorSection {
    pub control_channel: Option<String>,
    pub control_stream_id: Option<i32>,
    pub announce_channel: Option<String>,
    pub announce_stream_id: Option<i32>,
    pub metadata_channel: Option<String>,
    pub metadata_stream_id: Option<i32>,
    pub qos_channel: Option<String>,
    pub qos_stream_id: Option<i32>,
    pub consumer_capacity: Option<u32>,
    pub consumer_stale_ms: Option<u64>,
    pub per_consumer_enabled: Option<bool>,
    pub per_consumer_descriptor_channel: Option<String>,
    pub per_consumer_descriptor_base: Option<u32>,
    pub per_consumer_descriptor_range: Option<u32>,
    pub per_consumer_control_channel: Option<String>,
    pub per_consumer_control_base: Option<u32>,
    pub per_consumer_control_range: Option<u32>,
    pub force_no_shm: Option<bool>,
    pub force_mode: Option<u8>,
    pub payload_fallback_uri: Option<String>,
}

/// A whole driver configuration, as read (see [`DriverConfig::load`]).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DriverConfig {
    /// `[driver]`.
    pub driver: DriverSection,
    /// `[shm]`.
    pub shm: ShmSection,
    /// `[policies]`.
    pub policies: Policies,
    /// `[profiles.<name>]`.
    pub profiles: BTreeMap<String, Profile>,
    /// `[streams.<name>]`.
    pub streams: BTreeMap<String, StreamDef>,
    /// `[supervisor]`, when present.
    pub supervisor: Option<SupervisorSection>,
    /// `[discovery]`, when present.
    pub discovery: Option<DiscoverySection>,
}

impl DriverConfig {
    /// Reads `path`, applies overrides from the process environment, fills the defaults that
    /// depend on other keys, and checks everything.
    pub fn load(path: &Path) -> Result<DriverConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            origin: path.display().to_string(),
            key: "(file)".into(),
            problem: format!("cannot read it: {e}"),
        })?;
        DriverConfig::parse(&text, &path.display().to_string(), |k| std::env::var(k).ok())
    }

    /// As [`DriverConfig::load`], from `text` (named `origin` in errors), with overrides looked
    /// up by `env`.
    pub fn parse(
        text: &str,
        origin: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<DriverConfig, ConfigError> {
        let parsed: DriverConfig = toml::from_str(text).map_err(|e| toml_error(&e, text, origin))?;
        let mut value = toml::Value::try_from(&parsed).map_err(|e| ConfigError {
            origin: origin.into(),
            key: "(all)".into(),
            problem: e.to_string(),
        })?;
        // Keys with no value yet (optional ones) can be overridden too.
        if let toml::Value::Table(t) = &mut value {
            for (section, keys) in OPTIONAL_KEYS {
                if section == "supervisor" && parsed.supervisor.is_none() {
                    continue;
                }
                if let Some(toml::Value::Table(s)) = t.get_mut(section) {
                    for key in keys {
                        apply_absent(s, section, key, &env)?;
                    }
                }
            }
        }
        let mut overridden = Vec::new();
        apply_env(&mut value, &mut Vec::new(), &env, &mut overridden)?;
        let mut config: DriverConfig = value.try_into().map_err(|e: toml::de::Error| ConfigError {
            origin: "environment".into(),
            key: overridden.join(", "),
            problem: e.message().to_string(),
        })?;
        config.resolve();
        config.check(origin)?;
        Ok(config)
    }

    /// Fills the defaults that follow other keys (announce and QoS on the control channel,
    /// allowed directories = the base, GC age = three announce periods).
    fn resolve(&mut self) {
        let d = &mut self.driver;
        d.announce_channel
            .get_or_insert_with(|| d.control_channel.clone());
        d.announce_stream_id.get_or_insert(d.control_stream_id);
        d.qos_channel.get_or_insert_with(|| d.control_channel.clone());
        if self.shm.allowed_base_dirs.is_empty() {
            self.shm.allowed_base_dirs = vec![self.shm.base_dir.clone()];
        }
        let p = &mut self.policies;
        p.epoch_gc_min_age_ns
            .get_or_insert(3 * p.announce_period_ms * 1_000_000);
    }

    fn check(&self, origin: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, problem: String| ConfigError {
            origin: origin.into(),
            key: key.into(),
            problem,
        };
        let d = &self.driver;
        if d.control_stream_id == 0 {
            return Err(bad("driver.control_stream_id", "0 is not a stream id".into()));
        }
        for (key, channel) in [
            ("driver.control_channel", Some(&d.control_channel)),
            ("driver.announce_channel", d.announce_channel.as_ref()),
            ("driver.qos_channel", d.qos_channel.as_ref()),
        ] {
            if let Some(c) = channel {
                if !c.starts_with("aeron:") {
                    return Err(bad(
                        key,
                        format!("{c:?} is not an Aeron channel (aeron:ipc…, aeron:udp?…)"),
                    ));
                }
            }
        }
        if !self.shm.base_dir.starts_with('/') {
            return Err(bad(
                "shm.base_dir",
                format!("{:?} is not an absolute path", self.shm.base_dir),
            ));
        }
        for dir in &self.shm.allowed_base_dirs {
            if !dir.starts_with('/') {
                return Err(bad(
                    "shm.allowed_base_dirs",
                    format!("{dir:?} is not an absolute path"),
                ));
            }
        }
        if !Path::new(&self.shm.base_dir).starts_with("/")
            || !self
                .shm
                .allowed_base_dirs
                .iter()
                .any(|a| Path::new(&self.shm.base_dir).starts_with(a))
        {
            return Err(bad(
                "shm.allowed_base_dirs",
                format!(
                    "none of them holds base_dir {}: clients could map nothing",
                    self.shm.base_dir
                ),
            ));
        }
        if self.shm.namespace.is_empty() || self.shm.namespace.contains('/') || self.shm.namespace == ".." {
            return Err(bad(
                "shm.namespace",
                format!("{:?} is not a directory name", self.shm.namespace),
            ));
        }
        parse_mode(&self.shm.permissions_mode).map_err(|p| bad("shm.permissions_mode", p))?;
        if !self.shm.page_size_bytes.is_power_of_two() {
            return Err(bad(
                "shm.page_size_bytes",
                format!("{} is not a power of two", self.shm.page_size_bytes),
            ));
        }
        let p = &self.policies;
        for (key, v) in [
            ("policies.announce_period_ms", p.announce_period_ms),
            (
                "policies.lease_keepalive_interval_ms",
                p.lease_keepalive_interval_ms,
            ),
            (
                "policies.lease_expiry_grace_intervals",
                p.lease_expiry_grace_intervals.into(),
            ),
            ("policies.epoch_gc_keep", p.epoch_gc_keep.into()),
        ] {
            if v == 0 {
                return Err(bad(key, "must be at least 1".into()));
            }
        }
        if p.mlock_shm {
            return Err(bad(
                "policies.mlock_shm",
                "true is not supported by this driver; set it to false".into(),
            ));
        }
        for (name, prof) in &self.profiles {
            let key = format!("profiles.{name}.header_nslots");
            if prof.header_nslots == 0 || !prof.header_nslots.is_power_of_two() {
                return Err(bad(&key, format!("{} is not a power of two", prof.header_nslots)));
            }
            for (i, pool) in prof.payload_pools.iter().enumerate() {
                let key = format!("profiles.{name}.payload_pools[{i}]");
                if pool.pool_id == 0 {
                    return Err(bad(
                        &key,
                        "pool_id 0 is the header ring; pools are 1 and up".into(),
                    ));
                }
                if prof.payload_pools[..i].iter().any(|q| q.pool_id == pool.pool_id) {
                    return Err(bad(&key, format!("pool_id {} appears twice", pool.pool_id)));
                }
                if pool.stride_bytes < 64 || pool.stride_bytes % 64 != 0 {
                    return Err(bad(
                        &key,
                        format!("stride_bytes {} is not a multiple of 64", pool.stride_bytes),
                    ));
                }
            }
        }
        if p.allow_dynamic_streams && !self.profiles.contains_key(&p.default_profile) {
            return Err(bad(
                "policies.default_profile",
                format!(
                    "{:?} names no [profiles.*]; dynamic streams need one",
                    p.default_profile
                ),
            ));
        }
        let mut fixed: Vec<(String, u32)> = vec![
            ("driver.control_stream_id".into(), d.control_stream_id as u32),
            (
                "driver.announce_stream_id".into(),
                d.announce_stream_id.unwrap_or(0) as u32,
            ),
            ("driver.qos_stream_id".into(), d.qos_stream_id as u32),
        ];
        for (name, s) in &self.streams {
            let key = format!("streams.{name}");
            if s.stream_id == 0 {
                return Err(bad(&format!("{key}.stream_id"), "0 is not a stream id".into()));
            }
            if !self.profiles.contains_key(&s.profile) {
                return Err(bad(
                    &format!("{key}.profile"),
                    format!("{:?} names no [profiles.*]", s.profile),
                ));
            }
            if let Some((other, _)) = self
                .streams
                .iter()
                .find(|(n, o)| *n < name && o.stream_id == s.stream_id)
            {
                return Err(bad(
                    &format!("{key}.stream_id"),
                    format!("{} is also streams.{other}'s", s.stream_id),
                ));
            }
            fixed.push((format!("{key}.stream_id"), s.stream_id));
        }
        let ranges = self.ranges_checked(origin)?;
        let named = [
            ("driver.stream_id_range", &ranges.streams),
            ("driver.descriptor_stream_id_range", &ranges.descriptors),
            ("driver.control_stream_id_range", &ranges.controls),
        ];
        for (i, (key, r)) in named.iter().enumerate() {
            let Some(r) = r else { continue };
            for (other, o) in &named[..i] {
                if let Some(o) = o {
                    if r.start() <= o.end() && o.start() <= r.end() {
                        return Err(bad(key, format!("{}-{} overlaps {other}", r.start(), r.end())));
                    }
                }
            }
            for (fkey, id) in &fixed {
                if r.contains(id) {
                    return Err(bad(key, format!("{}-{} holds {fkey} ({id})", r.start(), r.end())));
                }
            }
        }
        Ok(())
    }

    fn ranges_checked(&self, origin: &str) -> Result<Ranges, ConfigError> {
        let one = |key: &str, s: &str| {
            parse_range(s).map_err(|problem| ConfigError {
                origin: origin.into(),
                key: key.into(),
                problem,
            })
        };
        Ok(Ranges {
            streams: one("driver.stream_id_range", &self.driver.stream_id_range)?,
            descriptors: one(
                "driver.descriptor_stream_id_range",
                &self.driver.descriptor_stream_id_range,
            )?,
            controls: one(
                "driver.control_stream_id_range",
                &self.driver.control_stream_id_range,
            )?,
        })
    }

    /// The parsed id ranges (checked when the configuration was loaded).
    pub fn ranges(&self) -> Ranges {
        self.ranges_checked("config").unwrap_or_default()
    }

    /// The announce channel and stream (resolved).
    pub fn announce(&self) -> (String, i32) {
        (
            self.driver
                .announce_channel
                .clone()
                .unwrap_or_else(|| self.driver.control_channel.clone()),
            self.driver
                .announce_stream_id
                .unwrap_or(self.driver.control_stream_id),
        )
    }

    /// File mode of created regions.
    pub fn mode(&self) -> u32 {
        parse_mode(&self.shm.permissions_mode).unwrap_or(0o660)
    }

    /// The announce period.
    pub fn announce_period(&self) -> Duration {
        Duration::from_millis(self.policies.announce_period_ms)
    }

    /// The keepalive interval clients are expected to keep.
    pub fn keepalive_interval(&self) -> Duration {
        Duration::from_millis(self.policies.lease_keepalive_interval_ms)
    }

    /// How long a lease lives after its last keepalive.
    pub fn lease_lifetime(&self) -> Duration {
        self.keepalive_interval() * self.policies.lease_expiry_grace_intervals
    }

    /// The allowed directories as paths.
    pub fn allowed_dirs(&self) -> Vec<PathBuf> {
        self.shm.allowed_base_dirs.iter().map(PathBuf::from).collect()
    }

    /// The effective configuration as TOML (`xmem tp driver --print-config`).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }
}

/// The id ranges of a configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges {
    /// Dynamic streams.
    pub streams: Option<RangeInclusive<u32>>,
    /// Per-consumer descriptor streams.
    pub descriptors: Option<RangeInclusive<u32>>,
    /// Per-consumer control streams.
    pub controls: Option<RangeInclusive<u32>>,
}

/// `"a-b"` → `a..=b` (`""`: no range).
pub fn parse_range(s: &str) -> Result<Option<RangeInclusive<u32>>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("{s:?} is not a range; write it as \"first-last\", e.g. \"20000-29999\""))?;
    let num = |t: &str| {
        t.trim()
            .parse::<u32>()
            .map_err(|_| format!("{s:?}: {t:?} is not a stream id (0-4294967295)"))
    };
    let (a, b) = (num(a)?, num(b)?);
    if a == 0 || a > b {
        return Err(format!(
            "{s:?}: the first id must be at least 1 and not above the last"
        ));
    }
    Ok(Some(a..=b))
}

fn parse_mode(s: &str) -> Result<u32, String> {
    match u32::from_str_radix(s.trim_start_matches("0o"), 8) {
        Ok(m) if m <= 0o7777 && !s.is_empty() => Ok(m),
        _ => Err(format!("{s:?} is not an octal file mode like \"660\"")),
    }
}

/// Optional keys that have no value until set, so that the environment can still set them.
const OPTIONAL_KEYS: [(&str, &[&str]); 3] = [
    (
        "driver",
        &["announce_channel", "announce_stream_id", "qos_channel"],
    ),
    ("policies", &["epoch_gc_min_age_ns"]),
    (
        "supervisor",
        &[
            "control_channel",
            "control_stream_id",
            "announce_channel",
            "announce_stream_id",
            "metadata_channel",
            "metadata_stream_id",
            "qos_channel",
            "qos_stream_id",
            "consumer_capacity",
            "consumer_stale_ms",
            "per_consumer_enabled",
            "per_consumer_descriptor_channel",
            "per_consumer_descriptor_base",
            "per_consumer_descriptor_range",
            "per_consumer_control_channel",
            "per_consumer_control_base",
            "per_consumer_control_range",
            "force_no_shm",
            "force_mode",
            "payload_fallback_uri",
        ],
    ),
];

fn env_name(path: &[String]) -> String {
    path.join("_").to_ascii_uppercase().replace(['.', '-'], "_")
}

fn apply_absent(
    table: &mut toml::Table,
    section: &str,
    key: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    if table.contains_key(key) {
        return Ok(());
    }
    let name = env_name(&[section.to_string(), key.to_string()]);
    if let Some(v) = env(&name) {
        let value = if let Ok(i) = v.trim().parse::<i64>() {
            toml::Value::Integer(i)
        } else if let Ok(b) = v.trim().parse::<bool>() {
            toml::Value::Boolean(b)
        } else {
            toml::Value::String(v)
        };
        table.insert(key.to_string(), value);
    }
    Ok(())
}

/// Replaces every leaf whose environment variable is set, parsed as the leaf's type.
fn apply_env(
    value: &mut toml::Value,
    path: &mut Vec<String>,
    env: &impl Fn(&str) -> Option<String>,
    overridden: &mut Vec<String>,
) -> Result<(), ConfigError> {
    if let toml::Value::Table(t) = value {
        for (k, v) in t.iter_mut() {
            path.push(k.clone());
            apply_env(v, path, env, overridden)?;
            path.pop();
        }
        return Ok(());
    }
    if path.is_empty() {
        return Ok(());
    }
    let name = env_name(path);
    let Some(raw) = env(&name) else {
        return Ok(());
    };
    let bad = |what: &str| ConfigError {
        origin: format!("environment {name}"),
        key: path.join("."),
        problem: format!("{raw:?} is not {what}"),
    };
    *value = match value {
        toml::Value::Integer(_) => toml::Value::Integer(raw.trim().parse().map_err(|_| bad("an integer"))?),
        toml::Value::Boolean(_) => {
            toml::Value::Boolean(raw.trim().parse().map_err(|_| bad("true or false"))?)
        }
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .filter(|s| !s.trim().is_empty())
                .map(|s| toml::Value::String(s.trim().to_string()))
                .collect(),
        ),
        _ => toml::Value::String(raw.clone()),
    };
    overridden.push(name);
    Ok(())
}

/// One line from a TOML error: where, which key, what.
fn toml_error(e: &toml::de::Error, text: &str, origin: &str) -> ConfigError {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
    let snippet = e
        .span()
        .and_then(|s| text.get(s.clone()))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let message = e.message().replace('\n', " ");
    ConfigError {
        origin: match line {
            Some(l) => format!("{origin} line {l}"),
            None => origin.to_string(),
        },
        key: if snippet.is_empty() || snippet.len() > 60 {
            "(syntax)".into()
        } else {
            snippet
        },
        problem: message,
    }
}
