"""Test session setup: huggingface_hub talks only to a local Hub stand-in, never to the network or user cache.

The environment is set at import time, before anything imports huggingface_hub (diffusers does), and is
exported through `os.environ` so subprocesses inherit it.
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


HUB_PORT = _free_port()
HUB_ENDPOINT = f"http://127.0.0.1:{HUB_PORT}"
_HF_HOME = tempfile.mkdtemp(prefix="ddpm-ext-hf-home-")
atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)

for _name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_STORED_TOKENS_PATH", "HF_HUB_CACHE",
              "HUGGINGFACE_HUB_CACHE", "HF_ASSETS_CACHE", "HUGGINGFACE_ASSETS_CACHE", "HF_DATASETS_CACHE",
              "HF_XET_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_MODULES_CACHE"):
    os.environ.pop(_name, None)
os.environ.update({
    "HF_ENDPOINT": HUB_ENDPOINT,
    "HF_HOME": _HF_HOME,
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_XET": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "DO_NOT_TRACK": "1",
    "NO_PROXY": ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"])),
})
os.environ["no_proxy"] = os.environ["NO_PROXY"]

if "huggingface_hub.constants" in sys.modules:  # too late: it already read the real endpoint
    raise RuntimeError("huggingface_hub was imported before tests/conftest.py could set HF_ENDPOINT")


def _block_network(event: str, args: tuple) -> None:
    """Refuse any socket connection that leaves the machine."""
    if event == "socket.connect" and isinstance(args[1], tuple) and args[1]:
        try:
            loopback = ipaddress.ip_address(str(args[1][0]).split("%")[0]).is_loopback
        except ValueError:
            loopback = args[1][0] == "localhost"
        if not loopback:
            raise ConnectionRefusedError(f"tests must not reach the network (connect to {args[1]!r})")


sys.addaudithook(_block_network)
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402
from hub_server import HubStandIn  # noqa: E402


@pytest.fixture
def hub_server(tmp_path: Path):
    """A fresh Hub stand-in serving at `HF_ENDPOINT` (its storage in `tmp_path`)."""
    with HubStandIn(tmp_path / "hub", port=HUB_PORT) as server:
        yield server


@pytest.fixture
def hf_token() -> str:
    """A token to pass explicitly (`token=hf_token`); the stand-in accepts any bearer token."""
    return "hf_ddpm_ext_test_token"


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """accelerate keeps one process-wide state that a later `Accelerator` may not change (its device, its mixed
    precision): start and leave every test without one, so in-process training runs do not depend on test order."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def one_thread():
    """torch on one thread for the test: tiny kernels gain nothing from threads, and spinning threads stall when
    other jobs share the cores. The previous thread count is restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
