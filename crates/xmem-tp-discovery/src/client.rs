//! Asking a provider: the request re-sent with the same id until its answer comes (a provider's
//! responses are fire-and-forget, and a new response publication may miss the first), answers
//! to other requests dropped, results that fail the checks dropped.

use std::time::{Duration, Instant};

use xmem_aeron::{Client, Publication, Subscription};
use xmem_tp_control::Endpoint;

use crate::messages::{Request, Response, Status};

/// Why a query gave no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoverError {
    /// No provider answered.
    #[error("no discovery provider answered on {requests} within {waited:?}; is one running (`xmem tp discoveryd`, or a driver with [discovery] enabled)?")]
    Timeout {
        /// The request stream.
        requests: Endpoint,
        /// How long.
        waited: Duration,
    },
    /// The provider answered ERROR.
    #[error("the discovery provider refused the request: {0}")]
    Refused(String),
    /// A request that cannot be sent (its strings).
    #[error("encoding the request: {0}")]
    Encode(String),
    /// Aeron.
    #[error(transparent)]
    Aeron(#[from] xmem_aeron::Error),
}

/// A client of one provider.
pub struct Discoverer {
    requests: Publication,
    responses: Subscription,
    reply_to: Endpoint,
    next_id: u64,
    /// Results dropped by the checks so far.
    pub dropped: u64,
}

impl Discoverer {
    /// Asks on `requests`, hears answers on `reply_to`.
    pub fn new(
        client: &Client,
        requests: Endpoint,
        reply_to: Endpoint,
    ) -> Result<Discoverer, xmem_aeron::Error> {
        Ok(Discoverer {
            requests: client.publication(&requests.channel, requests.stream_id)?,
            responses: client.subscription(&reply_to.untethered(), reply_to.stream_id)?,
            reply_to,
            next_id: xmem_core::os::random::u64() >> 1,
            dropped: 0,
        })
    }

    /// Sends `filters` (its id and response endpoint are filled in here) every `retry` until
    /// answered or `timeout`. NOT_FOUND is an answer with no results.
    pub fn query(
        &mut self,
        filters: &Request,
        timeout: Duration,
        retry: Duration,
    ) -> Result<Response, DiscoverError> {
        self.next_id = self.next_id.wrapping_add(1);
        let request = Request {
            request_id: self.next_id,
            response_channel: self.reply_to.channel.clone(),
            response_stream_id: self.reply_to.stream_id as u32,
            ..filters.clone()
        };
        let bytes = request
            .encode()
            .map_err(|e| DiscoverError::Encode(e.to_string()))?;
        let deadline = Instant::now() + timeout;
        let mut next_send = Instant::now();
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(DiscoverError::Timeout {
                    requests: Endpoint {
                        channel: self.requests.channel().to_string(),
                        stream_id: self.requests.stream_id(),
                    },
                    waited: timeout,
                });
            }
            if now >= next_send {
                let _ = self.requests.offer(&bytes);
                next_send = now + retry;
            }
            let mut got = None;
            self.responses.poll(16, |m| {
                if let Some(r) = Response::decode(m.bytes) {
                    if r.request_id == request.request_id && got.is_none() {
                        got = Some(r);
                    }
                }
            })?;
            if let Some(mut r) = got {
                if r.status == Status::Error {
                    return Err(DiscoverError::Refused(r.error_message));
                }
                let before = r.results.len();
                r.results.retain(|f| f.check().is_ok());
                self.dropped += (before - r.results.len()) as u64;
                return Ok(r);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
