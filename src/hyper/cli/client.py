"""The CLI's connection to hyperd: REST calls, NDJSON streams and stdio websockets.

``http.client`` from the standard library for REST, because the CLI is on the hot path of every
``hyper run`` and it imports in a fraction of httpx's time; the ``websockets`` library's sync
client, imported only by the verbs that relay stdio. The endpoint is ``-H``/``--host``, else
$HYPER_HOST, else the one ``hyper config set`` stored, else the socket of the settings file:
``unix:///run/hyper/hyperd.sock`` or ``https://host:port`` (with $HYPER_CA / $HYPER_CERT /
$HYPER_TLS_KEY for TLS; $HYPER_TLS_KEY was $HYPER_KEY, which is now the access key, and a
$HYPER_KEY that is a path is still read as the TLS client key). :mod:`.credentials` chooses
the endpoint, the access key and the CA.

The access key goes in ``Authorization: Bearer``, over https only: never to the unix socket,
whose caller is the local operator.

An error answer carries ``{"kind", "message"}``; it is raised as the same :mod:`hyper.errors`
class, so the CLI prints the daemon's message and exits with the same code as a local failure.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import urllib.parse
from collections.abc import Iterator
from typing import Any, BinaryIO

from hyper import errors
from hyper.cli.credentials import Connection, authorization

MAX_ANSWER = 64 << 20


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class Client:
    def __init__(
        self,
        endpoint: str,
        *,
        timeout: float | None = 600.0,
        tenant: str | None = None,
        key: str = "",
        ca: str = "",
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.tenant = tenant  # the operator acting in another tenant (or "*": every tenant)
        self._key = key
        self._ca = ca
        url = urllib.parse.urlsplit(endpoint)
        if url.scheme == "unix":
            self._unix: str | None = url.path
        elif url.scheme in ("https", "tcp"):
            self._unix = None
            self._netloc = url.netloc
        else:
            raise errors.InvalidArgument(
                f"host {endpoint!r} is not unix:///path or https://host:port"
            )

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self._unix is not None:
            return _UnixConnection(self._unix, timeout)
        return http.client.HTTPSConnection(
            self._netloc, timeout=timeout, context=_tls_context(self._ca)
        )

    def _send(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None,
        body: Any,
        timeout: float | None,
        upload: BinaryIO | None = None,
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        connection = self._connection(timeout)
        target = "/v1" + path + _query(params)
        headers = {"Host": "hyperd", **self.headers()}
        payload: bytes | BinaryIO | None = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif upload is not None:  # sent chunked, as it is read
            payload = upload
            headers["Content-Type"] = "application/x-tar"
            headers["Transfer-Encoding"] = "chunked"
        try:
            connection.request(
                method, target, body=payload, headers=headers, encode_chunked=upload is not None
            )
            response = connection.getresponse()
        except (FileNotFoundError, ConnectionRefusedError):
            connection.close()
            raise errors.Unavailable(
                f"cannot reach hyperd at {self.endpoint}: is it running? Start it with "
                "`hyperd &` (or `systemctl start hyperd`)"
            ) from None
        except TimeoutError:
            connection.close()
            raise errors.Timeout(f"hyperd did not answer {method} {path} in time") from None
        except OSError as exc:
            connection.close()
            raise errors.Unavailable(f"cannot reach hyperd at {self.endpoint}: {exc}") from None
        if response.status >= 400:
            data = response.read(MAX_ANSWER)
            connection.close()
            raise _error(response.status, data)
        return connection, response

    def headers(self) -> dict[str, str]:
        """The headers of every request: the credential (over https only) and the tenant."""
        headers = {}
        if self._unix is None:  # never a key to the unix socket: its caller is the operator
            headers.update(authorization(Connection(self.endpoint, self._key)))
        if self.tenant:
            headers["X-Hyper-Tenant"] = self.tenant
        return headers

    def call(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        timeout: float | None = None,
    ) -> Any:
        connection, response = self._send(method, path, params, body, timeout or self.timeout)
        try:
            data = response.read(MAX_ANSWER)
        finally:
            connection.close()
        return json.loads(data) if data else None

    def upload(self, path: str, source: BinaryIO) -> Any:
        """POST the bytes of ``source`` (an archive); the JSON answer."""
        connection, response = self._send("POST", path, None, None, None, upload=source)
        try:
            data = response.read(MAX_ANSWER)
        finally:
            connection.close()
        return json.loads(data) if data else None

    def download(self, path: str, into: BinaryIO, *, params: dict[str, Any] | None = None) -> int:
        """GET a binary answer (an archive) into ``into``; the number of bytes."""
        connection, response = self._send("GET", path, params, None, None)
        size = 0
        try:
            while chunk := response.read(1 << 20):
                into.write(chunk)
                size += len(chunk)
        finally:
            connection.close()
        return size

    def stream(
        self, method: str, path: str, *, params: dict[str, Any] | None = None
    ) -> Iterator[Any]:
        """The JSON values of an NDJSON answer, as they arrive."""
        connection, response = self._send(method, path, params, None, None)
        try:
            while line := response.readline(1 << 20):
                if line.strip():
                    yield json.loads(line)
        finally:
            connection.close()

    def websocket(self, path: str, *, params: dict[str, Any] | None = None) -> Any:
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect, unix_connect

        target = "/v1" + path + _query(params)
        try:
            if self._unix is not None:
                return unix_connect(
                    self._unix,
                    "ws://hyperd" + target,
                    max_size=1 << 20,
                    compression=None,
                    additional_headers=self.headers(),
                )
            return connect(
                f"wss://{self._netloc}{target}",
                ssl=_tls_context(self._ca),
                max_size=1 << 20,
                compression=None,
                additional_headers=self.headers(),
            )
        except (FileNotFoundError, ConnectionRefusedError):
            raise errors.Unavailable(
                f"cannot reach hyperd at {self.endpoint}: is it running?"
            ) from None
        except InvalidStatus as exc:
            raise _error(exc.response.status_code, bytes(exc.response.body or b"")) from None


def _query(params: dict[str, Any] | None) -> str:
    if not params:
        return ""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        if value is None:
            continue
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            pairs.append((key, str(item).lower() if isinstance(item, bool) else str(item)))
    return "?" + urllib.parse.urlencode(pairs) if pairs else ""


def _error(status: int, data: bytes) -> errors.HyperError:
    try:
        body = json.loads(data)
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return errors.by_kind(str(body.get("kind")), errors.HyperError)(body["message"])
    if isinstance(body, dict) and "detail" in body:  # FastAPI's own answers: no such route,
        if status == 404:  # (a name with a slash where a container's goes), or invalid
            return errors.NotFound(_detail(body["detail"]))
        return errors.InvalidArgument(_detail(body["detail"]))
    return errors.HyperError(f"hyperd answered {status}: {data[:200]!r}")


def _detail(detail: Any) -> str:
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{where}: {item.get('msg')}")
        return "; ".join(parts) or "invalid request"
    return str(detail)


def _tls_context(ca: str = "") -> ssl.SSLContext:
    """Trust ``ca`` (else $HYPER_CA, else the system's CAs); present $HYPER_CERT with its key
    ($HYPER_TLS_KEY, or the old $HYPER_KEY when it is a path) when hyperd asks for one."""
    try:
        context = ssl.create_default_context(cafile=ca or os.environ.get("HYPER_CA") or None)
        cert = os.environ.get("HYPER_CERT")
        if cert:
            old = os.environ.get("HYPER_KEY", "")
            key = os.environ.get("HYPER_TLS_KEY") or (old if old.startswith("/") else "")
            context.load_cert_chain(cert, key or None)
    except OSError as exc:  # a missing or unreadable CA, certificate or key file
        raise errors.InvalidArgument(f"cannot load TLS files: {exc}") from None
    return context
