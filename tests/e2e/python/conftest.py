"""Fixtures for the Python end-to-end tests: the real `quantd` binary on
127.0.0.1 with ephemeral ports, and Python stubs generated from the proto.

Environment: QUANTD_BIN_DIR points at the build folder holding server/quantd
and client/quantctl (ctest sets it).
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
BIN_DIR = pathlib.Path(os.environ.get("QUANTD_BIN_DIR", ROOT / "build"))


def _generate_stubs(out_dir: pathlib.Path):
    from grpc_tools import protoc

    proto_dir = ROOT / "proto"
    rc = protoc.main([
        "protoc", f"-I{proto_dir}", f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(proto_dir / "quantd" / "v1" / "quantizer.proto"),
    ])
    assert rc == 0, "protoc failed"
    for d in (out_dir / "quantd", out_dir / "quantd" / "v1"):
        (d / "__init__.py").touch()
    sys.path.insert(0, str(out_dir))


@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    """The generated modules: (quantizer_pb2, quantizer_pb2_grpc)."""
    _generate_stubs(tmp_path_factory.mktemp("stubs"))
    from quantd.v1 import quantizer_pb2, quantizer_pb2_grpc
    return quantizer_pb2, quantizer_pb2_grpc


class Server:
    """A quantd process; ports are read from its JSON 'serving' log line."""

    def __init__(self, *extra_args):
        binary = BIN_DIR / "server" / "quantd"
        assert binary.exists(), f"{binary} not built"
        self.proc = subprocess.Popen(
            [str(binary), "--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
             "--workers=2", *extra_args],
            stderr=subprocess.PIPE, text=True)
        self.log = []
        self.grpc_port = None
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
                    self.grpc_port = entry["grpc_port"]
                    self.metrics_port = entry["metrics_port"]
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(30) or self.grpc_port is None:
            self.proc.kill()
            raise RuntimeError("quantd did not start:\n" + "".join(self.log))
        self.target = f"127.0.0.1:{self.grpc_port}"

    def channel(self):
        return grpc.insecure_channel(self.target, options=[
            ("grpc.max_receive_message_length", 8 << 20)])

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
def fresh_server():
    s = Server()
    yield s
    if s.proc.poll() is None:
        s.proc.kill()
        s.proc.wait()
