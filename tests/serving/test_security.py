"""TLS, mutual TLS and bearer tokens, through the SDK, the `myelin` CLI, a stock KServe client (gRPC and
HTTP) and plain HTTPS requests: the HTTP port takes the gRPC port's certificates and tokens.

Certificates are made here for this session: a CA, a server certificate for 127.0.0.1/localhost,
a client certificate, and a client certificate from a CA the server does not trust.
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from harness.http import http_request
from harness.servers import ServerProcess, ServerThread, settings_for
from harness.tritonclient import KServeCall, run_tritonclient, tritonclient_job
from myelin_api.kserve.v2 import grpc_predict_v2_pb2 as pb
from myelin_api.kserve.v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from myelin_client import Client, UnauthenticatedError, UnavailableError
from myelin_client.cli import main as cli

TOKENS = ("token-for-tests-a1b2c3", "second-token-d4e5f6")
ZEROS = np.zeros((1, 28, 28), np.uint8)


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # a client certificate signed by a CA the server does not trust
    rogue_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer if issuer else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(folder: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_key, rogue_ca_key = _key(), _key()
    ca = _certificate("Myelin test CA", ca_key, None, ca=True)
    rogue_ca = _certificate("Somebody else's CA", rogue_ca_key, None, ca=True)
    ca_path, _ = _write(folder, "ca", ca, ca_key)
    server_key, client_key, rogue_key = _key(), _key(), _key()
    server = _write(
        folder, "server", _certificate("localhost", server_key, (ca.subject, ca_key), server=True), server_key
    )
    client = _write(folder, "client", _certificate("test client", client_key, (ca.subject, ca_key)), client_key)
    rogue = _write(folder, "rogue", _certificate("rogue", rogue_key, (rogue_ca.subject, rogue_ca_key)), rogue_key)
    return Pki(ca_path, *server, *client, *rogue)


@pytest.fixture(scope="module")
def secure_server(classifier_repository: Path, pki: Pki) -> Iterator[ServerThread]:
    """TLS and bearer tokens, as in production."""
    settings = settings_for(
        classifier_repository,
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
        auth_tokens=list(TOKENS),
        http_port=0,
    )
    with ServerThread(settings) as server:
        yield server


@pytest.fixture(scope="module")
def mtls_server(classifier_repository: Path, pki: Pki) -> Iterator[ServerThread]:
    settings = settings_for(
        classifier_repository,
        tls_cert_file=pki.server_cert,
        tls_key_file=pki.server_key,
        tls_client_ca_file=pki.ca,
        http_port=0,
    )
    with ServerThread(settings) as server:
        yield server


def localhost(server: ServerThread) -> str:
    return f"localhost:{server.port}"


def test_tls_with_a_token_serves_and_plaintext_or_untrusted_clients_fail(secure_server: ServerThread, pki: Pki) -> None:
    for target in (localhost(secure_server), secure_server.target):  # both names are in the certificate
        with Client(target, root_certificates=pki.ca, token=TOKENS[1]) as client:
            assert client.classify(ZEROS, model="mnist-cnn").model == "mnist-cnn"
    with Client(secure_server.target, token=TOKENS[0], timeout=5) as plaintext, pytest.raises(UnavailableError):
        plaintext.classify(ZEROS)
    with (
        Client(secure_server.target, root_certificates=pki.rogue_cert, token=TOKENS[0], timeout=5) as untrusting,
        pytest.raises(UnavailableError),
    ):
        untrusting.classify(ZEROS)


def test_missing_or_wrong_tokens_are_unauthenticated_everywhere_but_health(
    secure_server: ServerThread, pki: Pki
) -> None:
    with Client(localhost(secure_server), root_certificates=pki.ca) as anonymous:
        assert anonymous.health() == "SERVING"
        for call in (lambda: anonymous.classify(ZEROS), anonymous.list_models, anonymous.reload_models):
            with pytest.raises(UnauthenticatedError, match="requires 'authorization: Bearer"):
                call()
    with Client(localhost(secure_server), root_certificates=pki.ca, token="not-" + TOKENS[0]) as wrong:
        with pytest.raises(UnauthenticatedError, match="not accepted") as info:
            wrong.list_models()
        assert TOKENS[0] not in info.value.details
    credentials = grpc.ssl_channel_credentials(pki.ca.read_bytes())
    with grpc.secure_channel(localhost(secure_server), credentials) as channel:
        kserve = pb_grpc.GRPCInferenceServiceStub(channel)
        assert kserve.ServerLive(pb.ServerLiveRequest(), timeout=10).live  # a probe, open like health
        with pytest.raises(grpc.RpcError) as info:
            kserve.ModelMetadata(pb.ModelMetadataRequest(name="mnist-cnn"), timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as info:
            ProtoReflectionDescriptorDatabase(channel).get_services()
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_mutual_tls_refuses_clients_without_a_trusted_certificate(mtls_server: ServerThread, pki: Pki) -> None:
    target = localhost(mtls_server)
    with Client(target, root_certificates=pki.ca, certificate_chain=pki.client_cert, private_key=pki.client_key) as ok:
        assert ok.classify(ZEROS, model="mnist-mlp").model == "mnist-mlp"
    # The server only closes the connection; the client says what that most likely means. On 127.0.0.1
    # (in the certificate too): `localhost` may try ::1 first, where the refusal is the last error.
    target = mtls_server.target
    with (
        Client(target, root_certificates=pki.ca, timeout=5) as no_cert,
        pytest.raises(UnavailableError, match=r"requires a client certificate \(mutual TLS\) and none was sent"),
    ):
        no_cert.list_models()
    with (
        Client(
            target, root_certificates=pki.ca, certificate_chain=pki.rogue_cert, private_key=pki.rogue_key, timeout=5
        ) as rogue,
        pytest.raises(UnavailableError, match="it probably rejected the client certificate"),
    ):
        rogue.list_models()
    with (
        Client(target, timeout=5) as plaintext,
        pytest.raises(UnavailableError, match="if it uses TLS, connect"),
    ):
        plaintext.list_models()


def test_the_cli_speaks_tls_mtls_and_tokens(
    secure_server: ServerThread, mtls_server: ServerThread, pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKENS[0] + "\n")
    tls = ["--target", localhost(secure_server), "--tls-ca", str(pki.ca)]
    for argv, code in [
        ([*tls, "--token-file", str(token_file), "models"], 0),
        ([*tls, "--token", TOKENS[1], "health"], 0),
        ([*tls, "models"], 2),
        (["--target", localhost(mtls_server), "--tls-ca", str(pki.ca), "--tls-cert", str(pki.client_cert),
          "--tls-key", str(pki.client_key), "models"], 0),
    ]:  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            cli(argv)
        assert exit_info.value.code == code, argv
    out, err = capsys.readouterr()
    assert out.count("mnist-cnn") == 2 and "SERVING" in out
    assert "Bearer" in err and TOKENS[0] not in out + err


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_tritonclient_works_over_tls_with_a_token(secure_server: ServerThread, pki: Pki, protocol: str) -> None:
    tls = {"root_certificates": str(pki.ca)}
    graph = Path(secure_server.settings.repository) / "mnist-cnn" / "1" / "model.onnx"
    calls = [KServeCall("mnist-cnn", graph, {"image": np.zeros((1, 28, 28), np.float32)})]
    token = {"authorization": f"Bearer {TOKENS[0]}"}
    port = secure_server.port if protocol == "grpc" else secure_server.server.http_port
    job = {"protocol": protocol, "ssl": tls}
    report = run_tritonclient(tritonclient_job(f"localhost:{port}", calls, headers=token, **job))
    assert report["live"] == {"ok": True}
    assert report["models"][0]["infer"]["ok"]["model_name"] == "mnist-cnn"
    anonymous = run_tritonclient(tritonclient_job(f"localhost:{port}", calls, **job))
    assert anonymous["ready"] == {"ok": True}  # ServerReady is a probe
    unauthenticated = "StatusCode.UNAUTHENTICATED" if protocol == "grpc" else "401"
    assert anonymous["models"][0]["infer"]["status"] == unauthenticated


def test_https_with_a_token_and_plaintext_or_untrusted_clients_fail(secure_server: ServerThread, pki: Pki) -> None:
    url = f"https://localhost:{secure_server.server.http_port}"
    trusting = ssl.create_default_context(cafile=pki.ca)
    assert http_request(f"{url}/v2/health/ready", context=trusting).status == 200  # probes stay open
    assert http_request(f"{url}/v2/models/mnist-cnn", context=trusting).status == 401
    authorized = {"Authorization": f"Bearer {TOKENS[1]}"}
    answer = http_request(f"{url}/v2/models/mnist-cnn", headers=authorized, context=trusting)
    assert answer.status == 200 and answer.json()["name"] == "mnist-cnn"
    with pytest.raises(ssl.SSLCertVerificationError):
        http_request(f"{url}/v2/health/ready", context=ssl.create_default_context(cafile=pki.rogue_cert))
    with pytest.raises(http.client.RemoteDisconnected):  # plaintext to a TLS port: the connection is dropped
        http_request(f"http://localhost:{secure_server.server.http_port}/v2/health/ready", timeout=5)


# TLS 1.3 finishes the client's side of the handshake before the server checks its certificate: the
# refusal is an alert (SSLError) or the connection closing, whichever the client reads first.
REFUSED = (http.client.RemoteDisconnected, ssl.SSLError)


def test_https_mutual_tls_refuses_clients_without_a_trusted_certificate(mtls_server: ServerThread, pki: Pki) -> None:
    url = f"https://localhost:{mtls_server.server.http_port}/v2/models/mnist-cnn/infer"
    body = json.dumps({"inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 28, 28], "data": [0] * 784}]})
    json_type = {"Content-Type": "application/json"}
    for cert, key, trusted in ((pki.client_cert, pki.client_key, True), (pki.rogue_cert, pki.rogue_key, False)):
        context = ssl.create_default_context(cafile=pki.ca)
        context.load_cert_chain(cert, key)
        if trusted:
            assert http_request(url, "POST", body.encode(), json_type, context=context).status == 200
        else:
            with pytest.raises(REFUSED):
                http_request(url, "POST", body.encode(), json_type, context=context, timeout=5)
    with pytest.raises(REFUSED):
        http_request(url, "POST", body.encode(), json_type, context=ssl.create_default_context(cafile=pki.ca))


def test_tokens_never_reach_the_log(tmp_path: Path, classifier_repository: Path) -> None:
    server = ServerProcess(
        "classifier",
        classifier_repository,
        tmp_path,
        env={"MYELIN_AUTH_TOKENS": ",".join(TOKENS), "MYELIN_ACCESS_LOG": "true", "MYELIN_LOG_LEVEL": "DEBUG"},
    )
    try:
        with Client(server.target, token=TOKENS[0]) as client:
            client.wait_ready(timeout=60)
            client.classify(ZEROS)
        with Client(server.target, token=TOKENS[1][::-1]) as wrong, pytest.raises(UnauthenticatedError):
            wrong.classify(ZEROS)
        assert server.terminate() == 0
        log = server.log()
    finally:
        server.kill()
    assert "/myelin_api.v1.Classifier/Classify OK" in log
    assert "/myelin_api.v1.Classifier/Classify UNAUTHENTICATED" in log
    for secret in (*TOKENS, TOKENS[1][::-1]):
        assert secret not in log
