//! Streams over device pools: the stream's queue and subscribers are xmem's own, its buffers
//! live in one device allocation. The publisher synchronises the device before a frame becomes
//! visible, so a subscriber never reads a frame whose writes are still queued.

use std::sync::Arc;
use std::time::Duration;

use xmem_core::stream::{Publisher, PublisherBuilder, Subscriber, SubscriberBuilder};
use xmem_core::{Buffer, BufferMut};

use crate::backend::DeviceBackend;
use crate::error::{DeviceError, Result};
use crate::DevicePool;

/// The one publisher of a stream whose buffers are device memory.
#[derive(Debug)]
pub struct DevicePublisher {
    // The stream first: it leaves before the allocation does.
    publisher: Publisher,
    pool: Arc<DevicePool>,
}

/// A publish that failed, with the frame it took back.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct DevicePublishError {
    /// Why.
    pub error: DeviceError,
    /// The frame, still writable.
    pub frame: BufferMut,
}

impl DevicePublisher {
    /// Allocates the device memory, creates the pool `NAME.pool` on it and the stream over it.
    pub fn create(
        builder: PublisherBuilder,
        backend: impl DeviceBackend + 'static,
    ) -> Result<DevicePublisher> {
        let pool = DevicePool::create(builder.pool_builder()?, backend)?;
        let publisher = builder.create_with_pool(pool.pool().clone())?;
        Ok(DevicePublisher {
            publisher,
            pool: Arc::new(pool),
        })
    }

    /// The device pool: addresses, copies, synchronisation (shared: frames handed out may keep
    /// it, and so the mapping, alive).
    pub fn device(&self) -> &Arc<DevicePool> {
        &self.pool
    }

    /// The stream's publisher (subscriber counts, what was published).
    pub fn publisher(&mut self) -> &mut Publisher {
        &mut self.publisher
    }

    /// A buffer to write the next frame into.
    pub fn loan(&mut self) -> Result<BufferMut> {
        Ok(self.publisher.loan()?)
    }

    /// Waits for the device writes this process queued, then publishes the frame; returns its
    /// sequence number. On failure the frame comes back.
    pub fn publish(&mut self, frame: BufferMut) -> Result<u64, DevicePublishError> {
        if let Err(error) = self.pool.synchronize() {
            return Err(DevicePublishError { error, frame });
        }
        self.publisher.publish(frame).map_err(|e| {
            let (error, frame) = e.into_parts();
            DevicePublishError {
                error: error.into(),
                frame,
            }
        })
    }
}

/// A subscriber of a device stream: it holds the allocation (imported at open) and receives
/// frames whose device writes are complete.
#[derive(Debug)]
pub struct DeviceSubscriber {
    subscriber: Subscriber,
    pool: Arc<DevicePool>,
}

impl DeviceSubscriber {
    /// Attaches to the stream's device pool (receiving its descriptor from a live holder),
    /// mapped read-only (see [`DevicePool::open_auto_read_only`]), then subscribes.
    pub fn open(builder: SubscriberBuilder) -> Result<DeviceSubscriber> {
        let pool = DevicePool::open_auto_read_only(builder.pool_builder()?)?;
        let subscriber = builder.open()?;
        if subscriber.pool().pool_id() != pool.pool().pool_id() {
            return Err(DeviceError::Pool(xmem_core::Error::ConfigMismatch {
                name: subscriber.name().to_string(),
                detail: "its pool was replaced while subscribing; subscribe again".into(),
            }));
        }
        Ok(DeviceSubscriber {
            subscriber,
            pool: Arc::new(pool),
        })
    }

    /// The device pool: addresses and copies of the frames received (shared, as the
    /// publisher's).
    pub fn device(&self) -> &Arc<DevicePool> {
        &self.pool
    }

    /// The stream's subscriber (counters, notification descriptor).
    pub fn subscriber(&mut self) -> &mut Subscriber {
        &mut self.subscriber
    }

    /// The next frame, waiting up to `timeout`; `None` if none came.
    pub fn receive_timeout(&mut self, timeout: Duration) -> Result<Option<Buffer>> {
        Ok(self.subscriber.receive_timeout(timeout)?)
    }
}
