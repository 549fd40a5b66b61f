"""Publishes 1920x1080x3 frames on stream "camera", filled in place (no copy), 30 per second.

    .venv/bin/python crates/xmem-python/examples/producer.py      # or: xmem produce camera --fps 30
"""

import signal
import time

import numpy as np

import xmem

SHAPE = (1080, 1920, 3)
signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill` ends it cleanly too

with xmem.Publisher("camera", buffer_size=int(np.prod(SHAPE)), buffers=6, history=1) as pub:
    print("publishing on 'camera'; Ctrl-C to stop")
    yy, xx = np.mgrid[0:SHAPE[0], 0:SHAPE[1]]
    try:
        for i in range(1_000_000):
            frame = pub.loan(SHAPE, "uint8")      # a numpy array over shared memory
            frame[..., 0] = (xx + i) & 0xFF        # written in place: the subscribers read this
            frame[..., 1] = (yy + i) & 0xFF
            frame[..., 2] = i & 0xFF
            pub.publish()
            del frame                              # let the buffer be recycled
            time.sleep(1 / 30)
    except KeyboardInterrupt:
        pass
