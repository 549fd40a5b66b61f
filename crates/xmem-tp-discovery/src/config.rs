//! The standalone provider's configuration: tensor_pool_c's `config/discovery_example.toml`
//! keys, unknown keys refused.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use xmem_tp_control::Endpoint;

use crate::provider::ProviderOptions;
use crate::registry::Authority;

const CHANNEL: &str = "aeron:ipc?term-length=4m";

/// `[discovery]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[allow(missing_docs)] // tensor_pool_c's keys
pub struct DiscoverySection {
    pub request_channel: String,
    pub request_stream_id: i32,
    pub announce_channel: String,
    pub announce_stream_id: i32,
    pub metadata_channel: String,
    pub metadata_stream_id: i32,
    pub driver_instance_id: String,
    pub driver_control_channel: String,
    pub driver_control_stream_id: u32,
    pub announce_period_ms: u64,
    pub max_results: usize,
}

impl Default for DiscoverySection {
    fn default() -> Self {
        DiscoverySection {
            request_channel: CHANNEL.into(),
            request_stream_id: 9000,
            announce_channel: CHANNEL.into(),
            announce_stream_id: 1001,
            metadata_channel: CHANNEL.into(),
            metadata_stream_id: 1300,
            driver_instance_id: "driver-01".into(),
            driver_control_channel: CHANNEL.into(),
            driver_control_stream_id: 1000,
            announce_period_ms: 1000,
            max_results: 1000,
        }
    }
}

/// `[driver]` (only where Aeron is).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AeronSection {
    /// The Aeron directory ("": the default).
    pub aeron_dir: String,
}

/// A standalone provider's whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// `[discovery]`.
    pub discovery: DiscoverySection,
    /// `[driver]`.
    pub driver: AeronSection,
}

impl DiscoveryConfig {
    /// Reads `path`; an unknown key or a bad value is one line naming it.
    pub fn load(path: &Path) -> Result<DiscoveryConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let c: DiscoveryConfig = toml::from_str(&text)
            .map_err(|e| format!("{}: {}", path.display(), e.message().replace('\n', " ")))?;
        let d = &c.discovery;
        if d.announce_period_ms == 0 || d.driver_control_stream_id == 0 || d.driver_instance_id.is_empty() {
            return Err(format!(
                "{}: announce_period_ms, driver_control_stream_id and driver_instance_id must be set",
                path.display()
            ));
        }
        Ok(c)
    }

    /// The announce period.
    pub fn announce_period(&self) -> Duration {
        Duration::from_millis(self.discovery.announce_period_ms)
    }

    /// What the provider listens to and vouches for.
    pub fn provider_options(&self) -> ProviderOptions {
        let d = &self.discovery;
        ProviderOptions {
            requests: Endpoint {
                channel: d.request_channel.clone(),
                stream_id: d.request_stream_id,
            },
            announces: Some(Endpoint {
                channel: d.announce_channel.clone(),
                stream_id: d.announce_stream_id,
            }),
            metadata: Some(Endpoint {
                channel: d.metadata_channel.clone(),
                stream_id: d.metadata_stream_id,
            }),
            authority: Authority {
                instance_id: d.driver_instance_id.clone(),
                control_channel: d.driver_control_channel.clone(),
                control_stream_id: d.driver_control_stream_id,
            },
        }
    }
}
