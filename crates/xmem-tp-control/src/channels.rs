//! Where each kind of message travels: an Aeron channel and a stream id, with the defaults both
//! the C and the Julia implementations use (tensor-pool spec §4.7).

use xmem_aeron::TP_CHANNEL;

/// One Aeron channel and stream id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The channel, e.g. `aeron:ipc?term-length=4m`.
    pub channel: String,
    /// The stream id.
    pub stream_id: i32,
}

impl Endpoint {
    /// `stream_id` on the tensor-pool channel.
    pub fn tp(stream_id: i32) -> Endpoint {
        Endpoint {
            channel: TP_CHANNEL.to_string(),
            stream_id,
        }
    }

    /// The same endpoint for a subscription that must never hold its publishers back: an IPC
    /// subscriber that stops polling would otherwise stall every publisher of the stream once
    /// it is a term window behind (`tether=false` lets Aeron leave it behind).
    pub fn untethered(&self) -> String {
        let sep = if self.channel.contains('?') { '|' } else { '?' };
        if self.channel.contains("tether=") {
            self.channel.clone()
        } else {
            format!("{}{sep}tether=false", self.channel)
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} stream {}", self.channel, self.stream_id)
    }
}

/// The control plane's streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channels {
    /// ConsumerHello and ConsumerConfig, FrameProgress; a no-driver producer's announces too.
    pub control: Endpoint,
    /// ShmPoolAnnounce (consumers also take announces from `control`).
    pub announce: Endpoint,
    /// FrameDescriptor, shared by every consumer of the stream.
    pub descriptor: Endpoint,
    /// QosProducer and QosConsumer.
    pub qos: Endpoint,
    /// DataSourceAnnounce and DataSourceMeta.
    pub metadata: Endpoint,
}

impl Default for Channels {
    /// Control 1000, announce 1001, descriptors 1100, QoS 1200, metadata 1300, all on
    /// `aeron:ipc?term-length=4m`.
    fn default() -> Self {
        Channels {
            control: Endpoint::tp(1000),
            announce: Endpoint::tp(1001),
            descriptor: Endpoint::tp(1100),
            qos: Endpoint::tp(1200),
            metadata: Endpoint::tp(1300),
        }
    }
}

impl Channels {
    /// Every stream on `channel`, with the default stream ids.
    pub fn on(channel: &str) -> Channels {
        let mut c = Channels::default();
        for e in [
            &mut c.control,
            &mut c.announce,
            &mut c.descriptor,
            &mut c.qos,
            &mut c.metadata,
        ] {
            e.channel = channel.to_string();
        }
        c
    }
}
