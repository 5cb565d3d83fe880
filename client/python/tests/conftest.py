"""Fixtures of the SDK tests: the package built from this checkout (stubs
generated from the repository's proto, outside the source tree) and real
`quantd` servers on 127.0.0.1 with ephemeral ports.

Environment: QUANTD_BIN_DIR is the build folder holding server/quantd
(ctest sets it); QUANTD_SDK_BUILD, where the package is assembled (default:
a temporary folder).
"""
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.request

import pytest

SDK_DIR = pathlib.Path(__file__).resolve().parents[1]
ROOT = SDK_DIR.parents[1]
BIN_DIR = pathlib.Path(os.environ.get("QUANTD_BIN_DIR", ROOT / "build"))


def _assemble_package() -> pathlib.Path:
    """Copies the package next to freshly generated stubs and puts it first
    on sys.path, so the tests run this checkout's code whatever is installed."""
    out = pathlib.Path(os.environ.get("QUANTD_SDK_BUILD") or
                       tempfile.mkdtemp(prefix="quantd-sdk-"))
    shutil.rmtree(out / "quantd", ignore_errors=True)
    shutil.copytree(SDK_DIR / "quantd", out / "quantd",
                    ignore=shutil.ignore_patterns("__pycache__", "quantizer_pb2*.py"))
    sys.path.insert(0, str(SDK_DIR))
    try:
        import build_stubs
    finally:
        sys.path.remove(str(SDK_DIR))
    build_stubs.generate(out)
    sys.path.insert(0, str(out))
    for name in [m for m in sys.modules if m == "quantd" or m.startswith("quantd.")]:
        del sys.modules[name]
    return out


PACKAGE_DIR = _assemble_package()


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A quantd process; its port is read from the JSON 'serving' log line."""

    def __init__(self, *extra_args, port: int = 0):
        binary = BIN_DIR / "server" / "quantd"
        if not binary.exists():
            pytest.fail(f"{binary} not built (set QUANTD_BIN_DIR)")
        self.args = extra_args
        self.proc = subprocess.Popen(
            [str(binary), f"--listen=127.0.0.1:{port}",
             "--metrics_listen=127.0.0.1:0", "--workers=2", *extra_args],
            stderr=subprocess.PIPE, text=True)
        self.log = []
        self.port = None
        self.metrics_port = None
        ready = threading.Event()

        def pump():
            for line in self.proc.stderr:
                self.log.append(line)
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if entry.get("msg") == "serving":
                    self.port = entry["grpc_port"]
                    self.metrics_port = entry["metrics_port"]
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(30) or self.port is None:
            self.proc.kill()
            raise RuntimeError("quantd did not start:\n" + "".join(self.log))
        self.target = f"127.0.0.1:{self.port}"

    def handled(self, method: str) -> dict:
        """grpc_server_handled_total of `method` by status code name."""
        text = urllib.request.urlopen(
            f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10).read().decode()
        counts = {}
        for line in text.splitlines():
            if line.startswith("grpc_server_handled_total{") and \
                    f'grpc_method="{method}"' in line:
                code = line.split('grpc_code="')[1].split('"')[0]
                counts[code] = counts.get(code, 0) + float(line.rsplit(" ", 1)[1])
        return counts

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stop(self, timeout=30):
        """SIGTERM; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture(scope="session")
def server():
    s = Server()
    yield s
    assert s.stop() == 0, "".join(s.log)


@pytest.fixture
def client(server):
    import quantd
    with quantd.Client(server.target) as c:
        yield c


@pytest.fixture
def make_server():
    """Starts servers with extra flags; kills whatever is left at the end."""
    started = []

    def make(*args, port=0):
        s = Server(*args, port=port)
        started.append(s)
        return s

    yield make
    for s in started:
        s.kill()
