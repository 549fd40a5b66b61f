//! # xmem-tp-discovery
//!
//! SHM Tensor Pool discovery (tensor-pool digest §6), advisory: a provider keeps a registry of
//! the streams its driver announces and answers `DiscoveryRequest`s filtered by stream,
//! producer, data source and tags; a client asks and re-asks until answered. Clients still
//! attach through the driver a result names, and check everything themselves.
//!
//! * [`Registry`]: keyed by (driver instance, stream); an entry lives three announce periods
//!   past its last announce; the newest epoch wins; tags case-sensitive and de-duplicated.
//! * [`Provider`]: inside a driver (fed its announces) or standalone (`xmem-tp-discoveryd`).
//! * [`Discoverer`]: the client.
//! * [`config`]: the standalone provider's TOML (tensor_pool_c's `[discovery]` keys).

pub mod client;
pub mod config;
pub mod messages;
pub mod provider;
pub mod registry;

pub use client::{DiscoverError, Discoverer};
pub use messages::{Found, Request, Response, Status};
pub use provider::{Provider, ProviderOptions, ProviderStats};
pub use registry::{Authority, Registry};
