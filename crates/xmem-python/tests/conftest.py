"""Fixtures: unique object names with a leak check, and the `xmem` command."""

import itertools
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
SHM = pathlib.Path(os.environ.get("XMEM_SHM_DIR", "/dev/shm"))
_counter = itertools.count()


@pytest.fixture
def name():
    """A name no other test uses; the test fails if it leaves an object of that name behind."""
    prefix = f"pytest-{os.getpid()}-{next(_counter)}"
    yield prefix
    left = sorted(p.name for p in SHM.glob(f"xmem.{prefix}*"))
    for f in left:
        (SHM / f).unlink()
    assert not left, f"the test left {left} in {SHM}"


@pytest.fixture(scope="session")
def xmem_bin():
    """The `xmem` command: $XMEM_BIN, or built from this checkout."""
    exe = os.environ.get("XMEM_BIN")
    if exe:
        return exe
    subprocess.run(["cargo", "build", "-q", "-p", "xmem-cli"], cwd=ROOT, check=True)
    return str(ROOT / "target" / "debug" / "xmem")
