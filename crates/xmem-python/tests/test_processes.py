"""Streams and segments between real processes: a Rust producer, Python publishers and
subscribers started with multiprocessing (spawn), SIGKILL, Ctrl-C, and typed errors."""

import gc
import multiprocessing
import os
import signal
import subprocess
import time

import numpy as np
import pytest

import xmem
from peers import (
    hold_and_wait,
    receive_counting_wakeups,
    receive_until_interrupted,
    subscribe_and_check,
    write_into_received,
)

spawn = multiprocessing.get_context("spawn")


def join(stream, deadline_s=30):
    """Subscribes once the stream exists (it is created by another process)."""
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return xmem.Subscriber(stream)
        except xmem.NotFound:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)  # waiting for another process to create it, not a synchronisation


def test_a_python_subscriber_checks_every_frame_of_a_rust_producer(name, xmem_bin):
    count = 200
    producer = subprocess.Popen(
        [xmem_bin, "produce", name, "--shape", "120x160x3", "--count", str(count),
         "--subscribers", "1", "--policy", "block", "--timeout", "30s"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        sub = join(name)
        assert producer.stdout.readline().strip() == "ready"
        seqs, bad = [], 0
        for frame in sub:
            a = np.asarray(frame)
            assert a.shape == (120, 160, 3) and a.dtype == np.uint8 and not a.flags.writeable
            bad += int(not np.all(a == frame.sequence % 256))
            seqs.append(frame.sequence)
        assert seqs == list(range(count)), "every frame, in order"
        assert bad == 0
        assert sub.dropped == 0
        sub.close()
    finally:
        assert producer.wait(timeout=60) == 0


def test_python_publisher_to_two_spawned_subscribers_loses_nothing(name):
    count = 100
    pub = xmem.Publisher(name, buffer_size=64 * 64 * 3, buffers=6, depth=2, policy="block", timeout=30)
    out = spawn.Queue()
    children = [spawn.Process(target=subscribe_and_check, args=(name, count, out)) for _ in range(2)]
    for c in children:
        c.start()
    assert [out.get(timeout=60) for _ in children] == ["joined", "joined"]
    assert pub.subscriber_count == 2
    for seq in range(count):
        if seq % 2:
            a = pub.loan((64, 64, 3), "uint8")  # filled in place
            a[...] = seq % 251
            assert pub.publish() == seq
            assert not a.flags.writeable, "subscribers read it now"
        else:
            assert pub.publish_array(np.full((64, 64, 3), seq % 251, dtype=np.uint8)) == seq
    pub.close()
    reports = [out.get(timeout=60) for _ in children]
    for c in children:
        c.join(timeout=60)
        assert c.exitcode == 0
    assert reports == [(count, 0, True)] * 2


def test_wake_ahead_keeps_a_steady_stream_from_waking_its_subscriber(name):
    """50 frames at 50 Hz: with `wake_ahead` the subscriber is awake when they come; without,
    the publisher wakes it for each one (the control)."""
    pub = xmem.Publisher(name, buffer_size=64, buffers=4, depth=2, policy="block", timeout=30)
    out = spawn.Queue()
    children = [spawn.Process(target=receive_counting_wakeups, args=(name, lead, out)) for lead in (0.003, None)]
    for c in children:
        c.start()
        assert out.get(timeout=60) == "joined"
    frames, period = 50, 0.02
    start = time.monotonic()
    late = 0  # frames published > 2 ms after their time (a busy machine): see the Rust twin
    for i in range(frames):
        due = start + i * period
        time.sleep(max(0.0, due - time.monotonic()))  # the stream's frame clock
        late += time.monotonic() > due + 0.002
        pub.publish_array(np.full(8, i, dtype=np.uint8))
    pub.close()
    reports = [out.get(timeout=60) for _ in children]
    for c in children:
        c.join(timeout=60)
        assert c.exitcode == 0
    by_lead = {r[0]: r[1:] for r in reports}
    (ordered_a, got_a, woken_ahead), (ordered_b, got_b, woken_plain) = by_lead[0.003], by_lead[None]
    assert ordered_a and ordered_b and got_a == got_b == frames
    assert woken_plain + late >= frames * 4 // 5, f"the control was woken only {woken_plain} times ({late} late)"
    assert woken_ahead <= frames // 2 + 2 * late, f"woken {woken_ahead} of {frames} times despite wake_ahead ({late} late)"
    with pytest.raises(ValueError, match="wake_ahead"):
        xmem.Subscriber(name, wake_ahead=-1)


def test_a_subscriber_killed_with_sigkill_leaves_nothing_held(name):
    buffers = 6
    pub = xmem.Publisher(name, buffer_size=4096, buffers=buffers, depth=2, policy="drop_oldest")
    out, never = spawn.Queue(), spawn.Event()
    child = spawn.Process(target=hold_and_wait, args=(name, out, never))
    child.start()
    assert out.get(timeout=60) == "joined"
    for _ in range(2):
        pub.publish_array(np.ones(1024, dtype=np.float32))
    assert out.get(timeout=60) == "holding"
    for _ in range(2):  # queued for it, never taken
        pub.publish_array(np.ones(1024, dtype=np.float32))
    assert pub.free_count < buffers
    os.kill(child.pid, signal.SIGKILL)
    child.join(timeout=30)
    deadline = time.monotonic() + 10
    while pub.subscriber_count > 0 and time.monotonic() < deadline:
        time.sleep(0.005)  # the publisher notices through a pidfd, polled every 10 ms
    assert pub.subscriber_count == 0
    assert pub.free_count == buffers, "what it held and what was queued came back"
    pub.close()


@pytest.mark.parametrize("how", ["pointer", "torch"])
def test_writing_into_a_received_frame_faults_instead_of_changing_what_others_read(name, how):
    if how == "torch":
        pytest.importorskip("torch", reason="torch is not installed here; a raw pointer writes instead")
    buffers = 4
    pub = xmem.Publisher(name, buffer_size=64, buffers=buffers, depth=2)
    out = spawn.Queue()
    child = spawn.Process(target=write_into_received, args=(name, how, out))
    child.start()
    assert out.get(timeout=60) == "joined"
    with xmem.Subscriber(name) as other:
        pub.publish_array(np.full(64, 7, dtype=np.uint8))
        child.join(timeout=60)
        assert child.exitcode == -signal.SIGSEGV, "the write faulted (the subscriber's mapping is read-only)"
        assert out.empty(), "nothing after the write ran"
        frame = other.receive(timeout=60)
        assert np.all(np.asarray(frame) == 7), "what the other subscriber reads is what was published"
        del frame
    deadline = time.monotonic() + 10
    while pub.subscriber_count > 0 and time.monotonic() < deadline:
        time.sleep(0.005)  # the publisher notices the dead subscriber through a pidfd
    assert pub.free_count == buffers, "what the dead subscriber held came back"
    pub.close()


@pytest.mark.parametrize("spin", [None, 3600.0], ids=["sleeping", "polling"])
def test_ctrl_c_interrupts_a_blocking_receive_which_releases_the_gil(name, spin):
    pub = xmem.Publisher(name, buffer_size=64)
    blocked, progressed = spawn.Event(), spawn.Event()
    child = spawn.Process(target=receive_until_interrupted, args=(name, blocked, progressed, spin))
    child.start()
    assert blocked.wait(timeout=60)
    assert progressed.wait(timeout=30), "another thread ran while receive() waited"
    os.kill(child.pid, signal.SIGINT)
    child.join(timeout=30)
    assert child.exitcode == 42, "KeyboardInterrupt reached the caller of receive()"
    pub.close()


def test_errors_are_typed_and_say_what_to_do(name):
    with pytest.raises(xmem.InvalidName, match="'/'"):
        xmem.Pool.open("a/b")
    with pytest.raises(xmem.NotFound, match="xmem ls"):
        xmem.Subscriber(name)
    pub = xmem.Publisher(name, buffer_size=64, buffers=2)
    with pytest.raises(xmem.PublisherExists):
        xmem.Publisher(name, buffer_size=64)
    sub = xmem.Subscriber(name)
    with pytest.raises(ValueError, match="policy"):
        xmem.Publisher(name + "x", buffer_size=64, policy="sometimes")
    pub.publish_array(np.zeros(8, dtype=np.uint64))
    pub.close()
    frame = sub.receive(timeout=5)
    assert np.asarray(frame).dtype == np.uint64
    with pytest.raises(xmem.PublisherGone):
        sub.receive(timeout=5)
    assert issubclass(xmem.PublisherGone, xmem.XmemError)
    del frame
    sub.close()

    pool = xmem.Pool.create(name + "-pool", buffers=1, buffer_size=64)
    held = pool.acquire()
    token = held.token
    with pytest.raises(xmem.Timeout):
        pool.acquire(timeout=0.05)
    assert pool.try_acquire() is None
    held.release()
    with pytest.raises(xmem.StaleRef):
        pool.get(token)
    with pytest.raises(ValueError, match="timeout"):
        pool.acquire(timeout=-1)
    pool.close()
    gc.collect()


def test_segments_hand_the_latest_value_to_readers(name):
    with xmem.SegmentWriter(name, 4096) as w:
        r = xmem.SegmentReader(name)
        assert r.version is None or r.version == 0
        w.write(b"hello")
        assert r.read()[:5] == b"hello"
        value = np.arange(512, dtype=np.float64)
        w.write(value)
        out = np.empty(512, dtype=np.float64)
        r.read_into(out)
        assert np.array_equal(out, value)
        assert r.writer_alive
        with pytest.raises(xmem.WriterExists):
            xmem.SegmentWriter(name, 4096)
        r.close()


def test_fileno_becomes_readable_when_a_frame_arrives(name):
    import select

    pub = xmem.Publisher(name, buffer_size=64)
    sub = xmem.Subscriber(name, notify=True)
    assert sub.try_receive() is None  # arms the descriptor
    readable, _, _ = select.select([sub.fileno()], [], [], 0)
    assert readable == []
    pub.publish_array(np.arange(8, dtype=np.uint8))
    readable, _, _ = select.select([sub.fileno()], [], [], 10)
    assert readable == [sub.fileno()]
    frame = sub.try_receive()
    assert np.array_equal(np.asarray(frame), np.arange(8, dtype=np.uint8))
    del frame
    sub.close()
    pub.close()


def test_a_publish_refused_on_a_full_queue_leaves_the_loaned_array_to_publish_again(name):
    pub = xmem.Publisher(name, buffer_size=64, buffers=4, depth=1, policy="block", timeout=0.02)
    sub = xmem.Subscriber(name)
    assert pub.publish_array(np.zeros(8, dtype=np.uint8)) == 0
    a = pub.loan((8,), "uint8")
    a[...] = 7
    with pytest.raises(xmem.QueueFull):
        pub.publish()
    assert a.flags.writeable and (a == 7).all(), "not published: still the caller's"
    assert pub.published == 1
    with sub.receive(timeout=5) as first:
        assert first.sequence == 0
    assert pub.publish() == 1
    with sub.receive(timeout=5) as second:
        assert (np.asarray(second) == 7).all()
    sub.close()
    pub.close()
