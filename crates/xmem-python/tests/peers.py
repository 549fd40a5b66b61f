"""Functions run in child processes (multiprocessing, spawn): importable by the children."""

import os
import signal
import threading

import numpy as np

import xmem

SHAPE = (3, 5)
NUMPY_DTYPES = [
    "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
    "float16", "float32", "float64", "bool", "complex64", "complex128",
]


def values(dtype):
    """Deterministic values of `dtype` that use its whole range (no NaN, so equality holds)."""
    dt = np.dtype(dtype)
    n = int(np.prod(SHAPE))
    if dt.kind == "b":
        return (np.arange(n) % 3 == 0).reshape(SHAPE)
    if dt.kind in "ui":
        info = np.iinfo(dt)
        step = (int(info.max) - int(info.min)) // (n - 1)
        return np.array([int(info.min) + step * k for k in range(n)], dtype=dt).reshape(SHAPE)
    if dt.kind == "f":
        info = np.finfo(dt)
        out = np.linspace(-1, 1, n).astype(dt)
        out.flat[0], out.flat[1], out.flat[2] = info.max, info.min, info.tiny
        return out.reshape(SHAPE)
    re = np.linspace(-3, 3, n)
    return (re + 1j * re[::-1]).astype(dt).reshape(SHAPE)


def check_tokens(pool_name, tokens, out):
    """Gets each (dtype, token) from the pool and compares with `values(dtype)`."""
    pool = xmem.Pool.open(pool_name)
    failures = []
    for dtype, token in tokens:
        frame = pool.get(token)
        a = np.asarray(frame)
        if a.dtype != np.dtype(dtype) or a.shape != SHAPE or not np.array_equal(a, values(dtype)):
            failures.append(f"{dtype}: got {a.dtype} {a.shape} {a!r}")
        del a
        frame.release()
    out.put(failures)


def subscribe_and_check(stream, count, out):
    """Receives `count` frames of a Python publisher and checks each one's values."""
    sub = xmem.Subscriber(stream)
    out.put("joined")
    bad, seqs = 0, []
    for frame in sub:
        a = np.asarray(frame)
        if not np.all(a == frame.sequence % 251) or a.shape != (64, 64, 3):
            bad += 1
        seqs.append(frame.sequence)
    out.put((len(seqs), bad, seqs == list(range(count))))


def receive_counting_wakeups(stream, wake_ahead, out):
    """Receives until the publisher is gone; reports frames and how often it had to be woken."""
    sub = xmem.Subscriber(stream, wake_ahead=wake_ahead)
    out.put("joined")
    seqs = [frame.sequence for frame in sub]
    out.put((wake_ahead, seqs == list(range(len(seqs))), len(seqs), sub.wakeups))


def hold_and_wait(stream, out, never):
    """Receives and holds frames as numpy arrays and DLPack views, then waits to be killed."""
    sub = xmem.Subscriber(stream)
    out.put("joined")
    kept = []
    for _ in range(2):
        frame = sub.receive(timeout=10)
        kept.append(np.asarray(frame))
        kept.append(np.from_dlpack(frame))
    out.put("holding")
    never.wait()


def receive_until_interrupted(stream, blocked, progressed, spin):
    """Blocks in receive(); a thread counts meanwhile (the GIL is free); Ctrl-C ends it. With a
    long `spin` the receive polls all along (taking the GIL now and then), else it sleeps."""
    sub = xmem.Subscriber(stream, spin=spin)

    def count():
        # Far longer than the interpreter's switch interval: most of it runs while the main
        # thread waits in receive(), which it could not if receive() held the GIL.
        for _ in range(3_000_000):
            pass
        progressed.set()

    try:
        threading.Thread(target=count, daemon=True).start()
        blocked.set()
        sub.receive()
    except KeyboardInterrupt:
        os._exit(42)
    os._exit(1)




def write_into_received(stream, how, out):
    """Receives one frame and writes into it through a view that knows no read-only flag: a raw
    pointer (ctypes) or a torch tensor. The subscriber's mapping is read-only, so this faults."""
    sub = xmem.Subscriber(stream)
    out.put("joined")
    frame = sub.receive(timeout=60)
    if how == "torch":
        import torch

        torch.from_dlpack(frame).add_(1)
    else:
        import ctypes

        ctypes.memset(frame.address, 0xFF, 1)
    out.put("wrote")
    os._exit(0)
