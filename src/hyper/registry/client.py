"""A client of one registry, speaking the OCI distribution spec over httpx.

What it does for its callers (``pull.py``, ``push.py``, login):

- **Endpoints.** ``docker.io`` is served by ``registry-1.docker.io``; every other registry by the
  host[:port] of the reference. HTTPS always, except for registries the settings mark insecure,
  which are reached over plain HTTP (and only those: there is no silent fallback).
- **TLS.** The system's trust store plus certifi's, plus per registry, like docker's certs.d,
  ``<ca_dir>/<host[:port]>/*.crt`` as extra CAs and ``client.cert``/``client.key`` as a client
  certificate.
- **Authentication** (see auth.py): anonymous first; on 401, Basic or a bearer token for exactly
  the scopes the operation needs; tokens are cached per scope set.
- **Bounds.** Manifests and every JSON answer are read up to ``MAX_DOCUMENT_BYTES`` and refused
  beyond; error bodies are read up to 64 KiB. Blob bodies are streamed to the caller, which
  bounds them by the descriptor's size.
- **Errors.** Unknown repository, tag or blob: NotFound. Connection failures, timeouts, 429 and
  5xx: Unavailable. 401 after authenticating: Unauthenticated. 403: PermissionDenied. A
  malformed answer: ProtocolError. Each names the registry and the object.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import certifi
import httpx

from hyper.errors import (
    HyperError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ProtocolError,
    Unauthenticated,
    Unavailable,
)
from hyper.images import oci
from hyper.images.digest import Digest
from hyper.registry.auth import (
    Challenge,
    Credentials,
    TokenCache,
    parse_challenges,
    parse_token_response,
    repository_scope,
)

log = logging.getLogger(__name__)

MANIFEST_ACCEPT = ", ".join(
    [oci.OCI_INDEX, oci.DOCKER_MANIFEST_LIST, oci.OCI_MANIFEST, oci.DOCKER_MANIFEST]
)
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
MAX_ERROR_BYTES = 64 << 10
USER_AGENT = "hyper/0.1 (+httpx)"


@dataclass(frozen=True)
class FetchedManifest:
    data: bytes
    media_type: str
    digest: Digest


@dataclass
class BlobStream:
    """A blob's body from ``start`` on; ``total`` is its full size when the registry says it."""

    start: int
    total: int | None
    response: httpx.Response

    def chunks(self) -> Iterator[bytes]:
        """The body as it arrives (not re-buffered: a cut loses nothing already received)."""
        try:
            yield from self.response.iter_bytes()
        except httpx.TransportError as exc:
            raise Unavailable(f"the download was cut: {_describe(exc)}") from exc


def ssl_context(ca_dir: Path | None, host: str) -> ssl.SSLContext:
    """Default trust plus the registry's own CA certificates and client certificate, if any."""
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=certifi.where())
    if ca_dir is None:
        return context
    directory = ca_dir / host
    if not directory.is_dir():
        return context
    for cert in sorted(directory.glob("*.crt")):
        try:
            context.load_verify_locations(cafile=str(cert))
        except (ssl.SSLError, OSError) as exc:
            raise InvalidArgument(f"cannot load the CA certificate {cert}: {exc}") from None
    client_cert, client_key = directory / "client.cert", directory / "client.key"
    if client_cert.is_file() and client_key.is_file():
        try:
            context.load_cert_chain(str(client_cert), str(client_key))
        except (ssl.SSLError, OSError) as exc:
            raise InvalidArgument(
                f"cannot load the client certificate {client_cert}: {exc}"
            ) from None
    return context


class RegistryClient:
    """One registry's HTTP API (thread-safe: a pull downloads layers from several threads)."""

    def __init__(
        self,
        registry: str,
        *,
        credentials: Credentials | None = None,
        insecure: bool = False,
        ca_dir: Path | None = None,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 60.0,
        max_connections: int = 16,
    ) -> None:
        self.registry = registry
        endpoint = DOCKER_HUB_ENDPOINT if registry == "docker.io" else registry
        self.insecure = insecure
        self.base_url = f"{'http' if insecure else 'https'}://{endpoint}"
        self.credentials = credentials
        self._tokens = TokenCache()
        self._basic = False
        self._bearer: Challenge | None = None
        verify: ssl.SSLContext | bool = True if insecure else ssl_context(ca_dir, registry)
        self._http = httpx.Client(
            transport=transport,
            verify=verify,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 30.0)),
            follow_redirects=True,
            headers={"User-Agent": USER_AGENT},
            limits=httpx.Limits(max_connections=max_connections),
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- operations ------------------------------------------------------------------------

    def check_login(self) -> None:
        """Authenticate against ``/v2/`` with the client's credentials (``hyper login``).

        With a bearer registry a token is asked for no scope, as docker does: the token server
        checks the password. Unauthenticated if the registry refuses the credentials.
        """
        with self._send("GET", "/v2/", scopes=(), what="the registry", login=True) as response:
            self._check(response, "the registry")

    def get_manifest(self, repository: str, reference: str) -> FetchedManifest:
        what = f"manifest {repository}:{reference}"
        with self._send(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            scopes=(repository_scope(repository, "pull"),),
            headers={"Accept": MANIFEST_ACCEPT},
            what=what,
        ) as response:
            self._check(response, what)
            data = _read_bounded(response, oci.MAX_DOCUMENT_BYTES, what)
            media_type = response.headers.get("content-type", "").split(";", 1)[0].strip()
            declared = response.headers.get("docker-content-digest")
        digest = Digest.of(data)
        if declared:
            try:
                header_digest = Digest.parse(declared)
            except InvalidArgument:
                header_digest = None  # another algorithm: our own hash is what counts
            if header_digest is not None and header_digest != digest:
                raise ProtocolError(f"{what} hashes to {digest}, but the registry says {declared}")
        return FetchedManifest(data, media_type, digest)

    def blob_exists(self, repository: str, digest: Digest, *, push: bool = False) -> bool:
        what = f"blob {digest} in {repository}"
        actions = ("pull", "push") if push else ("pull",)
        with self._send(
            "HEAD",
            f"/v2/{repository}/blobs/{digest}",
            scopes=(repository_scope(repository, *actions),),
            what=what,
        ) as response:
            if response.status_code == 404:
                return False
            self._check(response, what)
            return True

    @contextmanager
    def fetch_blob(self, repository: str, digest: Digest, offset: int = 0) -> Iterator[BlobStream]:
        """The blob's body from ``offset`` (an HTTP Range request), or from 0 if the registry
        ignores the range (``start`` says which)."""
        what = f"blob {digest} of {repository}"
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        with self._send(
            "GET",
            f"/v2/{repository}/blobs/{digest}",
            scopes=(repository_scope(repository, "pull"),),
            headers=headers,
            what=what,
        ) as response:
            if offset and response.status_code == 416:
                raise RangeRefused(what)
            self._check(response, what)
            start, total = 0, _int_header(response, "content-length")
            if response.status_code == 206:
                start, total = _content_range(response.headers.get("content-range", ""), what)
                if start != offset:
                    raise ProtocolError(f"{what}: asked for bytes from {offset}, got {start}")
            yield BlobStream(start, total, response)

    def start_upload(
        self, repository: str, *, mount: Digest | None = None, source: str | None = None
    ) -> str | None:
        """Open an upload session and return its location; with ``mount`` and ``source``, ask
        for a cross-repository mount first: None means the blob was mounted (nothing to send)."""
        params: dict[str, str] = {}
        scopes = [repository_scope(repository, "pull", "push")]
        if mount is not None and source is not None:
            params = {"mount": str(mount), "from": source}
            scopes.append(repository_scope(source, "pull"))
        what = f"an upload to {repository}"
        with self._send(
            "POST",
            f"/v2/{repository}/blobs/uploads/",
            scopes=tuple(scopes),
            params=params,
            content=b"",
            what=what,
        ) as response:
            self._check(response, what)
            if response.status_code == 201 and mount is not None:
                return None
            if response.status_code != 202:
                raise ProtocolError(f"{what}: unexpected status {response.status_code}")
            return self._location(response, what)

    def upload_chunk(
        self, repository: str, location: str, data: bytes, start: int, *, last: bool = False
    ) -> str:
        """PATCH one chunk (bytes ``start``.. of the blob); returns the next location."""
        what = f"an upload to {repository}"
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{start}-{start + len(data) - 1}",
        }
        with self._send(
            "PATCH",
            location,
            scopes=(repository_scope(repository, "pull", "push"),),
            headers=headers,
            content=data,
            what=what,
        ) as response:
            self._check(response, what)
            return self._location(response, what)

    def finish_upload(
        self, repository: str, location: str, digest: Digest, data: bytes = b""
    ) -> None:
        """Close the upload with a PUT (carrying ``data``, all of a monolithic upload)."""
        what = f"blob {digest} to {repository}"
        with self._send(
            "PUT",
            location,
            scopes=(repository_scope(repository, "pull", "push"),),
            params={"digest": str(digest)},
            headers={"Content-Type": "application/octet-stream"},
            content=data,
            what=what,
        ) as response:
            self._check(response, what)
            if response.status_code != 201:
                raise ProtocolError(f"{what}: unexpected status {response.status_code}")

    def put_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> None:
        what = f"manifest {repository}:{reference}"
        with self._send(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            scopes=(repository_scope(repository, "pull", "push"),),
            headers={"Content-Type": media_type},
            content=data,
            what=what,
        ) as response:
            self._check(response, what)
            declared = response.headers.get("docker-content-digest")
            if declared and declared != str(Digest.of(data)):
                raise ProtocolError(f"{what}: the registry stored it as {declared}")

    # -- requests and authentication -------------------------------------------------------

    @contextmanager
    def _send(
        self,
        method: str,
        url: str,
        *,
        scopes: tuple[str, ...],
        what: str,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        content: bytes | None = None,
        login: bool = False,
    ) -> Iterator[httpx.Response]:
        """Send a request, authenticating on a 401 and sending it once more."""
        target = url if url.startswith(("http://", "https://")) else self.base_url + url
        if params:  # merged into the query the URL may have (an upload location's _state)
            target = str(httpx.URL(target).copy_merge_params(params))
            params = None
        base_headers = dict(headers or {})
        auth = None if login else self._cached_auth(scopes)
        response = self._request(method, target, base_headers, params, content, auth, what)
        try:
            if response.status_code == 401:
                challenges = parse_challenges(response.headers.get_list("www-authenticate"))
                response.close()
                auth = self._authenticate(challenges, scopes, what)
                response = self._request(method, target, base_headers, params, content, auth, what)
                if response.status_code == 401:
                    detail = _error_message(response)
                    if self.credentials is None:
                        raise Unauthenticated(
                            f"{self.registry} wants a login for {what}"
                            f" (run `hyper login {self.registry}`)"
                        )
                    raise Unauthenticated(
                        f"{self.registry} refused the credentials for {what}"
                        + (f": {detail}" if detail else "")
                    )
            yield response
        finally:
            response.close()

    def _request(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        params: dict[str, str] | None,
        content: bytes | None,
        auth: str | None,
        what: str,
    ) -> httpx.Response:
        all_headers = dict(headers)
        if auth is not None:
            all_headers["Authorization"] = auth
        try:
            request = self._http.build_request(
                method, url, headers=all_headers, params=params, content=content
            )
            return self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise Unavailable(f"cannot reach {self.registry} for {what}: {_describe(exc)}") from exc

    def _cached_auth(self, scopes: tuple[str, ...]) -> str | None:
        if self._basic and self.credentials is not None:
            return self.credentials.basic_header()
        if self._bearer is not None:
            token = self._tokens.get(self._token_key(self._bearer, scopes))
            if token is not None:
                return f"Bearer {token}"
        return None

    def _authenticate(self, challenges: list[Challenge], scopes: tuple[str, ...], what: str) -> str:
        by_scheme = {c.scheme: c for c in challenges}
        bearer = by_scheme.get("bearer")
        if bearer is not None and bearer.params.get("realm"):
            self._bearer = bearer
            wanted = list(scopes)
            challenge_scope = bearer.params.get("scope")
            if challenge_scope and challenge_scope not in wanted:
                wanted.append(challenge_scope)
            return f"Bearer {self._fetch_token(bearer, tuple(wanted), what)}"
        if "basic" in by_scheme:
            if self.credentials is None:
                raise Unauthenticated(
                    f"{self.registry} wants a login for {what}: run `hyper login {self.registry}`"
                )
            self._basic = True
            return self.credentials.basic_header()
        offered = ", ".join(sorted(by_scheme)) or "none"
        raise Unauthenticated(
            f"{self.registry} answered 401 for {what} with no usable challenge (offered: {offered})"
        )

    def _token_key(
        self, challenge: Challenge, scopes: tuple[str, ...]
    ) -> tuple[str, str, tuple[str, ...]]:
        return (challenge.params.get("realm", ""), challenge.params.get("service", ""), scopes)

    def _fetch_token(self, challenge: Challenge, scopes: tuple[str, ...], what: str) -> str:
        realm = challenge.params["realm"]
        if not realm.startswith(("https://", "http://")):
            raise ProtocolError(f"{self.registry}: the token realm {realm!r} is not an http URL")
        params: list[tuple[str, str | int | float | bool | None]] = []
        if challenge.params.get("service"):
            params.append(("service", challenge.params["service"]))
        params.extend(("scope", scope) for scope in scopes)
        headers: dict[str, str] = {}
        credentials = self.credentials
        if credentials is not None and realm.startswith("http://") and not self.insecure:
            log.warning("not sending credentials to the plain-HTTP token realm %s", realm)
            credentials = None
        if credentials is not None:
            params.append(("account", credentials.username))
            headers["Authorization"] = credentials.basic_header()
        try:
            request = self._http.build_request("GET", realm, params=params, headers=headers)
            response = self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise Unavailable(
                f"cannot reach the token server of {self.registry}: {_describe(exc)}"
            ) from exc
        try:
            if response.status_code in (401, 403):
                if credentials is None:
                    raise Unauthenticated(
                        f"{self.registry}: access to {what} needs a login"
                        f" (run `hyper login {self.registry}`)"
                    )
                raise Unauthenticated(
                    f"{self.registry}: incorrect username or password for {credentials.username}"
                )
            self._check(response, f"a token from {realm}")
            data = _read_bounded(response, oci.MAX_DOCUMENT_BYTES, f"the token from {realm}")
        finally:
            response.close()
        try:
            token, expires_in = parse_token_response(data)
        except InvalidArgument as exc:
            raise ProtocolError(f"{self.registry}: {exc}") from None
        self._tokens.put(self._token_key(challenge, scopes), token, expires_in)
        return token

    # -- answers ---------------------------------------------------------------------------

    def _check(self, response: httpx.Response, what: str) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        detail = _error_message(response)
        suffix = f": {detail}" if detail else ""
        error: HyperError
        if status == 404:
            error = NotFound(f"{what} not found on {self.registry}{suffix}")
        elif status == 401:
            error = Unauthenticated(f"{self.registry} wants a login for {what}{suffix}")
        elif status == 403:
            error = PermissionDenied(f"{self.registry} denied access to {what}{suffix}")
        elif status == 429 or status >= 500:
            error = Unavailable(f"{self.registry} could not serve {what} ({status}){suffix}")
        elif status == 400:
            error = InvalidArgument(f"{self.registry} refused {what}{suffix}")
        else:
            error = ProtocolError(f"{self.registry}: unexpected status {status} for {what}{suffix}")
        raise error

    def _location(self, response: httpx.Response, what: str) -> str:
        location = response.headers.get("location")
        if not location:
            raise ProtocolError(f"{self.registry}: {what} got no upload location")
        return str(response.url.join(location))


class RangeRefused(Exception):
    """The registry refused a Range request (416): start again from the beginning."""


def _read_bounded(response: httpx.Response, limit: int, what: str) -> bytes:
    length = _int_header(response, "content-length")
    if length is not None and length > limit:
        raise InvalidArgument(f"{what} is {length} bytes, over the {limit} byte limit")
    data = bytearray()
    try:
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) > limit:
                raise InvalidArgument(f"{what} is over the {limit} byte limit")
    except httpx.TransportError as exc:
        raise Unavailable(f"reading {what} failed: {_describe(exc)}") from exc
    return bytes(data)


def _error_message(response: httpx.Response) -> str:
    """The registry's error messages (``{"errors": [{"code", "message"}]}``), bounded."""
    try:
        data = b""
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) > MAX_ERROR_BYTES:
                return ""
    except (httpx.HTTPError, httpx.StreamError):
        return ""
    try:
        doc: Any = json.loads(data)
    except ValueError:
        return ""
    if not isinstance(doc, dict) or not isinstance(doc.get("errors"), list):
        return ""
    parts = []
    for error in doc["errors"][:5]:
        if isinstance(error, dict):
            code, message = error.get("code"), error.get("message")
            parts.append(f"{code}: {message}" if code and message else str(code or message))
    return "; ".join(parts)


def _int_header(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name)
    if value is None or not value.strip().isdigit():
        return None
    return int(value)


def _content_range(value: str, what: str) -> tuple[int, int | None]:
    """``bytes START-END/TOTAL`` -> (START, TOTAL or None)."""
    unit, _, spec = value.strip().partition(" ")
    span, _, total = spec.partition("/")
    start, _, _end = span.partition("-")
    if unit != "bytes" or not start.isdigit():
        raise ProtocolError(f"{what}: malformed Content-Range {value!r}")
    return int(start), int(total) if total.isdigit() else None


def _describe(exc: Exception) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
