"""Receives the frames of stream "camera" as numpy arrays and, if torch is installed, as torch
tensors over the same memory; prints a line per second.

    .venv/bin/python crates/xmem-python/examples/consumer.py
"""

import time

import numpy as np

import xmem

try:
    import torch
except ImportError:
    torch = None

sub = xmem.Subscriber("camera")
last = time.monotonic()
for frame in sub:                                  # ends when the publisher is gone
    image = np.asarray(frame)                      # read-only view, no copy
    latency_us = (time.monotonic_ns() - frame.timestamp_ns) / 1000
    mean = float(image[::8, ::8].mean())
    if torch is not None:
        t = torch.from_dlpack(frame)               # the same memory as a uint8 tensor
        mean = float(t[::8, ::8].float().mean())
    if time.monotonic() - last >= 1:
        print(f"frame {frame.sequence}: {image.shape} {image.dtype}, mean {mean:.1f}, "
              f"latency {latency_us:.0f} µs, dropped {sub.dropped}")
        last = time.monotonic()
    del image, frame
print("the publisher is gone")
