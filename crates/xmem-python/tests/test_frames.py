"""Frames as numpy arrays and DLPack tensors: exact values for every dtype across processes, no
copies, read-only where they must be, and a reference that lives exactly as long as its views."""

import gc
import multiprocessing

import numpy as np
import pytest

import xmem
from peers import NUMPY_DTYPES, SHAPE, check_tokens, values

spawn = multiprocessing.get_context("spawn")


def test_every_dtype_round_trips_exactly_to_another_process(name):
    pool = xmem.Pool.create(name, buffers=len(NUMPY_DTYPES), buffer_size=4096)
    frames, tokens = [], []
    for dtype in NUMPY_DTYPES:
        frame = pool.acquire(timeout=1)
        frame.set_tensor(SHAPE, dtype)
        a = np.asarray(frame)
        assert a.flags.writeable and a.dtype == np.dtype(dtype) and a.shape == SHAPE
        a[...] = values(dtype)
        del a
        frame.freeze()
        frames.append(frame)
        tokens.append((dtype, frame.token))
    out = spawn.Queue()
    child = spawn.Process(target=check_tokens, args=(name, tokens, out))
    child.start()
    failures = out.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert failures == []
    del frames, frame
    assert pool.free_count == len(NUMPY_DTYPES)
    pool.close()


def test_dtypes_are_named_like_numpy_and_bfloat16_says_where_to_go(name):
    pool = xmem.Pool.create(name, buffers=1, buffer_size=64)
    frame = pool.acquire()
    for dt in (np.float32, np.dtype("int16"), "complex64", "f8"):
        frame.set_tensor((2,), dt)
        assert np.asarray(frame).dtype == np.dtype(dt)
    frame.set_tensor((2, 2), "bfloat16")
    assert frame.dtype == "bfloat16"
    with pytest.raises(BufferError, match="torch.from_dlpack"):
        np.asarray(frame)
    with pytest.raises(TypeError, match="unknown dtype"):
        frame.set_tensor((2,), "float128")
    with pytest.raises(xmem.InvalidShape):
        frame.set_tensor((100,), "float64")  # 800 bytes in a 64-byte buffer
    frame.release()
    pool.close()


def test_views_share_the_buffer_memory_and_never_copy(name):
    pool = xmem.Pool.create(name, buffers=2, buffer_size=1 << 16)
    frame = pool.acquire()
    frame.set_tensor((64, 64, 3), "uint8")
    a = np.asarray(frame)
    b = np.from_dlpack(frame)
    m = memoryview(frame)
    assert a.ctypes.data == frame.address == b.ctypes.data
    assert np.shares_memory(a, b) and np.shares_memory(a, np.asarray(m))
    a[1, 2, :] = (7, 8, 9)
    assert tuple(b[1, 2]) == (7, 8, 9)
    del a, b
    m.release()
    frame.freeze()
    other = pool.get(frame.token)  # a second reference: the same memory
    assert np.shares_memory(np.asarray(other), np.asarray(frame))
    assert tuple(np.asarray(other)[1, 2]) == (7, 8, 9)
    del other, frame
    gc.collect()
    pool.close()


def test_strided_tensors_come_out_with_their_strides(name):
    pool = xmem.Pool.create(name, buffers=1, buffer_size=4096)
    frame = pool.acquire()
    frame.set_tensor((4, 3), "int32", strides=(4, 16))  # column-major 4x3
    a = np.asarray(frame)
    assert a.strides == (4, 16) and a.flags.f_contiguous
    a[...] = np.arange(12, dtype=np.int32).reshape(4, 3)
    assert np.array_equal(np.from_dlpack(frame), a)
    del a
    frame.release()
    pool.close()


def test_read_only_frames_give_read_only_views(name):
    pool = xmem.Pool.create(name, buffers=1, buffer_size=4096)
    frame = pool.acquire()
    frame.set_tensor((8,), "float64")
    frame.freeze()
    assert frame.readonly
    a = np.asarray(frame)
    assert not a.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        a[0] = 1.0
    d = np.from_dlpack(frame)
    assert not d.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        d[0] = 1.0
    m = memoryview(frame)
    assert m.readonly
    with pytest.raises(TypeError):
        m[0] = 1.0
    m.release()
    with pytest.raises(ValueError, match="read-only"):
        frame.sequence = 5
    del a, d
    frame.release()
    pool.close()


def test_the_reference_is_let_go_when_the_last_view_dies(name):
    pool = xmem.Pool.create(name, buffers=2, buffer_size=4096)
    frame = pool.acquire()
    frame.set_tensor((16,), "uint8")
    a = np.asarray(frame)
    d = np.from_dlpack(frame)
    view_of_view = a[::2]
    with pytest.raises(BufferError, match="still view"):
        frame.release()
    del frame
    gc.collect()
    assert pool.free_count == 1, "arrays keep it"
    del a
    gc.collect()
    assert pool.free_count == 1, "a slice of the array and a DLPack array keep it"
    del d
    gc.collect()
    assert pool.free_count == 1, "the slice keeps it"
    del view_of_view
    gc.collect()
    assert pool.free_count == 2

    with pool.acquire() as frame:  # leaving the block lets go, or leaves it to the last view
        kept = np.asarray(frame)
    assert pool.free_count == 1
    del kept
    gc.collect()
    assert pool.free_count == 2
    with pool.acquire() as frame:
        pass
    assert frame.released_ and pool.free_count == 2
    with pytest.raises(ValueError, match="released"):
        np.asarray(frame)
    with pytest.raises(ValueError, match="released"):
        memoryview(frame)
    pool.close()


def test_a_capsule_never_consumed_lets_go_too(name):
    pool = xmem.Pool.create(name, buffers=1, buffer_size=64)
    frame = pool.acquire()
    capsule = frame.__dlpack__()
    del frame
    gc.collect()
    assert pool.free_count == 0
    del capsule
    gc.collect()
    assert pool.free_count == 1
    pool.close()


def test_torch_tensors_view_frames_without_copying(name):
    torch = pytest.importorskip("torch", reason="torch is not installed here; numpy's DLPack import is tested instead")
    pool = xmem.Pool.create(name, buffers=2, buffer_size=4096)
    frame = pool.acquire()
    frame.set_tensor((4, 4), "float32")
    t = torch.from_dlpack(frame)
    t.fill_(2.5)
    assert t.data_ptr() == frame.address
    assert np.all(np.asarray(frame) == 2.5)
    other = pool.acquire()
    other.set_tensor((3,), "bfloat16")
    tb = torch.from_dlpack(other)
    assert tb.dtype == torch.bfloat16
    tb.copy_(torch.tensor([1.0, -2.0, 0.5], dtype=torch.bfloat16))
    assert torch.equal(torch.from_dlpack(other), tb)
    del t, tb, frame, other
    gc.collect()
    assert pool.free_count == 2
    pool.close()
