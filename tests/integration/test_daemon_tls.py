"""hyperd on TCP with TLS (a CA the test makes): the CLI reaches it with -H https://... and the
CA; a client that does not trust the CA is refused. No VM is started."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.e2e.conftest import HYPER, wait_for


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def test_tcp_with_tls(tmp_path: Path) -> None:
    ca_key, ca, key, csr, cert = (
        tmp_path / n for n in ("ca.key", "ca.pem", "k.pem", "c.csr", "c.pem")
    )
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
        "-days",
        "1",
        "-subj",
        "/CN=hyper test CA",
    )
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        str(key),
        "-out",
        str(csr),
        "-subj",
        "/CN=127.0.0.1",
    )
    ext = tmp_path / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(ca),
        "-CAkey",
        str(ca_key),
        "-CAcreateserial",
        "-out",
        str(cert),
        "-days",
        "1",
        "-extfile",
        str(ext),
    )
    run_dir = Path(tempfile.mkdtemp(prefix="hyper-tls-"))
    port = _free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[paths]\nstate_dir = "{tmp_path}/state"\nrun_dir = "{run_dir}"\n'
        f'[daemon]\nsocket = "{run_dir}/hyperd.sock"\ntcp = "127.0.0.1:{port}"\n'
        f'tls_cert = "{cert}"\ntls_key = "{key}"\n'
    )
    log = open(tmp_path / "hyperd.log", "wb")  # noqa: SIM115 (closed below)
    daemon = subprocess.Popen(
        [sys.executable, "-m", "hyper.daemon", "--config", str(config)], stdout=log, stderr=log
    )
    try:

        def listening() -> bool:
            assert daemon.poll() is None, (tmp_path / "hyperd.log").read_text()
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, 60, "hyperd to listen on TCP")
        host = f"https://127.0.0.1:{port}"
        local = {**os.environ, "HYPER_CONFIG": str(config), "HYPER_CLIENT_CONFIG": os.devnull}
        made = subprocess.run(  # a key of the default tenant, by the unix socket's operator
            [*HYPER, "key", "create", "--role", "member"], capture_output=True, env=local
        )
        assert made.returncode == 0, made.stderr.decode()
        env = {**os.environ, "HYPER_CA": str(ca), "HYPER_CLIENT_CONFIG": os.devnull}
        anonymous = subprocess.run(
            [*HYPER, "-H", host, "version"], capture_output=True, env=env, timeout=60
        )
        assert anonymous.returncode != 0 and b"credential" in anonymous.stderr
        trusted = subprocess.run(
            [*HYPER, "-H", host, "--key", made.stdout.decode().strip(), "version", "--format",
             "json"],
            capture_output=True,
            env=env,
            timeout=60,
        )  # fmt: skip
        assert trusted.returncode == 0, trusted.stderr.decode()
        assert json.loads(trusted.stdout)["server"]["api_version"] == "1"
        env.pop("HYPER_CA")
        untrusted = subprocess.run(
            [*HYPER, "-H", host, "version"], capture_output=True, env=env, timeout=60
        )
        assert untrusted.returncode != 0
        assert (
            b"CERTIFICATE_VERIFY_FAILED" in untrusted.stderr or b"certificate" in untrusted.stderr
        )
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        log.close()
        subprocess.run(["rm", "-rf", str(run_dir)], check=False)
