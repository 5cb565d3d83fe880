"""TLS, mutual TLS with certificate reload, and bearer tokens on the real
quantd binary. Certificates are made by the openssl command for each test
session; nothing is committed."""
import pathlib
import shutil
import ssl
import subprocess
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import Server

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None,
                                reason="the openssl command is needed")


def _run(*args):
    subprocess.run(args, check=True, capture_output=True)


def _ca(d: pathlib.Path, name: str):
    key, crt = d / f"{name}.key", d / f"{name}.crt"
    _run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(crt))
    return key, crt


def _leaf(d: pathlib.Path, name: str, ca_key, ca_crt, server: bool):
    key, csr, crt = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.crt"
    ext = d / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n"
                   f"extendedKeyUsage={'serverAuth' if server else 'clientAuth'}\n")
    _run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
         "-keyout", str(key), "-out", str(csr))
    _run("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey",
         str(ca_key), "-CAcreateserial", "-days", "2", "-extfile", str(ext),
         "-out", str(crt))
    return key, crt


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca_crt = _ca(d, "test-ca")
    return {
        "dir": d,
        "ca": ca_crt,
        "server": _leaf(d, "server-one", ca_key, ca_crt, True),
        "server2": _leaf(d, "server-two", ca_key, ca_crt, True),
        "client": _leaf(d, "client", ca_key, ca_crt, False),
        "other_ca": _ca(d, "other-ca"),
    }


def _health(channel, service="quantd.v1.Quantizer", metadata=None):
    stub = health_pb2_grpc.HealthStub(channel)
    return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10,
                      metadata=metadata).status


def _info(pb, channel, metadata=None):
    q, q_grpc = pb
    return q_grpc.QuantizerStub(channel).GetServerInfo(q.GetServerInfoRequest(),
                                                       timeout=10, metadata=metadata)


def _secure(target, ca, key=None, crt=None):
    creds = grpc.ssl_channel_credentials(
        root_certificates=pathlib.Path(ca).read_bytes(),
        private_key=pathlib.Path(key).read_bytes() if key else None,
        certificate_chain=pathlib.Path(crt).read_bytes() if crt else None)
    return grpc.secure_channel(target, creds)


def test_tls_serves_only_tls_clients(pki, pb):
    key, crt = pki["server"]
    s = Server(f"--tls_cert_file={crt}", f"--tls_key_file={key}")
    try:
        assert _health(_secure(s.target, pki["ca"])) == health_pb2.HealthCheckResponse.SERVING
        assert _info(pb, _secure(s.target, pki["ca"])).workers == 2
        with pytest.raises(grpc.RpcError) as e:  # plaintext client
            _health(s.channel())
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as e:  # does not trust the server
            _health(_secure(s.target, pki["other_ca"][1]))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        assert s.stop() == 0


def _served_cn(port):
    pem = ssl.get_server_certificate(("127.0.0.1", port))
    text = subprocess.run(["openssl", "x509", "-noout", "-subject"], input=pem,
                          capture_output=True, text=True, check=True).stdout
    return text.strip().split("CN")[-1].strip(" =")


def test_mutual_tls_requires_a_client_certificate_and_reloads(pki, tmp_path):
    live_key, live_crt = tmp_path / "tls.key", tmp_path / "tls.crt"
    shutil.copy(pki["server"][0], live_key)
    shutil.copy(pki["server"][1], live_crt)
    s = Server(f"--tls_cert_file={live_crt}", f"--tls_key_file={live_key}",
               f"--tls_client_ca_file={pki['ca']}", "--tls_reload_seconds=1")
    try:
        ckey, ccrt = pki["client"]
        ok = _secure(s.target, pki["ca"], ckey, ccrt)
        assert _health(ok) == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as e:  # no client certificate
            _health(_secure(s.target, pki["ca"]))
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE
        assert _served_cn(s.grpc_port) == "server-one"
        # Rotate the files (key first, then certificate, as cert managers do).
        shutil.copy(pki["server2"][0], live_key)
        shutil.copy(pki["server2"][1], live_crt)
        deadline = time.time() + 15
        while time.time() < deadline and _served_cn(s.grpc_port) != "server-two":
            time.sleep(0.5)
        assert _served_cn(s.grpc_port) == "server-two"
        fresh = _secure(s.target, pki["ca"], ckey, ccrt)
        assert _health(fresh) == health_pb2.HealthCheckResponse.SERVING
    finally:
        assert s.stop() == 0


def test_bearer_tokens_guard_quantizer_not_health(pb, tmp_path):
    tokens = tmp_path / "tokens"
    tokens.write_text("# pipeline tokens\nalpha-123\n\n  beta-456  \n")
    s = Server(f"--auth_token_file={tokens}")
    try:
        ch = s.channel()
        assert _health(ch) == health_pb2.HealthCheckResponse.SERVING  # open
        with pytest.raises(grpc.RpcError) as e:
            _info(pb, ch)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as e:
            _info(pb, ch, metadata=[("authorization", "Bearer alpha-12")])
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert _info(pb, ch, metadata=[("authorization", "Bearer beta-456")]).workers == 2
    finally:
        assert s.stop() == 0


def test_bad_security_flags_stop_the_server_with_a_message(tmp_path):
    for args, words in [
        (["--tls_cert_file=/nonexistent.crt", "--tls_key_file=/nonexistent.key"],
         "cannot be read"),
        (["--tls_cert_file=/nonexistent.crt"], "both --tls_cert_file and --tls_key_file"),
        ([f"--auth_token_file={tmp_path / 'missing'}"], "cannot be read"),
    ]:
        with pytest.raises(RuntimeError) as e:
            Server(*args)
        assert words in str(e.value), str(e.value)


def test_quantctl_over_mutual_tls_with_a_token(pki, tmp_path):
    import numpy as np
    from safetensors.numpy import save_file
    from conftest import BIN_DIR

    key, crt = pki["server"]
    tokens = tmp_path / "tokens"
    tokens.write_text("gamma-789\n")
    s = Server(f"--tls_cert_file={crt}", f"--tls_key_file={key}",
               f"--tls_client_ca_file={pki['ca']}", f"--auth_token_file={tokens}")
    try:
        save_file({"w": np.linspace(-1, 1, 64 * 32, dtype=np.float32).reshape(64, 32)},
                  tmp_path / "m.safetensors")
        ckey, ccrt = pki["client"]
        quantctl = str(BIN_DIR / "client" / "quantctl")
        tls = ["--tls-ca", str(pki["ca"]), "--tls-cert", str(ccrt), "--tls-key", str(ckey)]
        # Host name "localhost" matches the certificate's subjectAltName.
        target = f"localhost:{s.grpc_port}"

        def run(*args, token=True):
            extra = ["--token-file", str(tokens)] if token else []
            return subprocess.run([quantctl, *args, *tls, *extra], capture_output=True,
                                  text=True, timeout=120)

        r = run("info", "--server", target)
        assert r.returncode == 0, r.stderr
        assert "int8" in r.stdout
        r = run("info", "--server", target, token=False)
        assert r.returncode == 1 and "UNAUTHENTICATED" in r.stderr, r.stderr
        out = tmp_path / "o.safetensors"
        r = run("quantize", str(tmp_path / "m.safetensors"), "--scheme", "int4_g16",
                "--out", str(out), "--server", target, "--quiet")
        assert r.returncode == 0, r.stderr
        assert out.exists()
        # Without TLS options the same server cannot be reached.
        r = subprocess.run([quantctl, "info", "--server", target], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 1
    finally:
        assert s.stop() == 0
