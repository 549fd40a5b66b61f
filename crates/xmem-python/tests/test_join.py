"""The join barrier from Python: sequence, timestamp and latest-value barriers answer at once."""

import pytest

import xmem


def test_a_sequence_barrier_joins_two_inputs_by_offset_and_window():
    b = xmem.SequenceBarrier(30, 7, [(10, "offset", 0), (11, "window", 2)])
    assert b.ready(0) == {"ready": False, "never": True}, "a window of 2 needs out ≥ 1"
    assert b.ready(5) == {"ready": False, "waiting_on": 0}
    b.observe(10, 7, 5)
    assert b.ready(5) == {"ready": False, "waiting_on": 1}
    b.observe(11, 7, 5)
    assert b.ready(5) == {"ready": True, "stale": []}
    with pytest.raises(ValueError, match="epoch 8"):
        b.observe(10, 8, 6)
    with pytest.raises(ValueError, match="no rule"):
        b.observe(99, 7, 1)
    with pytest.raises(ValueError, match="offset"):
        xmem.SequenceBarrier(30, 7, [(10, "lag", 1)])


def test_a_timestamp_barrier_with_lateness_and_monotonic_times():
    b = xmem.TimestampBarrier(31, 7, [(10, "offset_ns", -1000, "slot")], lateness_ns=100)
    b.observe(10, 7, 8_950)
    assert b.ready(10_000)["ready"], "8950 ≥ 10000 − 1000 − 100"
    assert not b.ready(10_100)["ready"]
    with pytest.raises(ValueError, match="backwards"):
        b.observe(10, 7, 5)
    with pytest.raises(ValueError, match="clock domain"):
        b.observe(10, 7, 9_000, clock_domain=2)


def test_latest_value_needs_every_input_and_forgets_overwritten_ones():
    l = xmem.LatestValue([10, 11], 3)
    l.observe(10, 3, 4)
    assert l.select() is None
    l.observe(11, 3, 9)
    assert l.select() == [4, 9]
    l.overwritten(10)
    assert l.select() is None
    l.new_epoch(4)
    l.observe(10, 4, 1)
    l.observe(11, 4, 1)
    assert l.select() == [1, 1]
