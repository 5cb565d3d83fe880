"""TLS, mutual TLS and bearer tokens against the real server. Certificates
are made with the openssl command for each run; nothing is committed."""
import pathlib
import shutil
import subprocess

import grpc
import numpy as np
import pytest

import quantd

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
        "ca": ca_crt,
        "server": _leaf(d, "server", ca_key, ca_crt, True),
        "client": _leaf(d, "client", ca_key, ca_crt, False),
        "other_ca": _ca(d, "other-ca")[1],
    }


W = np.linspace(-2, 2, 16 * 64, dtype=np.float32).reshape(16, 64)


def test_tls_with_tokens_right_wrong_and_missing(pki, make_server, tmp_path,
                                                 monkeypatch):
    monkeypatch.delenv("QUANTD_TOKEN", raising=False)
    tokens = tmp_path / "tokens"
    tokens.write_text("alpha-123\n")
    key, crt = pki["server"]
    s = make_server(f"--tls_cert_file={crt}", f"--tls_key_file={key}",
                    f"--auth_token_file={tokens}")
    opts = dict(tls_ca=pki["ca"], max_attempts=1)
    with quantd.Client(s.target, token="alpha-123", **opts) as c:
        assert c.server_info().workers == 2
        q = c.quantize(W, "int4_asym_g16")
        np.testing.assert_array_equal(q.dequantize(), q.dequantized)
    with quantd.Client(s.target, token="alpha-12", **opts) as c:
        with pytest.raises(quantd.PermissionDeniedError):
            c.server_info()
        with pytest.raises(quantd.PermissionDeniedError) as e:
            list(c.quantize_many([("a", W), ("b", W)], return_exceptions=True))
        assert e.value.code == grpc.StatusCode.PERMISSION_DENIED
    with quantd.Client(s.target, **opts) as c:
        with pytest.raises(quantd.UnauthenticatedError):
            c.quantize(W)
    # The token from the environment, and CA given as PEM bytes.
    monkeypatch.setenv("QUANTD_TOKEN", "alpha-123")
    with quantd.Client(s.target, tls_ca=pathlib.Path(pki["ca"]).read_bytes()) as c:
        assert c.quantize(W, "int8").layout.bits == 8
    # A CA that did not sign the server's certificate: no connection.
    with quantd.Client(s.target, tls_ca=pki["other_ca"], max_attempts=1) as c:
        with pytest.raises(quantd.UnavailableError):
            c.server_info()
    # Plaintext against a TLS server: no connection either.
    with quantd.Client(s.target, max_attempts=1) as c:
        with pytest.raises(quantd.UnavailableError):
            c.quantize(W)


def test_mutual_tls(pki, make_server):
    key, crt = pki["server"]
    s = make_server(f"--tls_cert_file={crt}", f"--tls_key_file={key}",
                    f"--tls_client_ca_file={pki['ca']}")
    ckey, ccrt = pki["client"]
    # By host name, which the certificate names.
    target = f"localhost:{s.port}"
    with quantd.Client(target, tls_ca=pki["ca"], tls_cert=ccrt, tls_key=ckey) as c:
        assert c.quantize(W, "int3_g32").layout.bits == 3
    with quantd.Client(target, tls_ca=pki["ca"], max_attempts=1) as c:
        with pytest.raises(quantd.UnavailableError):
            c.server_info()


def test_bad_tls_options():
    with pytest.raises(ValueError, match="both tls_cert and tls_key"):
        quantd.Client("127.0.0.1:1", tls_ca=b"x", tls_cert=b"y")
    with pytest.raises(ValueError, match="give tls_ca"):
        quantd.Client("127.0.0.1:1", tls_cert=b"y", tls_key=b"z")
    with pytest.raises(ValueError, match="cannot be read"):
        quantd.Client("127.0.0.1:1", tls_ca="/nonexistent/ca.pem")
