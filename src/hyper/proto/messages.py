"""Messages of the host-guest agent protocol, and the validation of every field.

A MSG frame carries one JSON object, which is one of::

    request   {"id": 7, "op": "exec", "args": {...}}                        host -> guest
    response  {"id": 7, "ok": true, "result": {...}}                        guest -> host
              {"id": 7, "ok": false, "error": {"kind": "NotFound", "message": "..."}}
    event     {"event": "exit", ...}                                        guest -> host

The typed arguments of each operation live here, once, so both ends validate the same way. The
host treats everything the guest says as hostile: :func:`parse` and the ``from_wire`` methods
check types, ranges and lengths and raise :class:`~hyper.errors.ProtocolError` for anything off.

Version 1 of the protocol (the only one so far) has these operations:

=================  =========================================================================
``hello``          agree on the version and the stream window; the guest says who it is
``setup_pod``      hostname, clock and entropy for this VM (also after a template resume)
``setup_network``  the pod's NIC: MAC, address, default route, name servers, extra host names
``add_container``  mount a container's root filesystem from a disk, by the disk's serial, and
                   its volumes (other disks) at their paths, before any process starts
``exec``           start a process in a container; its stdio flows on DATA streams
``signal``         send a signal to a process
``resize``         set a process's terminal size
``remove_container`` kill what is left in a container and unmount its filesystem
``stats``          memory, CPU and process figures of the guest
``processes``      the processes of one container (its cgroup), like ``ps``
``export``         stream a tar of a container's changes (its overlay upper layer) on a DATA
                   stream, as a process: its result is ``ExecResult`` and it ends with ``exit``
``freeze``         freeze (``FIFREEZE``) or thaw (``FITHAW``) a volume's file system, by disk
``ping``           nothing: proves the agent answers
``shutdown``       sync and power the VM off
=================  =========================================================================

Events: ``ready`` (the guest opened its port; carries the versions it speaks) and ``exit``
(a process ended; sent after the end of its output streams).
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

from hyper.errors import ProtocolError

VERSION = 1
SUPPORTED_VERSIONS = (1,)

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_MAX_ARGS = 4096
_MAX_STRING = 128 * 1024
_MAX_ERROR = 4096

ERROR_KINDS = (
    "InvalidArgument",
    "NotFound",
    "AlreadyExists",
    "FailedPrecondition",
    "Unavailable",
    "Internal",
)


# ---------------------------------------------------------------- envelope


class Request(NamedTuple):
    id: int
    op: str
    args: dict[str, Any]


class Response(NamedTuple):
    id: int
    ok: bool
    result: dict[str, Any]
    error_kind: str = ""
    error_message: str = ""


class Event(NamedTuple):
    name: str
    fields: dict[str, Any]


Message = Request | Response | Event


def dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def encode_request(request_id: int, op: str, args: dict[str, Any]) -> bytes:
    return dumps({"id": request_id, "op": op, "args": args})


def encode_result(request_id: int, result: dict[str, Any]) -> bytes:
    return dumps({"id": request_id, "ok": True, "result": result})


def encode_error(request_id: int, kind: str, message: str) -> bytes:
    if kind not in ERROR_KINDS:
        kind = "Internal"
    return dumps(
        {"id": request_id, "ok": False, "error": {"kind": kind, "message": message[:_MAX_ERROR]}}
    )


def encode_event(name: str, fields: dict[str, Any]) -> bytes:
    return dumps({"event": name, **fields})


def parse(payload: bytes) -> Message:
    """Decode and check the envelope of one MSG payload."""
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"message is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("message is not a JSON object")
    if "event" in obj:
        name = obj.pop("event")
        _require_str(name, "event", 64)
        return Event(name, obj)
    request_id = obj.get("id")
    if (
        not isinstance(request_id, int)
        or isinstance(request_id, bool)
        or not (0 < request_id < 2**53)
    ):
        raise ProtocolError(f"message id {request_id!r} is not a positive integer")
    if "op" in obj:
        op = obj["op"]
        _require_str(op, "op", 64)
        args = obj.get("args", {})
        if not isinstance(args, dict):
            raise ProtocolError("request args is not an object")
        return Request(request_id, op, args)
    ok = obj.get("ok")
    if ok is True:
        result = obj.get("result", {})
        if not isinstance(result, dict):
            raise ProtocolError("response result is not an object")
        return Response(request_id, True, result)
    if ok is False:
        error = obj.get("error")
        if not isinstance(error, dict):
            raise ProtocolError("error response without an error object")
        kind = error.get("kind")
        message = error.get("message", "")
        if kind not in ERROR_KINDS:
            kind = "Internal"
        if not isinstance(message, str):
            raise ProtocolError("error message is not a string")
        return Response(request_id, False, {}, kind, message[:_MAX_ERROR])
    raise ProtocolError("message is neither a request, a response nor an event")


# ---------------------------------------------------------------- field checks


def _require_str(value: Any, name: str, limit: int = _MAX_STRING) -> str:
    if not isinstance(value, str):
        raise ProtocolError(f"{name} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise ProtocolError(f"{name} is longer than {limit} characters")
    if "\0" in value:
        raise ProtocolError(f"{name} contains a NUL character")
    return value


def _require_int(value: Any, name: str, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProtocolError(f"{name} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise ProtocolError(f"{name}={value} is outside {low}..{high}")
    return value


def _require_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"{name} must be true or false")
    return value


def _require_id(value: Any, name: str) -> str:
    _require_str(value, name, 128)
    if not _ID.fullmatch(value):
        raise ProtocolError(f"{name} {value!r} is not a valid identifier")
    return str(value)


def _require_str_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, list):
        raise ProtocolError(f"{name} must be a list")
    if len(value) > _MAX_ARGS:
        raise ProtocolError(f"{name} has more than {_MAX_ARGS} entries")
    return [_require_str(item, name) for item in value]


def _optional_stream(value: Any, name: str) -> int:
    if value is None:
        return 0
    return _require_int(value, name, 0, 2**31 - 1)  # 0: not connected


def _get(args: dict[str, Any], key: str) -> Any:
    if key not in args:
        raise ProtocolError(f"missing field {key!r}")
    return args[key]


def check_id(value: str, name: str = "id") -> str:
    """Validate an identifier (container, process, disk serial) on either side."""
    return _require_id(value, name)


# ---------------------------------------------------------------- operations


class Hello(NamedTuple):
    version: int
    window: int

    def to_wire(self) -> dict[str, Any]:
        return {"version": self.version, "window": self.window}

    @classmethod
    def from_wire(cls, args: dict[str, Any]) -> Hello:
        version = _require_int(_get(args, "version"), "version", 1, 2**16)
        window = _require_int(_get(args, "window"), "window", 4096, 16 * 1024 * 1024)
        return cls(version, window)


class HelloResult(NamedTuple):
    version: int
    agent: str
    kernel: str

    def to_wire(self) -> dict[str, Any]:
        return {"version": self.version, "agent": self.agent, "kernel": self.kernel}

    @classmethod
    def from_wire(cls, result: dict[str, Any]) -> HelloResult:
        return cls(
            _require_int(_get(result, "version"), "version", 1, 2**16),
            _require_str(_get(result, "agent"), "agent", 256),
            _require_str(_get(result, "kernel"), "kernel", 256),
        )


class Ready(NamedTuple):
    versions: tuple[int, ...]
    agent: str

    def to_wire(self) -> dict[str, Any]:
        return {"versions": list(self.versions), "agent": self.agent}

    @classmethod
    def from_wire(cls, fields: dict[str, Any]) -> Ready:
        versions = _get(fields, "versions")
        if not isinstance(versions, list) or not 0 < len(versions) <= 64:
            raise ProtocolError("versions must be a non-empty list")
        return cls(
            tuple(_require_int(v, "version", 1, 2**16) for v in versions),
            _require_str(fields.get("agent", ""), "agent", 256),
        )


class SetupPod(NamedTuple):
    hostname: str
    time_ns: int
    entropy: str  # hex, mixed into the guest's RNG
    sysctls: dict[str, str] = {}
    machine_id: str = ""  # 32 lowercase hex digits (/etc/machine-id); "": left as it is

    def to_wire(self) -> dict[str, Any]:
        return {
            "hostname": self.hostname,
            "time_ns": self.time_ns,
            "entropy": self.entropy,
            "sysctls": self.sysctls,
            "machine_id": self.machine_id,
        }

    @classmethod
    def from_wire(cls, args: dict[str, Any]) -> SetupPod:
        hostname = _require_str(_get(args, "hostname"), "hostname", 64)
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62})", hostname):
            raise ProtocolError(f"hostname {hostname!r} is not a valid host name")
        entropy = _require_str(_get(args, "entropy"), "entropy", 1024)
        if not re.fullmatch(r"[0-9a-f]*", entropy) or len(entropy) % 2:
            raise ProtocolError("entropy must be an even number of lowercase hex digits")
        sysctls = args.get("sysctls", {})
        if not isinstance(sysctls, dict) or len(sysctls) > 256:
            raise ProtocolError("sysctls must be an object of at most 256 entries")
        checked: dict[str, str] = {}
        for key, value in sysctls.items():
            if not re.fullmatch(r"[a-z0-9_]+(\.[a-z0-9_-]+)+", key):
                raise ProtocolError(f"sysctl name {key!r} is not valid")
            checked[key] = _require_str(value, "sysctl value", 256)
        machine_id = _require_str(args.get("machine_id", ""), "machine_id", 32)
        if machine_id and not re.fullmatch(r"[0-9a-f]{32}", machine_id):
            raise ProtocolError("machine_id must be 32 lowercase hex digits")
        return cls(
            hostname,
            _require_int(_get(args, "time_ns"), "time_ns", 0, 2**63 - 1),
            entropy,
            checked,
            machine_id,
        )


class VolumeMount(NamedTuple):
    """A volume's disk (by serial) mounted at ``target`` inside the container's root.

    ``target`` is absolute with no ``.``/``..`` components; the agent still resolves it within
    the root without following symbolic links (the image or the container may plant them)."""

    disk: str
    target: str
    readonly: bool
    fstype: str = "ext4"

    def to_wire(self) -> dict[str, Any]:
        return dict(self._asdict())

    @classmethod
    def from_wire(cls, args: Any) -> VolumeMount:
        if not isinstance(args, dict):
            raise ProtocolError("a mount must be an object")
        target = _require_str(_get(args, "target"), "target", 4096)
        parts = target.split("/")
        if not target.startswith("/") or any(p in (".", "..") for p in parts) or target == "/":
            raise ProtocolError(f"mount target {target!r} must be absolute, without . or ..")
        fstype = _require_str(args.get("fstype", "ext4"), "fstype", 16)
        if fstype not in ("ext4", "erofs"):
            raise ProtocolError(f"unsupported volume filesystem type {fstype!r}")
        return cls(
            _require_id(_get(args, "disk"), "disk"),
            target,
            _require_bool(_get(args, "readonly"), "readonly"),
            fstype,
        )


MAX_MOUNTS = 64


class SetupNetwork(NamedTuple):
    """The pod's one NIC, configured by the guest itself: a VM cloned from a template resumes
    the template's device state (its MAC included), so everything is set after the resume."""

    mac: str  # "0a:68:0a:58:00:05"
    address: str  # "10.88.0.5/24"
    gateway: str  # "10.88.0.1"; "" for none
    nameservers: tuple[str, ...] = ()
    hosts: tuple[tuple[str, str], ...] = ()  # (address, name): extra /etc/hosts lines (links)
    mtu: int = 1500

    def to_wire(self) -> dict[str, Any]:
        return {
            "mac": self.mac,
            "address": self.address,
            "gateway": self.gateway,
            "nameservers": list(self.nameservers),
            "hosts": [list(entry) for entry in self.hosts],
            "mtu": self.mtu,
        }

    @classmethod
    def from_wire(cls, args: dict[str, Any]) -> SetupNetwork:
        mac = _require_str(_get(args, "mac"), "mac", 17).lower()
        if not re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", mac) or int(mac[:2], 16) & 1:
            raise ProtocolError(f"mac {mac!r} is not a unicast MAC address")
        address = _require_str(_get(args, "address"), "address", 18)
        if not re.fullmatch(r"[0-9.]+/[0-9]{1,2}", address):
            raise ProtocolError(f"address {address!r} is not ADDRESS/PREFIX")
        ip, prefix = address.split("/")
        _require_ipv4(ip, "address")
        _require_int(int(prefix), "prefix", 1, 32)
        gateway = _require_str(_get(args, "gateway"), "gateway", 15)
        if gateway:
            _require_ipv4(gateway, "gateway")
        servers = args.get("nameservers", [])
        if not isinstance(servers, list) or len(servers) > 3:
            raise ProtocolError("nameservers must be a list of at most 3 addresses")
        hosts = args.get("hosts", [])
        if not isinstance(hosts, list) or len(hosts) > 256:
            raise ProtocolError("hosts must be a list of at most 256 entries")
        checked = []
        for entry in hosts:
            if not isinstance(entry, list) or len(entry) != 2:
                raise ProtocolError("a hosts entry is [address, name]")
            name = _require_str(entry[1], "host name", 63)
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
                raise ProtocolError(f"host name {name!r} is not valid")
            checked.append((_require_ipv4(entry[0], "host address"), name))
        return cls(
            mac,
            address,
            gateway,
            tuple(_require_ipv4(server, "nameserver") for server in servers),
            tuple(checked),
            _require_int(args.get("mtu", 1500), "mtu", 576, 65535),
        )


def _require_ipv4(value: Any, name: str) -> str:
    text = _require_str(value, name, 15)
    parts = text.split(".")
    if len(parts) != 4 or not all(p.isdigit() and len(p) <= 3 and int(p) < 256 for p in parts):
        raise ProtocolError(f"{name} {text!r} is not an IPv4 address")
    return text


class AddContainer(NamedTuple):
    container: str
    disk: str  # serial of the virtio-blk disk holding the image
    fstype: str  # "erofs" or "ext4"
    scratch_mb: int  # size bound of the writable layer (tmpfs)
    mounts: tuple[VolumeMount, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {
            "container": self.container,
            "disk": self.disk,
            "fstype": self.fstype,
            "scratch_mb": self.scratch_mb,
        }
        if self.mounts:
            wire["mounts"] = [m.to_wire() for m in self.mounts]
        return wire

    @classmethod
    def from_wire(cls, args: dict[str, Any]) -> AddContainer:
        fstype = _require_str(_get(args, "fstype"), "fstype", 16)
        if fstype not in ("erofs", "ext4"):
            raise ProtocolError(f"unsupported root filesystem type {fstype!r}")
        mounts = args.get("mounts", [])
        if not isinstance(mounts, list) or len(mounts) > MAX_MOUNTS:
            raise ProtocolError(f"mounts must be a list of at most {MAX_MOUNTS}")
        return cls(
            _require_id(_get(args, "container"), "container"),
            _require_id(_get(args, "disk"), "disk"),
            fstype,
            _require_int(args.get("scratch_mb", 64), "scratch_mb", 1, 1 << 20),
            tuple(VolumeMount.from_wire(m) for m in mounts),
        )


class Freeze(NamedTuple):
    """Freeze (``frozen=True``) or thaw a mounted volume's file system, for a consistent
    snapshot of its disk: writes block until the thaw."""

    disk: str
    frozen: bool

    def to_wire(self) -> dict[str, Any]:
        return dict(self._asdict())

    @classmethod
    def from_wire(cls, args: dict[str, Any]) -> Freeze:
        return cls(
            _require_id(_get(args, "disk"), "disk"), _require_bool(_get(args, "frozen"), "frozen")
        )


class Exec(NamedTuple):
    """Start a process in a container.

    ``stdin``/``stdout``/``stderr`` name the DATA streams (0: not connected; stdin then reads
    /dev/null, output is discarded). With a TTY, stdout carries the terminal and stderr is 0.
    """

    container: str
    process: str
    argv: list[str]
    env: list[str]
    cwd: str
    user: str
    tty: bool
    stdin: int
    stdout: int
    stderr: int
    rows: int = 24
    cols: int = 80

    def to_wire(self) -> dict[str, Any]:
        return dict(self._asdict())

    @classmethod
    def from_wire(cls, args: dict[str, Any]) -> Exec:
        argv = _require_str_list(_get(args, "argv"), "argv")
        if not argv or not argv[0]:
            raise ProtocolError("argv must name a program")
        env = _require_str_list(args.get("env", []), "env")
        for entry in env:
            if "=" not in entry or entry.startswith("="):
                raise ProtocolError(f"environment entry {entry[:64]!r} is not KEY=VALUE")
        cwd = _require_str(args.get("cwd", "/"), "cwd", 4096)
        if not cwd.startswith("/"):
            raise ProtocolError("cwd must be an absolute path")
        user = _require_str(args.get("user", ""), "user", 256)
        tty = _require_bool(args.get("tty", False), "tty")
        stdout = _optional_stream(args.get("stdout"), "stdout")
        stderr = _optional_stream(args.get("stderr"), "stderr")
        stdin = _optional_stream(args.get("stdin"), "stdin")
        used = [s for s in (stdin, stdout, stderr) if s]
        if len(used) != len(set(used)):
            raise ProtocolError("stdio streams must be distinct")
        if tty and stderr:
            raise ProtocolError("a process with a TTY has no separate stderr stream")
        return cls(
            _require_id(_get(args, "container"), "container"),
            _require_id(_get(args, "process"), "process"),
            argv,
            env,
            cwd,
            user,
            tty,
            stdin,
            stdout,
            stderr,
            _require_int(args.get("rows", 24), "rows", 1, 65535),
            _require_int(args.get("cols", 80), "cols", 1, 65535),
        )


class ExecResult(NamedTuple):
    pid: int

    def to_wire(self) -> dict[str, Any]:
        return {"pid": self.pid}

    @classmethod
    def from_wire(cls, result: dict[str, Any]) -> ExecResult:
        return cls(_require_int(_get(result, "pid"), "pid", 1, 2**22))


class Signal(NamedTuple):
    process: str
    signal: int

    def to_wire(self) -> dict[str, Any]:
        return {"process": self.process, "signal": self.signal}

    @classmethod
    def from_wire(cls, args: dict[str, Any]) -> Signal:
        return cls(
            _require_id(_get(args, "process"), "process"),
            _require_int(_get(args, "signal"), "signal", 1, 64),
        )


class Resize(NamedTuple):
    process: str
    rows: int
    cols: int

    def to_wire(self) -> dict[str, Any]:
        return {"process": self.process, "rows": self.rows, "cols": self.cols}

    @classmethod
    def from_wire(cls, args: dict[str, Any]) -> Resize:
        return cls(
            _require_id(_get(args, "process"), "process"),
            _require_int(_get(args, "rows"), "rows", 1, 65535),
            _require_int(_get(args, "cols"), "cols", 1, 65535),
        )


class RemoveContainer(NamedTuple):
    container: str

    def to_wire(self) -> dict[str, Any]:
        return {"container": self.container}

    @classmethod
    def from_wire(cls, args: dict[str, Any]) -> RemoveContainer:
        return cls(_require_id(_get(args, "container"), "container"))


class Exit(NamedTuple):
    """A process ended. ``status`` follows the shell: the exit code, or 128 + the signal."""

    process: str
    status: int
    signal: int  # 0 unless killed by a signal

    def to_wire(self) -> dict[str, Any]:
        return {"process": self.process, "status": self.status, "signal": self.signal}

    @classmethod
    def from_wire(cls, fields: dict[str, Any]) -> Exit:
        return cls(
            _require_id(_get(fields, "process"), "process"),
            _require_int(_get(fields, "status"), "status", 0, 255),
            _require_int(fields.get("signal", 0), "signal", 0, 64),
        )


class Stats(NamedTuple):
    """Basic figures of the guest, all in bytes or microseconds."""

    memory_total: int
    memory_available: int
    cpu_user_us: int
    cpu_system_us: int
    processes: int
    containers: dict[str, int]  # container id -> number of its processes

    def to_wire(self) -> dict[str, Any]:
        return dict(self._asdict())

    @classmethod
    def from_wire(cls, result: dict[str, Any]) -> Stats:
        big = 2**62
        containers = result.get("containers", {})
        if not isinstance(containers, dict) or len(containers) > 1024:
            raise ProtocolError("containers must be an object of at most 1024 entries")
        return cls(
            _require_int(_get(result, "memory_total"), "memory_total", 0, big),
            _require_int(_get(result, "memory_available"), "memory_available", 0, big),
            _require_int(_get(result, "cpu_user_us"), "cpu_user_us", 0, big),
            _require_int(_get(result, "cpu_system_us"), "cpu_system_us", 0, big),
            _require_int(_get(result, "processes"), "processes", 0, 2**22),
            {
                _require_id(k, "container"): _require_int(v, "processes", 0, 2**22)
                for k, v in containers.items()
            },
        )


def _require_number(value: Any, name: str, low: float, high: float) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ProtocolError(f"{name} must be a number, got {type(value).__name__}")
    if not low <= value <= high:  # also refuses NaN
        raise ProtocolError(f"{name}={value} is outside {low:g}..{high:g}")
    return float(value)


MAX_PROCESSES = 4096
"""Most entries a ``processes`` answer may list (the guest also keeps it within one message)."""


class Processes(NamedTuple):
    """List the processes of a container (those in its cgroup)."""

    container: str

    def to_wire(self) -> dict[str, Any]:
        return {"container": self.container}

    @classmethod
    def from_wire(cls, args: dict[str, Any]) -> Processes:
        return cls(_require_id(_get(args, "container"), "container"))


class ProcessInfo(NamedTuple):
    """One process, as ``ps`` shows it. Times in seconds; ``started`` counts from the boot."""

    pid: int
    ppid: int
    uid: int
    user: str  # the name in the container's /etc/passwd, else the uid
    state: str  # the kernel's one-letter state (R, S, D, Z, T, ...)
    rss: int  # bytes
    cpu_time: float  # user + system
    started: float
    command: str  # the argv joined by spaces, or [comm] for a kernel thread or a zombie

    def to_wire(self) -> dict[str, Any]:
        return dict(self._asdict())

    @classmethod
    def from_wire(cls, fields: Any) -> ProcessInfo:
        if not isinstance(fields, dict):
            raise ProtocolError("a process entry must be an object")
        return cls(
            _require_int(_get(fields, "pid"), "pid", 1, 2**22),
            _require_int(_get(fields, "ppid"), "ppid", 0, 2**22),
            _require_int(_get(fields, "uid"), "uid", 0, 2**32 - 1),
            _require_str(_get(fields, "user"), "user", 256),
            _require_str(_get(fields, "state"), "state", 8),
            _require_int(_get(fields, "rss"), "rss", 0, 2**62),
            _require_number(_get(fields, "cpu_time"), "cpu_time", 0, 1e12),
            _require_number(_get(fields, "started"), "started", 0, 1e12),
            _require_str(_get(fields, "command"), "command", 16 * 1024),
        )


class ProcessList(NamedTuple):
    """The answer to ``processes``; ``truncated`` if the guest left some out (bounds)."""

    processes: list[ProcessInfo]
    truncated: bool = False

    def to_wire(self) -> dict[str, Any]:
        return {
            "processes": [p.to_wire() for p in self.processes],
            "truncated": self.truncated,
        }

    @classmethod
    def from_wire(cls, result: dict[str, Any]) -> ProcessList:
        entries = _get(result, "processes")
        if not isinstance(entries, list) or len(entries) > MAX_PROCESSES:
            raise ProtocolError(f"processes must be a list of at most {MAX_PROCESSES} entries")
        return cls(
            [ProcessInfo.from_wire(entry) for entry in entries],
            _require_bool(result.get("truncated", False), "truncated"),
        )


class Export(NamedTuple):
    """Stream an uncompressed tar of a container's changes (OCI layer conventions).

    It runs like a process named ``process``: the tar flows on the ``stdout`` DATA stream, an
    error message on ``stderr`` (0: not connected), then an ``exit`` event (0: complete).
    """

    container: str
    process: str
    stdout: int
    stderr: int = 0

    def to_wire(self) -> dict[str, Any]:
        return dict(self._asdict())

    @classmethod
    def from_wire(cls, args: dict[str, Any]) -> Export:
        stdout = _require_int(_get(args, "stdout"), "stdout", 1, 2**31 - 1)
        stderr = _optional_stream(args.get("stderr"), "stderr")
        if stderr == stdout:
            raise ProtocolError("stdout and stderr must be distinct streams")
        if args.get("stdin"):
            raise ProtocolError("export takes no input stream")
        return cls(
            _require_id(_get(args, "container"), "container"),
            _require_id(_get(args, "process"), "process"),
            stdout,
            stderr,
        )
