//! Forwarding the rest of a stream's control plane across the bridge (tensor-pool digest §6,
//! optional): DataSourceAnnounce / DataSourceMeta, and TraceLinkSet (from and to the local
//! control stream), on the bridge's metadata channel; QosProducer /
//! QosConsumer and FrameProgress on its control channel, each with its `streamId` rewritten
//! (source → destination on the way out, kept on the way in) and everything else kept.
//! Descriptors never cross: the receiver makes its own.

use xmem_aeron::{Client, Publication, Subscription};
use xmem_tensorpool::codec::{decode_exact, peek_header, TRACE_LINK_SCHEMA_ID, WIRE_SCHEMA_ID};
use xmem_tp_control::Endpoint;

/// What a mapping forwards besides frames and announces.
#[derive(Debug, Clone, Default)]
pub struct Forwarding {
    /// The bridge's metadata channel, and the stream id messages carry on it
    /// (`metadata_stream_id`, default the destination's): `None` forwards neither DataSource
    /// messages nor TraceLinkSets.
    pub metadata: Option<(Endpoint, u32)>,
    /// DataSourceAnnounce and DataSourceMeta on the metadata channel.
    pub data_source: bool,
    /// QosProducer and QosConsumer on the bridge control channel.
    pub qos: bool,
    /// FrameProgress on the bridge control channel.
    pub progress: bool,
    /// TraceLinkSet on the bridge's metadata channel (needs `metadata`), its streamId rewritten
    /// as DataSource messages' are; epoch, seq, traceId and parents kept.
    pub tracelink: bool,
}

/// Messages by what they are: (schema id, template id).
const DATA_SOURCE: [(u16, u16); 2] = [(WIRE_SCHEMA_ID, 7), (WIRE_SCHEMA_ID, 8)];
const QOS: [(u16, u16); 2] = [(WIRE_SCHEMA_ID, 5), (WIRE_SCHEMA_ID, 6)];
const PROGRESS: (u16, u16) = (WIRE_SCHEMA_ID, 11);
const TRACE_LINK_SET: (u16, u16) = (TRACE_LINK_SCHEMA_ID, 1);

/// One leg: messages of some templates about stream `from` on `input`, re-sent on `output` as
/// about stream `to`.
pub(crate) struct Leg {
    input: Subscription,
    output: Publication,
    templates: Vec<(u16, u16)>,
    from: u32,
    to: u32,
    /// Messages forwarded.
    pub forwarded: u64,
}

impl Leg {
    pub(crate) fn new(
        client: &Client,
        input: &Endpoint,
        output: &Endpoint,
        templates: Vec<(u16, u16)>,
        from: u32,
        to: u32,
    ) -> Result<Leg, xmem_aeron::Error> {
        Ok(Leg {
            input: client.subscription(&input.untethered(), input.stream_id)?,
            output: client.publication(&output.channel, output.stream_id)?,
            templates,
            from,
            to,
            forwarded: 0,
        })
    }

    /// Forwards what came; returns the work done.
    pub(crate) fn poll(&mut self) -> Result<usize, xmem_aeron::Error> {
        let mut got = Vec::new();
        let n = self.input.poll(32, |m| got.push(m.bytes.to_vec()))?;
        for bytes in got {
            let Ok(h) = peek_header(&bytes) else { continue };
            if !self.templates.contains(&(h.schema_id, h.template_id)) {
                continue;
            }
            // Only valid messages cross, re-encoded with the stream id rewritten.
            let Ok(mut m) = decode_exact(&bytes) else { continue };
            if m.int("streamId") != Some(i128::from(self.from)) {
                continue;
            }
            if m.set("streamId", self.to).is_err() {
                continue;
            }
            if let Ok(out) = m.encode() {
                if self.output.offer(&out).is_sent() {
                    self.forwarded += 1;
                }
            }
        }
        Ok(n)
    }
}

/// The legs of a sender (local → bridge) or of a receiver (bridge → local).
pub(crate) fn legs(
    client: &Client,
    f: &Forwarding,
    local: &xmem_tp_control::Channels,
    bridge_control: &Endpoint,
    source: u32,
    dest: u32,
    outbound: bool,
) -> Result<Vec<Leg>, xmem_aeron::Error> {
    let mut legs = Vec::new();
    let pair = |a: &Endpoint, b: &Endpoint| {
        if outbound {
            (a.clone(), b.clone())
        } else {
            (b.clone(), a.clone())
        }
    };
    if let Some((bridge_meta, meta_id)) = &f.metadata {
        let (i, o) = pair(&local.metadata, bridge_meta);
        let (from, to) = if outbound {
            (source, *meta_id)
        } else {
            (*meta_id, dest)
        };
        if f.data_source {
            legs.push(Leg::new(client, &i, &o, DATA_SOURCE.to_vec(), from, to)?);
        }
        if f.tracelink {
            // TraceLinkSet is sent on the control stream (TL-5), so that is where it is read on
            // one host and written on the other.
            let (i, o) = pair(&local.control, bridge_meta);
            legs.push(Leg::new(client, &i, &o, vec![TRACE_LINK_SET], from, to)?);
        }
    }
    let (from, to) = if outbound { (source, dest) } else { (dest, dest) };
    if f.qos {
        let (i, o) = pair(&local.qos, bridge_control);
        legs.push(Leg::new(client, &i, &o, QOS.to_vec(), from, to)?);
    }
    if f.progress {
        let (i, o) = pair(&local.control, bridge_control);
        legs.push(Leg::new(client, &i, &o, vec![PROGRESS], from, to)?);
    }
    Ok(legs)
}
