"""CUDA device pools with torch, across processes: the memory outlives a SIGKILLed creator and
reaches a newcomer through a survivor, is freed after the last holder, is never read stale
after a large asynchronous write, and is never reused while a consumer's kernel still reads it.
Skipped (saying why) where there is no GPU, no torch, or a module built without CUDA."""

import os
import subprocess
import sys
import textwrap

import pytest

import xmem

torch = pytest.importorskip("torch")
if not torch.cuda.is_available():
    pytest.skip("no CUDA device for torch here", allow_module_level=True)
if not xmem.CUDA_BUILT:
    pytest.skip("this xmem module was built without the cuda feature", allow_module_level=True)

# Device memory the driver may keep or round per process (one 2 MiB granule, plus slack).
SLACK = 8 << 20


def spawn(code, *args):
    """A Python process running `code` (it talks one line at a time on stdin/stdout)."""
    src = "import sys, os, time, torch, xmem\n" + textwrap.dedent(code)
    return subprocess.Popen(
        [sys.executable, "-c", src, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def free_memory_in_a_fresh_process():
    out = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.mem_get_info()[0])"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout)


CREATOR = """
    pool = xmem.DevicePool.create(sys.argv[1], buffers=4, buffer_size=64 << 20, device="cuda")
    frames = []
    for k in range(4):
        f = pool.acquire()
        torch.from_dlpack(f).fill_(k + 1)
        frames.append(f)
    pool.synchronize()
    for f in frames:
        f.freeze()
    print(" ".join(f.token.hex() for f in frames), flush=True)
    sys.stdin.readline()
"""

READER = """
    pool = xmem.DevicePool.open(sys.argv[1])
    f = pool.get(bytes.fromhex(sys.argv[2]))
    t = torch.from_dlpack(f)
    print(pool.received_from, int(t[0]), int(t[-1]), bool((t == int(sys.argv[3])).all()), flush=True)
"""


def test_a_killed_creators_memory_stays_valid_reaches_a_newcomer_and_is_freed_after_the_last(name):
    baseline = free_memory_in_a_fresh_process()
    a = spawn(CREATOR, name)
    tokens = a.stdout.readline().split()
    pool = xmem.DevicePool.open(name)
    assert pool.received_from == a.pid
    frames = [pool.get(bytes.fromhex(t)) for t in tokens[:2]]
    views = [torch.from_dlpack(f) for f in frames]
    assert views[0].device == torch.device("cuda", 0)
    a.kill()
    a.wait()
    assert bool((views[0] == 1).all()) and bool((views[1] == 2).all())
    # A newcomer gets the memory from this process, the creator being dead.
    c = spawn(READER, name, tokens[1], "2")
    got = c.stdout.readline().split()
    assert c.wait() == 0
    assert got == [str(os.getpid()), "2", "2", "True"], got
    del views, frames
    assert pool.reclaim() == 4  # the dead creator's four references
    assert pool.free_count == 4
    pool.close()
    after = free_memory_in_a_fresh_process()
    assert after + SLACK >= baseline, f"{(baseline - after) >> 20} MiB of device memory not returned"


WRITER = """
    pool = xmem.DevicePool.create(sys.argv[1], buffers=2, buffer_size=256 << 20, device="cuda")
    side = torch.cuda.Stream()
    for line in sys.stdin:
        k = int(line)
        f = pool.acquire()
        with torch.cuda.stream(side):
            torch.from_dlpack(f).fill_(k)   # queued, not done
        pool.synchronize()                  # what publishing does before the token goes out
        f.freeze()
        print(f.token.hex(), flush=True)
        f.release()
"""


def test_a_large_asynchronous_write_is_never_read_stale(name):
    w = spawn(WRITER, name)
    pool = None
    try:
        for i in range(40):
            k = 1 + i % 200
            w.stdin.write(f"{k}\n")
            w.stdin.flush()
            token = bytes.fromhex(w.stdout.readline().strip())
            pool = pool or xmem.DevicePool.open(name)
            f = pool.get(token)
            t = torch.from_dlpack(f)
            assert int(t[-1]) == k and bool((t == k).all()), f"round {i}: stale bytes"
            del t
            f.release()
    finally:
        w.stdin.close()
        w.wait()
        if pool:
            pool.close()


def test_a_consumer_kernel_still_reading_when_torch_drops_the_tensor_holds_the_buffer(name):
    with xmem.DevicePool.create(name, buffers=1, buffer_size=16 << 20, device="cuda") as pool:
        f = pool.acquire()
        f.freeze()
        s = torch.cuda.Stream()
        with torch.cuda.stream(s):
            t = torch.from_dlpack(f)        # __dlpack__(stream=s)
            torch.cuda._sleep(2_000_000_000)  # a long kernel on s, then a read of the buffer
            total = t.sum()
        del t
        f.release()
        # The release waited for s: the kernel ended before the buffer went back.
        assert s.query(), "the buffer was released while the consumer's stream still ran"
        assert pool.free_count == 1
        assert int(total) == 0
