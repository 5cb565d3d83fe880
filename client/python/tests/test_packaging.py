"""`pip install client/python` builds the stubs from the repository's proto,
and an sdist carries the proto so it builds anywhere. Runs pip without
network (--no-build-isolation: setuptools and grpcio-tools come from this
environment) on a copy of the package, so the checkout is never written."""
import importlib.util
import pathlib
import shutil
import subprocess
import sys
import tarfile

import pytest

from conftest import ROOT, SDK_DIR

pytestmark = pytest.mark.skipif(
    not (importlib.util.find_spec("pip") and importlib.util.find_spec("setuptools")),
    reason="pip and setuptools are needed")


def _mirror(tmp_path: pathlib.Path) -> pathlib.Path:
    """client/python and proto/ laid out as in the repository."""
    sdk = tmp_path / "repo" / "client" / "python"
    shutil.copytree(SDK_DIR, sdk, ignore=shutil.ignore_patterns(
        "__pycache__", "*.egg-info", "build", "dist", "quantizer_pb2*.py", "proto"))
    shutil.copytree(ROOT / "proto" / "quantd", tmp_path / "repo" / "proto" / "quantd",
                    ignore=shutil.ignore_patterns("*.cc", "*.h"))
    return sdk


def _pip_install(source, target: pathlib.Path):
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--no-build-isolation",
                        "--no-deps", "--no-index", "--quiet", "--target", str(target),
                        str(source)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def _import_from(site: pathlib.Path, tmp_path: pathlib.Path) -> str:
    code = ("import quantd, quantd.v1.quantizer_pb2 as pb; "
            "print(quantd.__file__); print(quantd.crc32c(b'123456789')); "
            "print(pb.TensorHeader.DESCRIPTOR.full_name)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": ""},
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_pip_install_generates_the_stubs(tmp_path):
    sdk = _mirror(tmp_path)
    site = tmp_path / "site"
    _pip_install(sdk, site)
    assert (site / "quantd" / "v1" / "quantizer_pb2_grpc.py").is_file()
    out = _import_from(site, tmp_path).split()
    assert out[0].startswith(str(site))
    assert out[1:] == [str(0xE3069283), "quantd.v1.TensorHeader"]
    # The generated code is built, never written into the package sources.
    assert not list((sdk / "quantd" / "v1").glob("quantizer_pb2*.py"))


def test_sdist_carries_the_proto(tmp_path):
    sdk = _mirror(tmp_path)
    dist = tmp_path / "dist"
    r = subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(dist)],
                       cwd=sdk, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    (archive,) = dist.glob("quantd-*.tar.gz")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert any(n.endswith("/proto/quantd/v1/quantizer.proto") for n in names), names
    assert not any("quantizer_pb2" in n for n in names), names
    # Built away from the repository: only the sdist's own proto is there.
    shutil.rmtree(tmp_path / "repo")
    site = tmp_path / "site"
    _pip_install(archive, site)
    assert _import_from(site, tmp_path).split()[2] == "quantd.v1.TensorHeader"
