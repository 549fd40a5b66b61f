"""1920x1080x3 frames from a producer process to a Python consumer that touches every frame as
a numpy array: xmem streams beside multiprocessing.shared_memory + a pipe and a pickling
multiprocessing.Queue, all in one run. Run by hand (about a minute per round; three rounds by
default, every transport in each, medians reported):

    scripts/python-env && .venv/bin/python crates/xmem-python/bench/frames.py [--read pages|one] [--rounds 3]

Two figures per transport:
  * rate: frames/s with the producer sending as fast as the consumer takes them (nothing lost);
  * notification: time from the producer's stamp, taken just before it sends, to the consumer
    having the frame, with frames paced at 100/s so that no queue forms (p50 / p99).
Every transport does the same work per frame: the producer stamps the frame's first bytes
(`--write header`, the default) or writes every byte (`--write full`, a memset in place); the
consumer reads one byte of every 4 KiB page (`--read pages`, the default), or only the frame's
first element (`--read one`), which leaves the transports' own costs.

Where `xmem-bench-peer` is built (`cargo build --release -p xmem-bench`), each round also runs
a Rust publisher and a Rust subscriber with the same pacing (notification only): what the host
does to a process that handles one frame every 10 ms, without Python. This host has stretches of
seconds in which every cold cache miss costs several times more, and both figures move together.
"""

import argparse
import multiprocessing as mp
import os
import pickle
import subprocess
import time
from multiprocessing import shared_memory

# numpy's OpenBLAS starts a pool of threads in every process that imports it, and they spin for
# a while: on a small machine they take CPU from the producer and consumer being measured. This
# benchmark does no linear algebra, so one thread is all it needs (spawned children inherit it).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import xmem

SHAPE = (1080, 1920, 3)
NBYTES = int(np.prod(SHAPE))
# Buffers (xmem) and slots (shared_memory) per run: few, so that frames stay in cache. Spawned
# children read it from the environment, which `--slots` sets.
SLOTS = int(os.environ.get("XMEM_BENCH_SLOTS", "3"))
DEPTH = 1  # frames queued ahead of the consumer
FULL = False  # set from --write in main(); children get it as an argument
spawn = mp.get_context("spawn")
# The Rust reference's peer binary (see the docstring); the reference is left out without it.
PEER = os.environ.get(
    "XMEM_BENCH_PEER",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "target", "release", "xmem-bench-peer"),
)


PAGES = True  # set from --read in main(); only the consumer (this process) reads


def touch(a):
    """Reads one byte of every page of the frame (`--read pages`, the default: what a consumer
    that looks at the whole frame at least does), or its first element (`--read one`: the frame
    used as an array, with nothing but the transport and the array to pay for)."""
    if PAGES:
        return int(a.reshape(-1)[::4096].sum())
    return int(a[0, 0, 0])


def percentiles(lat):
    lat = np.sort(np.asarray(lat, dtype=np.float64)) / 1000.0
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 99))


# ---- xmem --------------------------------------------------------------------------------

def write(a, i, full):
    if full:
        a.fill(i & 0xFF)
    else:
        a[0, 0, 0] = i & 0xFF


def xmem_producer(name, frames, period, ready, full, spin):
    pub = xmem.Publisher(name, buffer_size=NBYTES, buffers=SLOTS, depth=DEPTH, policy="block", timeout=60, spin=spin)
    ready.put("created")
    while pub.subscriber_count < 1:
        time.sleep(0.001)  # waiting for the consumer to start, once
    start = time.monotonic()
    for i in range(frames):
        if period:
            due = start + i * period
            while time.monotonic() < due:
                pass
        a = pub.loan(SHAPE, "uint8")
        write(a, i, full)
        pub.publish()  # stamps the time just before publishing
        del a  # lets the buffer be recycled as soon as the consumer is done with it
    pub.close()


def xmem_consumer(name, frames, spin, wake_ahead):
    sub = xmem.Subscriber(name, spin=spin, wake_ahead=wake_ahead)
    lat = []
    t0 = None
    for frame in sub:
        now = time.monotonic_ns()
        lat.append(now - frame.timestamp_ns)
        touch(np.asarray(frame))
        if t0 is None:
            t0 = time.monotonic()
        del frame
    return (frames - 1) / (time.monotonic() - t0), lat


# ---- shared_memory + pipe ------------------------------------------------------------------

def shm_producer(shm_name, frames, period, conn, ready, full):
    shm = shared_memory.SharedMemory(name=shm_name)
    slots = np.ndarray((SLOTS,) + SHAPE, dtype=np.uint8, buffer=shm.buf)
    free = list(range(SLOTS))
    ready.put("created")
    start = time.monotonic()
    for i in range(frames):
        if period:
            due = start + i * period
            while time.monotonic() < due:
                pass
        while not free or conn.poll():
            free.append(conn.recv())  # the consumer returns slots: backpressure
        s = free.pop()
        write(slots[s], i, full)
        conn.send((s, time.monotonic_ns()))
    conn.send(None)
    del slots
    shm.close()


def shm_consumer(shm_name, conn):
    shm = shared_memory.SharedMemory(name=shm_name)
    slots = np.ndarray((SLOTS,) + SHAPE, dtype=np.uint8, buffer=shm.buf)
    lat, n, t0 = [], 0, None
    while True:
        msg = conn.recv()
        if msg is None:
            break
        s, stamp = msg
        lat.append(time.monotonic_ns() - stamp)
        touch(slots[s])
        conn.send(s)
        n += 1
        if t0 is None:
            t0 = time.monotonic()
    rate = (n - 1) / (time.monotonic() - t0)
    del slots
    shm.close()
    return rate, lat


# ---- pickling Queue -----------------------------------------------------------------------

def queue_producer(q, frames, period, ready, full):
    frame = np.zeros(SHAPE, dtype=np.uint8)
    ready.put("created")
    start = time.monotonic()
    for i in range(frames):
        if period:
            due = start + i * period
            while time.monotonic() < due:
                pass
        write(frame, i, full)
        q.put((time.monotonic_ns(), frame))
    q.put(None)


def queue_consumer(q):
    lat, n, t0 = [], 0, None
    while True:
        msg = q.get()
        if msg is None:
            break
        stamp, frame = msg
        lat.append(time.monotonic_ns() - stamp)
        touch(frame)
        n += 1
        if t0 is None:
            t0 = time.monotonic()
    return (n - 1) / (time.monotonic() - t0), lat


# ---- Rust publisher -> Rust subscriber (the reference) -----------------------------------

def run_rust(frames, period):
    """Notification only: a Rust publisher and subscriber in two processes, paced like the rest."""
    name = f"bench-rs-{os.getpid()}-{time.monotonic_ns()}"
    write = "full" if FULL else "header"
    pub = subprocess.Popen([PEER, "paced-pub", name, str(frames), str(int(period * 1e9)), str(NBYTES), write])
    sub = subprocess.run([PEER, "paced-sub", name, str(frames)], capture_output=True, text=True)
    if pub.wait() != 0 or sub.returncode != 0:
        raise RuntimeError(f"the Rust reference failed: {sub.stderr.strip()}")
    return None, [int(x) for x in sub.stdout.split()]


# ---- the runs -----------------------------------------------------------------------------

def run_xmem(frames, period, spin=None, wake_ahead=None):
    name = f"bench-py-{os.getpid()}-{time.monotonic_ns()}"
    ready = spawn.Queue()
    p = spawn.Process(target=xmem_producer, args=(name, frames, period, ready, FULL, spin))
    p.start()
    ready.get()
    result = xmem_consumer(name, frames, spin, wake_ahead)
    p.join()
    return result


def run_shm(frames, period):
    shm = shared_memory.SharedMemory(create=True, size=SLOTS * NBYTES)
    np.ndarray((SLOTS,) + SHAPE, dtype=np.uint8, buffer=shm.buf)[...] = 0  # pre-fault, like xmem
    a, b = spawn.Pipe()
    ready = spawn.Queue()
    p = spawn.Process(target=shm_producer, args=(shm.name, frames, period, a, ready, FULL))
    p.start()
    ready.get()
    result = shm_consumer(shm.name, b)
    p.join()
    shm.close()
    shm.unlink()
    return result


def run_queue(frames, period):
    q = spawn.Queue(maxsize=SLOTS)
    ready = spawn.Queue()
    p = spawn.Process(target=queue_producer, args=(q, frames, period, ready, FULL))
    p.start()
    ready.get()
    result = queue_consumer(q)
    p.join()
    return result


def main():
    global FULL, SLOTS, PAGES
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=2000, help="frames per rate run")
    ap.add_argument("--paced", type=int, default=300, help="frames per notification run (100/s)")
    ap.add_argument("--write", choices=["header", "full"], default="header")
    ap.add_argument("--read", choices=["pages", "one"], default="pages", help="what the consumer reads of each frame")
    ap.add_argument("--slots", type=int, default=SLOTS, help="buffers in flight, for every transport")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of every transport, interleaved")
    args = ap.parse_args()
    FULL = args.write == "full"
    PAGES = args.read == "pages"
    SLOTS = args.slots
    os.environ["XMEM_BENCH_SLOTS"] = str(SLOTS)
    print(f"1920x1080x3 uint8 frames, producer writes: {args.write}; consumer reads: {args.read}; {SLOTS} slots; {os.cpu_count()} CPUs; {args.rounds} rounds")
    rows = [
        ("xmem stream, receive() (spins 20 µs, then sleeps)", run_xmem, {}),
        ("xmem stream, receive() waking 300 µs ahead", run_xmem, {"wake_ahead": 0.0003}),
        ("xmem stream, receive() spinning up to 20 ms", run_xmem, {"spin": 0.02}),
    ]
    # Right after the polling Python row, so that both fall into the same stretch of the host.
    if os.access(PEER, os.X_OK):
        rows.append(("reference: Rust publisher -> Rust subscriber, polling", run_rust, {}))
    else:
        print(f"(the Rust reference is left out: no {PEER}; `cargo build --release -p xmem-bench` builds it)")
    base = len(rows)  # the row every rate is divided by, in the same round
    rows += [
        ("multiprocessing.shared_memory + Pipe", run_shm, {}),
        ("multiprocessing.Queue (pickles each frame)", run_queue, {}),
    ]
    # results[row] = list of (rate, p50, p99), one per round. Rounds run every transport in turn,
    # so that a noisy stretch of the host falls on all of them, and each ratio is taken within
    # one round.
    results = [[] for _ in rows]
    for r in range(args.rounds):
        for i, (label, run, extra) in enumerate(rows):
            frames = args.frames if run is not run_queue else max(50, args.frames // 20)
            rate = run(frames, 0.0, **extra)[0] if run is not run_rust else None
            _, lat = run(args.paced, 0.01, **extra)
            p50, p99 = percentiles(lat)
            results[i].append((rate, p50, p99))
            shown = f"{rate:9.0f} frames/s" if rate is not None else f"{'—':>18s}"
            print(f"round {r + 1}: {label:52s} {shown}   notification p50 {p50:8.1f} µs  p99 {p99:8.1f} µs", flush=True)
    def med(values):
        return float(np.median(values))

    print()
    print("| transport | frames/s (median) | × shared_memory+Pipe, median (min–max) of the rounds | notification p50 / p99 (µs, medians) |")
    print("|---|---|---|---|")
    for (label, _, _), res in zip(rows, results):
        if res[0][0] is None:
            rate = ratio = "—"
        else:
            ratios = [rate / b[0] for (rate, _, _), b in zip(res, results[base])]
            rate = f"{med([x[0] for x in res]):,.0f}"
            ratio = f"{med(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})"
        print(f"| {label} | {rate} | {ratio} | {med([x[1] for x in res]):.1f} / {med([x[2] for x in res]):.1f} |")


if __name__ == "__main__":
    main()
