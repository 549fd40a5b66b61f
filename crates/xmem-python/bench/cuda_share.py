"""Benchmark: GPU frames from a producer process to a consumer process, xmem device pools
beside torch.multiprocessing's CUDA sharing, in one run on one GPU.

Frames are fp16 1920x1080x3 and 3840x2160x3. Each side's producer writes every frame on the
GPU (fill_), makes it visible (xmem: DevicePool.synchronize before the token goes out; torch:
its IPC event), and sends a handle; the consumer maps it, reads it on the GPU (a sum), and lets
go. Reported: frames/s, p50 and p99 latency (producer's send → consumer's read done), and the
producer's synchronisation cost. Run: python3 bench/cuda_share.py [--seconds S]
"""

import argparse
import os
import statistics
import sys
import time

import torch
import torch.multiprocessing as mp

import xmem

SHAPES = {"1080p": (1080, 1920, 3), "2160p": (2160, 3840, 3)}


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(p * (len(values) - 1)))] if values else 0.0


# ---- xmem: a device pool, tokens over a pipe --------------------------------------------


def xmem_producer(name, shape, seconds, conn, ready):
    size = shape[0] * shape[1] * shape[2] * 2
    pool = xmem.DevicePool.create(name, buffers=4, buffer_size=size, device="cuda")
    ready.set()
    conn.recv()  # the consumer is attached
    sync_ns = []
    end = time.monotonic() + seconds
    k = 0
    while time.monotonic() < end:
        f = pool.acquire(timeout=5)
        torch.from_dlpack(f).view(torch.float16).fill_(k % 100)
        t = time.perf_counter_ns()
        pool.synchronize()
        sync_ns.append(time.perf_counter_ns() - t)
        f.freeze()
        conn.send((f.token, time.perf_counter_ns(), k % 100))
        f.release()
        k += 1
    conn.send(None)
    conn.recv()  # the consumer is done
    conn.send(statistics.median(sync_ns) if sync_ns else 0)
    pool.close()


def xmem_run(shape, seconds):
    name = f"bench-cuda-{os.getpid()}"
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    ready = ctx.Event()
    p = ctx.Process(target=xmem_producer, args=(name, shape, seconds, child, ready))
    p.start()
    ready.wait()
    pool = xmem.DevicePool.open(name)
    parent.send("attached")
    lat, n, t0 = [], 0, time.monotonic()
    while True:
        msg = parent.recv()
        if msg is None:
            break
        token, sent, value = msg
        f = pool.get(token)
        s = torch.from_dlpack(f).view(torch.float16)
        ok = float(s[0, 0, 0]) == value
        lat.append(time.perf_counter_ns() - sent)
        assert ok, "a frame was read stale"
        del s
        f.release()
        n += 1
    elapsed = time.monotonic() - t0
    parent.send("done")
    sync = parent.recv()
    p.join()
    pool.close()
    return n / elapsed, pct(lat, 0.5), pct(lat, 0.99), sync


# ---- torch.multiprocessing: CUDA tensors through a queue ---------------------------------


def torch_producer(shape, seconds, q, back):
    frames = [torch.empty(shape, dtype=torch.float16, device="cuda") for _ in range(4)]
    back.get()  # the consumer is ready
    end = time.monotonic() + seconds
    k = 0
    while time.monotonic() < end:
        t = frames[k % 4]
        back.get()  # the consumer let go of a frame (4 in flight at most, as xmem's 4 buffers)
        t.fill_(k % 100)
        q.put((t, time.perf_counter_ns(), k % 100))
        k += 1
    q.put(None)
    back.get()


def torch_run(shape, seconds):
    ctx = mp.get_context("spawn")
    q, back = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=torch_producer, args=(shape, seconds, q, back))
    p.start()
    for _ in range(5):
        back.put(1)
    lat, n, t0 = [], 0, time.monotonic()
    while True:
        msg = q.get()
        if msg is None:
            break
        t, sent, value = msg
        ok = float(t[0, 0, 0]) == value
        lat.append(time.perf_counter_ns() - sent)
        assert ok, "a frame was read stale"
        del t, msg
        back.put(1)
        n += 1
    elapsed = time.monotonic() - t0
    back.put(1)
    p.join()
    return n / elapsed, pct(lat, 0.5), pct(lat, 0.99)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}; xmem {xmem.__version__}")
    print(f"{'frame':8} {'who':8} {'frames/s':>9} {'p50':>10} {'p99':>10}  ratio (xmem/torch)")
    for label, shape in SHAPES.items():
        xf, x50, x99, sync = xmem_run(shape, args.seconds)
        tf, t50, t99 = torch_run(shape, args.seconds)
        print(f"{label:8} {'xmem':8} {xf:9.0f} {x50 / 1e3:9.1f}µs {x99 / 1e3:9.1f}µs  fps {xf / tf:.2f}×, p50 {x50 / t50:.2f}×")
        print(f"{label:8} {'torch':8} {tf:9.0f} {t50 / 1e3:9.1f}µs {t99 / 1e3:9.1f}µs")
        print(f"{label:8} xmem producer's synchronize before each publish: p50 {sync / 1e3:.1f}µs")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
