"""xmem: zero-copy shared-memory tensors and frames between processes.

Pools of typed buffers, publish/subscribe streams and seqlock segments in shared memory, with
numpy and DLPack views that never copy::

    import numpy as np, xmem

    pub = xmem.Publisher("camera", buffer_size=1080 * 1920 * 3)
    frame = pub.loan((1080, 1920, 3), "uint8")   # a writable numpy array in shared memory
    frame[:] = 0x80
    pub.publish()

    # in another process
    sub = xmem.Subscriber("camera")
    for frame in sub:                            # until the publisher is gone
        image = np.asarray(frame)                # read-only view, no copy
        tensor = torch.from_dlpack(frame)        # the same memory

Every error is an ``xmem.XmemError``; each kind has its own subclass (``NotFound``,
``Timeout``, ``PublisherGone``...) carrying a message that says what to do.
"""

from ._xmem import *  # noqa: F401,F403
from ._xmem import __version__, DTYPES  # noqa: F401

__all__ = [
    "Frame",
    "Pool",
    "DevicePool",
    "DevicePublisher",
    "DeviceSubscriber",
    "CUDA_BUILT",
    "Publisher",
    "Subscriber",
    "SegmentWriter",
    "SegmentReader",
    "TpConsumer",
    "TpProducer",
    "TpFrame",
    "TensorPoolError",
    "SequenceBarrier",
    "TimestampBarrier",
    "LatestValue",
    "DTYPES",
    "XmemError",
    "InvalidName",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "NoSpace",
    "Corrupt",
    "ConfigMismatch",
    "InvalidConfig",
    "NotReady",
    "PoolExhausted",
    "Timeout",
    "StaleRef",
    "Busy",
    "InvalidShape",
    "TooManyProcesses",
    "WriterExists",
    "WriterGone",
    "PublisherExists",
    "PublisherGone",
    "QueueFull",
    "TooManySubscribers",
    "OsError",
    "DeviceError",
]
