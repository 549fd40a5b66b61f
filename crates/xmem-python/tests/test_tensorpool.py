"""The SHM Tensor Pool over Aeron from Python: a Rust producer process (`xmem tp produce`) to a
Python consumer, a Python producer to a Rust consumer process, and Python to Python, all on a
real media driver (`xmem tp media-driver`) in a directory of the test's own."""

import os
import pathlib
import shutil
import subprocess
import time

import numpy as np
import pytest

import xmem

PERIOD = 0.2  # announce period of every party: three of them make an announce stale


@pytest.fixture
def rig(name, xmem_bin):
    """A media driver process and a base directory for regions; both must be gone at the end."""
    aeron = pathlib.Path(f"/dev/shm/{name}-aeron")
    base = pathlib.Path(f"/dev/shm/{name}-base")
    base.mkdir()
    driver = subprocess.Popen([xmem_bin, "tp", "media-driver", "--aeron-dir", str(aeron)],
                              stdout=subprocess.PIPE, text=True)
    assert driver.stdout.readline().startswith("media driver running in")
    children = []

    def tp(*args):
        p = subprocess.Popen([xmem_bin, "tp", *args, "--aeron-dir", str(aeron), "--driver", "external",
                              "--announce-period", f"{int(PERIOD * 1000)}ms"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        children.append(p)
        return p

    yield aeron, base, tp
    for p in children:
        if p.poll() is None:
            p.terminate()
        p.wait(timeout=30)
    driver.terminate()
    assert driver.wait(timeout=30) == 0
    left = sorted(str(p) for p in base.rglob("*"))
    shutil.rmtree(base, ignore_errors=True)
    assert not aeron.exists(), "the media driver removes its directory when it stops"
    assert not left, f"regions left behind: {left}"


def test_a_rust_producer_process_to_a_python_consumer_every_frame_checked(rig):
    aeron, base, tp = rig
    producer = tp("produce", "--base", str(base), "--stream", "10000", "--shape", "48x64x3", "--fps", "300")
    with xmem.TpConsumer(10000, aeron_dir=str(aeron), base=str(base), announce_period=PERIOD,
                         start_driver=False) as c:
        frames = []
        deadline = time.monotonic() + 30
        while len(frames) < 100 and time.monotonic() < deadline:
            f = c.receive(timeout=1.0)
            if f is not None:
                frames.append(f)
        assert len(frames) == 100, c.stats
        for f in frames:
            assert f.array.shape == (48, 64, 3) and f.array.dtype == np.uint8
            assert (f.array == f.seq % 256).all(), f"frame {f.seq} intact"
            assert f.timestamp_ns > 0 and f.publish_timestamp_ns is None and f.trace_id == 0
        assert [f.seq for f in frames] == sorted(f.seq for f in frames)
        assert len({f.epoch for f in frames}) == 1
        # Into an array of the caller's: no new array per frame.
        out = np.empty((48, 64, 3), dtype=np.uint8)
        f = c.receive(timeout=5.0, out=out)
        assert f.array is out and (out == f.seq % 256).all()
        with pytest.raises(ValueError, match="C-contiguous array of 9216 bytes"):
            c.receive(timeout=5.0, out=np.empty(10, dtype=np.uint8))
        assert c.state == "mapped"
        stats = c.stats
        assert stats["accepted"] >= 101 and stats["maps"] == 1
        # The producer stops: the consumer unmaps within three announce periods (W-15.14-1).
        producer.terminate()
        assert producer.wait(timeout=30) == 0
        stopped = time.monotonic()
        while c.state == "mapped":
            c.receive(timeout=0.05)
            assert time.monotonic() - stopped < 3 * PERIOD + 1.0
        # Announces stopped and so did the regions' activity stamps: whichever is seen first.
        stats = c.stats
        assert stats["unmaps_announce"] + stats["unmaps_activity"] == 1, stats


def test_a_python_producer_to_a_rust_consumer_process(rig):
    aeron, base, tp = rig
    with xmem.TpProducer(10001, (32, 32), "uint8", aeron_dir=str(aeron), base=str(base),
                         announce_period=PERIOD, start_driver=False) as p:
        consumer = tp("consume", "--base", str(base), "--stream", "10001", "--count", "50")
        deadline = time.monotonic() + 30
        seq = 0
        while consumer.poll() is None and time.monotonic() < deadline:
            seq = p.publish(np.full((32, 32), (seq + 1) % 256, dtype=np.uint8)) if seq else \
                p.publish(np.zeros((32, 32), dtype=np.uint8))
            time.sleep(0.005)
        out, err = consumer.communicate(timeout=30)
        assert consumer.returncode == 0, err
        assert "accepted 50 frames" in out and "0 with wrong bytes" in out, out
        assert p.stats["descriptors"] >= 50
        with pytest.raises(ValueError, match="this stream's frames have 1024"):
            p.publish(np.zeros(10, dtype=np.uint8))


def test_python_to_python_float_frames_and_no_driver_said_at_once(name, rig):
    aeron, base, _ = rig
    with xmem.TpProducer(10002, (4, 5), "float32", aeron_dir=str(aeron), base=str(base),
                         announce_period=PERIOD, start_driver=False) as p, \
            xmem.TpConsumer(10002, aeron_dir=str(aeron), base=str(base), announce_period=PERIOD,
                            start_driver=False) as c:
        got = None
        deadline = time.monotonic() + 20
        i = 0
        while got is None and time.monotonic() < deadline:
            p.publish(np.arange(20, dtype=np.float32).reshape(4, 5) * i, trace_id=7)
            i += 1
            got = c.receive(timeout=0.01)
        assert got is not None, c.stats
        assert got.array.dtype == np.float32 and got.array.shape == (4, 5)
        assert got.trace_id == 7 and got.epoch == p.epoch
        np.testing.assert_array_equal(got.array, np.arange(20, dtype=np.float32).reshape(4, 5) * got.seq)
    missing = f"/dev/shm/{name}-nodriver"
    started = time.monotonic()
    with pytest.raises(xmem.TensorPoolError, match="no media driver runs in"):
        xmem.TpConsumer(1, aeron_dir=missing, start_driver=False)
    assert time.monotonic() - started < 1.0
    assert not os.path.exists(missing)


def test_python_producer_and_consumer_attach_through_a_driver_process(name, xmem_bin):
    """`xmem tp driver` owns the regions; a Python producer and consumer attach through it
    (attach=True), exchange checked frames, and the driver's SIGTERM leaves nothing behind."""
    aeron = pathlib.Path(f"/dev/shm/{name}-aeron")
    base = pathlib.Path(f"/dev/shm/{name}-base")
    base.mkdir()
    config = pathlib.Path(f"/tmp/{name}-driver.toml")
    config.write_text(
        f'[shm]\nbase_dir = "{base}"\nallowed_base_dirs = ["{base}"]\n'
        "[policies]\nannounce_period_ms = 200\n"
        '[profiles.p]\nheader_nslots = 16\npayload_pools = [{ pool_id = 1, stride_bytes = 16384 }]\n'
        '[streams.s]\nstream_id = 10005\nprofile = "p"\n')
    driver = subprocess.Popen([xmem_bin, "tp", "driver", "--config", str(config), "--aeron-dir", str(aeron)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert driver.stdout.readline().startswith("tensor-pool driver ")
        with xmem.TpConsumer(10005, aeron_dir=str(aeron), base=str(base), announce_period=PERIOD,
                             start_driver=False, attach=True) as c, \
             xmem.TpProducer(10005, (32, 32, 3), aeron_dir=str(aeron), base=str(base),
                             announce_period=PERIOD, start_driver=False, attach=True) as p:
            received = []
            deadline = time.monotonic() + 30
            n = 0
            while len(received) < 20 and time.monotonic() < deadline:
                p.publish(np.full((32, 32, 3), n % 256, dtype=np.uint8))
                n += 1
                f = c.receive(timeout=0.05)
                if f is not None:
                    received.append(f)
            assert len(received) == 20, c.stats
            for f in received:
                assert (f.array == f.seq % 256).all()
            assert c.state == "mapped"
            # The regions are the driver's: under its base, made by it, not by the producer.
            assert any(base.rglob("header.ring"))
        # The driver's geometry is authoritative (D-3-1): a manual one is refused.
        with pytest.raises(ValueError, match="driver's to choose"):
            xmem.TpProducer(10005, (32, 32, 3), aeron_dir=str(aeron), base=str(base), nslots=4,
                            start_driver=False, attach=True)
        # A stream the driver does not serve is refused, saying so.
        with pytest.raises(xmem.TensorPoolError, match="not provisioned"):
            xmem.TpConsumer(10999, aeron_dir=str(aeron), base=str(base), start_driver=False, attach=True)
    finally:
        driver.terminate()
        assert driver.wait(timeout=30) == 0, driver.stderr.read()
        config.unlink()
    left = sorted(str(x) for x in base.rglob("*"))
    shutil.rmtree(base, ignore_errors=True)
    assert not left, f"the driver's clean shutdown leaves nothing: {left}"
    assert not aeron.exists()
