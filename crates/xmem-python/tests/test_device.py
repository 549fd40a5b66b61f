"""Device pools from Python: frames are DLPack producers on their device, and the memory is
handed between processes (here the host stand-in, a memfd passed exactly as a CUDA
allocation's descriptor is; the CUDA tests run where a GPU and torch are)."""

import signal
import subprocess

import numpy as np
import pytest

import xmem
from conftest import ROOT, SHM


@pytest.fixture(scope="session")
def device_peer():
    """The Rust device-pool test peer, built from this checkout."""
    subprocess.run(["cargo", "build", "-q", "-p", "xmem-device", "--bin", "device-peer"], cwd=ROOT, check=True)
    return str(ROOT / "target" / "debug" / "device-peer")


class Peer:
    def __init__(self, exe, *args):
        self.proc = subprocess.Popen([exe, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("ready "), line
        self.pid = int(line.split()[1].removeprefix("pid="))

    def ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def quit(self):
        self.proc.stdin.write("quit\n")
        self.proc.stdin.close()
        assert self.proc.wait() == 0

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def test_a_host_device_frame_is_a_dlpack_producer_on_its_device(name):
    with xmem.DevicePool.create(name, buffers=2, buffer_size=4096, device="host") as pool:
        assert pool.device == "the host stand-in"
        f = pool.acquire()
        assert f.__dlpack_device__() == (1, 0)
        a = np.from_dlpack(f)
        a[:] = 7
        assert a.ctypes.data == f.data_ptr
        del a
        assert pool.read(f) == bytes([7]) * 4096
        pool.write(f, b"\x09" * 10, offset=4086)
        f.freeze()
        b = np.from_dlpack(f)
        assert not b.flags.writeable
        assert b[:4086].tolist() == [7] * 4086 and b[4086:].tolist() == [9] * 10
        with pytest.raises(BufferError, match="no stream"):
            f.__dlpack__(stream=1)
        with pytest.raises(BufferError, match="cannot be exported"):
            f.__dlpack__(dl_device=(2, 0))
        del b
        f.release()


def test_memory_written_in_python_is_read_by_another_process_after_python_let_go(name, device_peer):
    pool = xmem.DevicePool.create(name, buffers=2, buffer_size=1 << 16, device="host")
    f = pool.acquire()
    pool.write(f, bytes([42]) * (1 << 16))
    pool.synchronize()
    f.freeze()
    token = f.token.hex()
    reader = Peer(device_peer, "open", str(SHM), name)
    assert reader.ask(f"hold {token} 42") == "ok"
    f.release()
    pool.close()
    assert reader.ask(f"check {token} 42") == "ok"
    reader.quit()


def test_python_reads_a_killed_creators_frames_through_its_own_mapping(name, device_peer):
    creator = Peer(device_peer, "create", str(SHM), name, "2", "65536")
    tokens = creator.ask("fill 5 2").removeprefix("tokens ").split(",")
    pool = xmem.DevicePool.open(name)
    assert pool.received_from == creator.pid
    frames = [pool.get(bytes.fromhex(t)) for t in tokens]
    views = [np.from_dlpack(f) for f in frames]
    creator.kill()
    assert views[0].min() == views[0].max() == 5
    assert views[1].min() == views[1].max() == 6
    del views, frames
    # The dead creator's references are returned, and with ours gone both buffers are free.
    assert pool.reclaim() == 2
    assert pool.free_count == 2
    pool.close()


def test_cuda_is_refused_with_a_reason_where_there_is_none(name):
    try:
        pool = xmem.DevicePool.create(name, buffers=1, buffer_size=64, device="cuda")
    except xmem.DeviceError as e:
        assert "CUDA" in str(e) or "cuda" in str(e)
        return
    pool.close()
    pytest.skip("CUDA is available here; tested by test_torch_reads_a_cuda_frame_without_a_copy")


def test_a_device_name_it_does_not_know_is_a_value_error(name):
    for bad in ("gpu", "cuda:x", "cuda:-1"):
        with pytest.raises(ValueError, match="cuda:N"):
            xmem.DevicePool.create(name, buffers=1, buffer_size=64, device=bad)


def _torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device for torch here")
    if not xmem.CUDA_BUILT:
        pytest.skip("this xmem module was built without the cuda feature")
    return torch


def test_torch_reads_a_cuda_frame_without_a_copy(name):
    torch = _torch_cuda()
    with xmem.DevicePool.create(name, buffers=2, buffer_size=1 << 20, device="cuda") as pool:
        f = pool.acquire()
        assert f.__dlpack_device__() == (2, 0)
        t = torch.from_dlpack(f)
        assert t.device == torch.device("cuda", 0)
        assert t.data_ptr() == f.data_ptr
        t.fill_(3)
        del t
        pool.synchronize()
        f.freeze()
        s = torch.cuda.Stream()
        with torch.cuda.stream(s):
            r = torch.from_dlpack(f)
            assert int(r.sum()) == 3 * (1 << 20)
        del r
        f.release()



def test_a_device_stream_reaches_a_subscriber_here_and_one_in_another_process(name, device_peer):
    pub = xmem.DevicePublisher(name, buffer_size=4096, device="host", buffers=4, policy="block")
    sub = xmem.DeviceSubscriber(name)
    other = Peer(device_peer, "subscribe", str(SHM), name, "20")
    for k in range(20):
        f = pub.loan((64, 64))
        a = np.from_dlpack(f)
        a[:] = k
        with pytest.raises(BufferError, match="delete them"):
            pub.publish(f)
        del a
        assert pub.publish(f) == k
        r = sub.receive(timeout=5)
        assert r.__dlpack_device__() == (1, 0)
        v = np.from_dlpack(r)
        assert v.shape == (64, 64) and v.min() == v.max() == k
        del v, r
    assert other.proc.stdout.readline().strip() == "received 20"
    assert other.proc.wait() == 0
    pub.close()
    sub.close()
