//! The bridge's TOML: AeronTensorPool.jl's `[bridge]` and `[[mappings]]` keys, and what xmem adds
//! to make each end explicit: `role = "sender" | "receiver"` per mapping, `[local]` (this host's
//! control plane and SHM) and `[profiles.<name>]` (the receiver's regions, as the driver's).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use xmem_tensorpool::paths::AllowedDirs;
use xmem_tp_control::{Channels, Endpoint};

use crate::chunk::chunk_size;
use crate::xmem_stream::XmemStream;
use crate::{ReceiverOptions, SenderOptions};

const IPC: &str = "aeron:ipc?term-length=4m";

/// `[bridge]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)] // AeronTensorPool.jl's keys (its bridge spec v1.1)
pub struct BridgeSection {
    pub instance_id: String,
    pub payload_channel: String,
    pub payload_stream_id: i32,
    pub control_channel: String,
    pub control_stream_id: i32,
    pub metadata_channel: String,
    pub metadata_stream_id: i32,
    pub source_metadata_stream_id: i32,
    pub mtu_bytes: u32,
    pub chunk_bytes: u32,
    pub max_chunk_bytes: u32,
    pub max_payload_bytes: u32,
    pub assembly_timeout_ms: u64,
    pub forward_metadata: bool,
    pub forward_qos: bool,
    pub forward_progress: bool,
    pub forward_tracelink: bool,
    /// CRC32C on every chunk (an xmem key; the spec's optional integrity).
    pub integrity: bool,
}

impl Default for BridgeSection {
    fn default() -> Self {
        BridgeSection {
            instance_id: "bridge-01".into(),
            payload_channel: String::new(),
            payload_stream_id: 3000,
            control_channel: String::new(),
            control_stream_id: 3001,
            metadata_channel: String::new(),
            metadata_stream_id: 3002,
            source_metadata_stream_id: 1300,
            mtu_bytes: 1408,
            chunk_bytes: 1200,
            max_chunk_bytes: 65_535,
            max_payload_bytes: 1 << 30,
            assembly_timeout_ms: 250,
            forward_metadata: false,
            forward_qos: false,
            forward_progress: false,
            forward_tracelink: false,
            integrity: false,
        }
    }
}

/// `[local]`: this host's side (an xmem section).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalSection {
    /// The Aeron directory ("": `AERON_DIR` or Aeron's default).
    pub aeron_dir: String,
    /// The channel of the local control plane.
    pub channel: String,
    /// Local control stream.
    pub control_stream_id: i32,
    /// Local announce stream.
    pub announce_stream_id: i32,
    /// Local shared descriptor stream.
    pub descriptor_stream_id: i32,
    /// Local QoS stream.
    pub qos_stream_id: i32,
    /// Local metadata stream.
    pub metadata_stream_id: i32,
    /// The local announce period.
    pub announce_period_ms: u64,
    /// Where local regions are (sender: mapped; receiver: created).
    pub base_dir: String,
    /// The receiver's namespace.
    pub namespace: String,
}

impl Default for LocalSection {
    fn default() -> Self {
        LocalSection {
            aeron_dir: String::new(),
            channel: IPC.into(),
            control_stream_id: 1000,
            announce_stream_id: 1001,
            descriptor_stream_id: 1100,
            qos_stream_id: 1200,
            metadata_stream_id: 1300,
            announce_period_ms: 1000,
            base_dir: "/dev/shm".into(),
            namespace: "default".into(),
        }
    }
}

/// A pool of a receiver's profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolDef {
    /// Its id.
    pub pool_id: u16,
    /// Its stride.
    pub stride_bytes: u32,
}

/// `[profiles.<name>]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Ring slots.
    pub header_nslots: u32,
    /// Pools.
    pub payload_pools: Vec<PoolDef>,
}

/// Which end of a mapping this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads the local source stream and sends it.
    Sender,
    /// Receives and republishes into the local destination stream.
    Receiver,
}

/// `[[mappings]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct Mapping {
    /// This end (an xmem key; AeronTensorPool.jl infers it).
    pub role: Role,
    pub source_stream_id: u32,
    pub dest_stream_id: u32,
    #[serde(default)]
    pub profile: String,
    #[serde(default)]
    pub metadata_stream_id: Option<u32>,
    #[serde(default)]
    pub source_control_stream_id: Option<u32>,
    #[serde(default)]
    pub dest_control_stream_id: Option<u32>,
    /// Sender: read this xmem stream (`Publisher`/`Subscriber`) instead of tensor-pool stream
    /// `source_stream_id` (an xmem key).
    #[serde(default)]
    pub source_xmem_stream: Option<String>,
    /// Receiver: republish into this xmem stream instead of tensor-pool regions; `profile`
    /// then only gives its buffer count (`header_nslots`, default 8) (an xmem key).
    #[serde(default)]
    pub dest_xmem_stream: Option<String>,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeConfig {
    /// `[bridge]`.
    pub bridge: BridgeSection,
    /// `[local]`.
    pub local: LocalSection,
    /// `[profiles.<name>]`.
    pub profiles: BTreeMap<String, Profile>,
    /// `[[mappings]]`.
    pub mappings: Vec<Mapping>,
}

impl BridgeConfig {
    /// Reads and checks `path`: a bad key or value is one line naming it.
    pub fn load(path: &Path) -> Result<BridgeConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        BridgeConfig::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// As [`BridgeConfig::load`], from text.
    pub fn parse(text: &str) -> Result<BridgeConfig, String> {
        let c: BridgeConfig = toml::from_str(text).map_err(|e| e.message().replace('\n', " "))?;
        let b = &c.bridge;
        if !b.payload_channel.starts_with("aeron:") || !b.control_channel.starts_with("aeron:") {
            return Err("bridge.payload_channel and bridge.control_channel must be Aeron channels (aeron:udp?endpoint=host:port)".into());
        }
        if c.mappings.is_empty() {
            return Err("mappings: at least one [[mappings]] is needed".into());
        }
        for (i, m) in c.mappings.iter().enumerate() {
            if m.role == Role::Receiver && m.dest_xmem_stream.is_none() {
                let p = c
                    .profiles
                    .get(&m.profile)
                    .ok_or_else(|| format!("mappings[{i}].profile: {:?} names no [profiles.*]", m.profile))?;
                if !p.header_nslots.is_power_of_two() || p.payload_pools.is_empty() {
                    return Err(format!(
                        "profiles.{}: header_nslots a power of two and at least one pool",
                        m.profile
                    ));
                }
            }
        }
        Ok(c)
    }

    /// The local control plane.
    pub fn channels(&self) -> Channels {
        let l = &self.local;
        let e = |id| Endpoint {
            channel: l.channel.clone(),
            stream_id: id,
        };
        Channels {
            control: e(l.control_stream_id),
            announce: e(l.announce_stream_id),
            descriptor: e(l.descriptor_stream_id),
            qos: e(l.qos_stream_id),
            metadata: e(l.metadata_stream_id),
        }
    }

    fn endpoints(&self) -> (Endpoint, Endpoint) {
        let b = &self.bridge;
        (
            Endpoint {
                channel: b.payload_channel.clone(),
                stream_id: b.payload_stream_id,
            },
            Endpoint {
                channel: b.control_channel.clone(),
                stream_id: b.control_stream_id,
            },
        )
    }

    /// The sender of mapping `m`.
    pub fn sender(&self, m: &Mapping) -> Result<SenderOptions, xmem_tensorpool::Error> {
        let (payload, control) = self.endpoints();
        let b = &self.bridge;
        Ok(SenderOptions {
            source_stream_id: m.source_stream_id,
            dest_stream_id: m.dest_stream_id,
            local: self.channels(),
            allowed: AllowedDirs::new([&self.local.base_dir])?,
            announce_period: Duration::from_millis(self.local.announce_period_ms),
            payload,
            control,
            chunk_size: chunk_size(b.chunk_bytes, b.mtu_bytes, b.max_chunk_bytes),
            integrity: b.integrity,
            send_timeout: Duration::from_millis(b.assembly_timeout_ms),
            forward: self.forwarding(m),
            xmem_stream: m.source_xmem_stream.as_ref().map(|name| XmemStream {
                name: name.clone(),
                directory: None,
            }),
        })
    }

    /// The receiver of mapping `m`.
    pub fn receiver(&self, m: &Mapping) -> ReceiverOptions {
        let (payload, control) = self.endpoints();
        let none = Profile {
            header_nslots: 8,
            payload_pools: Vec::new(),
        };
        let p = self.profiles.get(&m.profile).unwrap_or(&none);
        ReceiverOptions {
            dest_stream_id: m.dest_stream_id,
            payload,
            control,
            local: self.channels(),
            announce_period: Duration::from_millis(self.local.announce_period_ms),
            base_dir: PathBuf::from(&self.local.base_dir),
            namespace: self.local.namespace.clone(),
            nslots: p.header_nslots,
            pools: p
                .payload_pools
                .iter()
                .map(|p| (p.pool_id, p.stride_bytes))
                .collect(),
            max_payload_bytes: self.bridge.max_payload_bytes,
            assembly_timeout: Duration::from_millis(self.bridge.assembly_timeout_ms),
            integrity: self.bridge.integrity,
            forward: self.forwarding(m),
            xmem_stream: m.dest_xmem_stream.as_ref().map(|name| XmemStream {
                name: name.clone(),
                directory: None,
            }),
        }
    }

    /// What mapping `m` forwards besides frames (`forward_metadata` and `forward_tracelink`
    /// need a metadata channel).
    pub fn forwarding(&self, m: &Mapping) -> crate::forward::Forwarding {
        let b = &self.bridge;
        crate::forward::Forwarding {
            metadata: ((b.forward_metadata || b.forward_tracelink) && !b.metadata_channel.is_empty()).then(
                || {
                    (
                        Endpoint {
                            channel: b.metadata_channel.clone(),
                            stream_id: b.metadata_stream_id,
                        },
                        m.metadata_stream_id.unwrap_or(m.dest_stream_id),
                    )
                },
            ),
            data_source: b.forward_metadata,
            qos: b.forward_qos,
            progress: b.forward_progress,
            tracelink: b.forward_tracelink,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BRIDGE: &str = r#"
[bridge]
payload_channel = "aeron:udp?endpoint=10.0.0.2:40123"
control_channel = "aeron:udp?endpoint=10.0.0.2:40124"
"#;

    #[test]
    fn xmem_streams_at_either_end_need_no_profile() {
        let text = format!(
            "{BRIDGE}
[[mappings]]
role = \"sender\"
source_stream_id = 0
dest_stream_id = 20000
source_xmem_stream = \"camera\"

[[mappings]]
role = \"receiver\"
source_stream_id = 0
dest_stream_id = 20001
dest_xmem_stream = \"camera-from-a\"
"
        );
        let c = BridgeConfig::parse(&text).unwrap();
        let s = c.sender(&c.mappings[0]).unwrap();
        assert_eq!(s.xmem_stream.unwrap().name, "camera");
        let r = c.receiver(&c.mappings[1]);
        assert_eq!(r.xmem_stream.unwrap().name, "camera-from-a");
        assert_eq!(r.nslots, 8);
    }

    #[test]
    fn a_tensor_pool_receiver_still_needs_its_profile() {
        let text = format!(
            "{BRIDGE}
[[mappings]]
role = \"receiver\"
source_stream_id = 10000
dest_stream_id = 20000
profile = \"camera\"
"
        );
        let err = BridgeConfig::parse(&text).unwrap_err();
        assert!(err.contains("mappings[0].profile"), "{err}");
    }
}
