"""Pods and containers, as every front end manages them: the use cases behind hyperd's API.

A pod runs under its own supervisor process (:mod:`hyper.shim`), which owns the VM, writes the
containers' logs and a ``status.json`` of their states, and applies the restart policy. This
service keeps the records (:mod:`hyper.state`), starts supervisors, and *watches* each running
pod over its control socket with a long-poll of its status; every change is written to the
database in one transaction and published as events. Because the supervisor, not hyperd, owns
the pod, hyperd can die at any moment: at its next start :meth:`PodService.recover` re-attaches to
every supervisor still alive, and settles the pods whose supervisor died meanwhile from their last
``status.json``.

Operations on one pod are serialised by a lock per pod; different pods proceed in parallel, and
nothing here blocks the event loop for long (a boot happens in the supervisor).

A container created by ``hyper run`` is a pod of one container with the same name. Container
verbs (start, stop, restart) act on that pod; on a pod of several containers they are refused
with a pointer to the pod verbs, except ``kill``, which signals just that container.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal as signals
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hyper import errors
from hyper.agent.client import Process
from hyper.config import Settings
from hyper.images.store import ImageStore
from hyper.model.pod import PodSpec, check_name, parse_memory
from hyper.model.restart import RestartPolicy
from hyper.sandbox.rundir import sweep
from hyper.service import names
from hyper.service.caller import Caller
from hyper.service.events import Event, EventBus
from hyper.service.networks import NetworkService
from hyper.service.tenancy import Accounts, TenancyService
from hyper.service.volumes import VolumeService
from hyper.shim import launch
from hyper.shim import logs as logfiles
from hyper.shim.client import ShimClient
from hyper.shim.status import POD_STATES
from hyper.state.db import ACTIVE, FINAL, ContainerRecord, Database, PodRecord
from hyper.tenancy.metering import Kind
from hyper.tenancy.principal import Scope
from hyper.tenancy.quotas import Reservation

_log = logging.getLogger(__name__)

SUPERVISOR_DIED = "the pod's supervisor died"


@dataclass
class _Live:
    """What hyperd holds for a pod whose supervisor runs."""

    pid: int
    client: ShimClient | None = None
    child: asyncio.subprocess.Process | None = None  # when this hyperd started it
    watcher: asyncio.Task[None] | None = None
    settled: asyncio.Event = field(default_factory=asyncio.Event)


class PodService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        images: ImageStore,
        events: EventBus,
        *,
        config_file: Path | None,
        volumes: VolumeService | None = None,
        network: NetworkService | None = None,
        tenancy: TenancyService | None = None,
    ) -> None:
        self.settings = settings
        self.accounts = Accounts(tenancy)
        self.volumes = volumes
        if volumes is not None:
            volumes.wait_ending = self.wait_ending
        self.network = network
        self.db = db
        self.images = images
        self.events = events
        self._config_file = config_file
        self._locks: dict[str, asyncio.Lock] = {}
        self._live: dict[str, _Live] = {}
        self._changed = asyncio.Condition()
        self._closing = False
        self._pins: dict[str, int] = {}

    @property
    def states_dir(self) -> Path:
        return self.settings.paths.state_dir / "pods"

    def state_dir(self, pod_id: str) -> Path:
        return self.states_dir / pod_id

    def log_dir(self, container: ContainerRecord) -> Path:
        return self.state_dir(container.pod_id) / "containers" / container.local_name

    # ------------------------------------------------------------ start-up and shutdown

    async def recover(self) -> None:
        """Re-attach to the supervisors still alive; settle the pods whose supervisor died."""
        await asyncio.to_thread(sweep, self.settings.paths.pods)
        known = set()
        for pod in self.db.pods(None):
            known.add(pod.id)
            if pod.state not in ACTIVE:
                continue
            status = _read_status(self.state_dir(pod.id))
            pid = int(status.get("shim_pid") or pod.shim_pid or 0) if status else pod.shim_pid
            if pid and launch.alive(pid):
                _log.info("re-attaching to pod %s (supervisor %d)", pod.name, pid)
                live = _Live(pid=pid)
                self._live[pod.id] = live
                self._meter(pod)  # in case the last hyperd died before it could
                live.watcher = asyncio.create_task(self._watch(pod.id, live))
            else:
                _log.info("pod %s ended while hyperd was down", pod.name)
                self._settle(pod, status, SUPERVISOR_DIED)
        self._reconcile_usage()
        for leftover in self.states_dir.glob("*") if self.states_dir.exists() else ():
            if leftover.name not in known:
                await self._remove_orphan(leftover)

    async def _remove_orphan(self, path: Path) -> None:
        status = _read_status(path)
        pid = int(status.get("shim_pid") or 0) if status else 0
        if pid and launch.alive(pid):
            _log.warning("killing the supervisor %d of a pod hyperd has no record of", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signals.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(launch.wait_exit(pid), 10)
        shutil.rmtree(path, ignore_errors=True)

    async def close(self) -> None:
        """Let go of every pod; they keep running, and the next hyperd re-attaches."""
        self._closing = True
        for live in self._live.values():
            if live.watcher is not None:
                live.watcher.cancel()
        for live in list(self._live.values()):
            if live.watcher is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await live.watcher
            if live.client is not None:
                await live.client.close()
        self._live.clear()

    # ------------------------------------------------------------ lookups

    # Every lookup a front end makes takes the caller's scope (Caller.reads or .writes): the
    # pods of another tenant are not in the answer, so they are "not found" like missing ones.

    def pods(self, scope: Scope) -> list[PodRecord]:
        return self.db.pods(scope.tenant)

    def pod(self, scope: Scope, ref: str) -> PodRecord:
        return names.find(
            self.db.pods(scope.tenant),
            ref,
            id_of=lambda p: p.id,
            name_of=lambda p: p.name,
            what="pod",
        )

    def containers(self, scope: Scope) -> list[ContainerRecord]:
        return [c for pod in self.db.pods(scope.tenant) for c in pod.containers]

    def container(self, scope: Scope, ref: str) -> tuple[PodRecord, ContainerRecord]:
        pods = self.db.pods(scope.tenant)
        found = names.find(
            (c for pod in pods for c in pod.containers),
            ref,
            id_of=lambda c: c.id,
            name_of=lambda c: c.name,
            what="container",
        )
        pod = next(p for p in pods if p.id == found.pod_id)
        return pod, found

    def _fresh(self, pod_id: str) -> PodRecord:
        pod = self.db.pod(pod_id, None)
        if pod is None:
            raise errors.NotFound(f"no such pod: {pod_id}")
        return pod

    # ------------------------------------------------------------ create

    async def create(
        self,
        spec: PodSpec,
        *,
        restart: RestartPolicy | None = None,
        labels: dict[str, str] | None = None,
        auto_remove: bool = False,
        caller: Caller | None = None,
    ) -> PodRecord:
        """Record a new pod in the caller's tenant; its images must exist. Nothing runs until
        :meth:`start`. Its volumes are found (or made) in that tenant (see :mod:`.volumes`), and
        the tenant's quota is charged for it (pods, vCPUs, memory) until it is removed."""
        caller = caller or Caller()
        tenant = caller.writes().single()
        restart = restart or RestartPolicy()
        if labels:  # the pod's supervisor reads them from the spec (e.g. hyper.boot=cold)
            spec = replace(spec, labels={**spec.labels, **labels})
        if auto_remove and restart.policy != "no":
            raise errors.InvalidArgument("--rm and a restart policy cannot be combined")
        image_ids = {}
        for container in spec.containers:
            image = await asyncio.to_thread(self.images.tenant(tenant).resolve, container.image)
            image_ids[container.name] = str(image.digest)
        now = time.time()
        pod = PodRecord(
            id=secrets.token_hex(32),
            name=spec.name,
            spec=spec.to_dict(),
            restart=restart.to_dict(),
            labels=dict(labels or {}),
            auto_remove=auto_remove,
            tenant=tenant,
            created_at=now,
        )
        for container in spec.containers:
            global_name = (
                spec.name if container.name == spec.name else f"{spec.name}.{container.name}"
            )
            check_name(global_name, "container name")
            pod.containers.append(
                ContainerRecord(
                    id=secrets.token_hex(32),
                    pod_id=pod.id,
                    name=global_name,
                    local_name=container.name,
                    image=container.image,
                    image_id=image_ids[container.name],
                    created_at=now,
                )
            )
        reservation = self._reserve(pod)
        volumes = self.volumes
        try:
            refs = await volumes.prepare(caller, pod.id, spec) if volumes else []
        except BaseException:
            self.accounts.release(reservation)
            raise
        try:
            self.db.insert_pod(pod)
            if volumes:
                volumes.bind(refs)
            if self.network:  # its address on its network, released with the pod
                await self.network.attach(pod, tenant)
        except BaseException:
            self.db.delete_pod(pod.id)
            if volumes:
                await volumes.release(pod.id)
            self.accounts.release(reservation)
            raise
        self._publish(pod, "create")
        return pod

    @contextlib.asynccontextmanager
    async def pinned(self, pod_id: str) -> AsyncIterator[None]:
        """Hold off the automatic removal (``--rm``) of a pod while a client still reads its
        output and status; the pod is removed when the last pin goes, if it has ended."""
        self._pins[pod_id] = self._pins.get(pod_id, 0) + 1
        try:
            yield
        finally:
            self._pins[pod_id] -= 1
            if not self._pins[pod_id]:
                del self._pins[pod_id]
                pod = self.db.pod(pod_id, None)
                if pod is not None and pod.state in FINAL and pod_id not in self._live:
                    await self._auto_remove(pod)

    async def _auto_remove(self, pod: PodRecord) -> None:
        if pod.auto_remove and not self._pins.get(pod.id) and pod.started_at is not None:
            await self._forget(pod)

    def name_taken(self, tenant: str, name: str) -> bool:
        return any(p.name == name for p in self.db.pods(tenant))

    # ------------------------------------------------------------ lifecycle

    async def start(self, pod_id: str, *, console: tuple[int, int] = (24, 80)) -> PodRecord:
        """Boot the pod under a new supervisor and start its containers. Idempotent."""
        async with self._lock(pod_id):
            pod = self._fresh(pod_id)
            if pod.state in ACTIVE:
                return pod
            return await self._start(pod, console)

    async def _start(self, pod: PodRecord, console: tuple[int, int]) -> PodRecord:
        await self._volumes_released(pod.id)
        # Checked and marked "starting" below in one turn of the loop: no other start between.
        volumes = self.volumes.attachments(pod.id, pod.name, pod.spec) if self.volumes else []
        directory = self.state_dir(pod.id)
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            (directory / "status.json").unlink()
        _write_json(
            directory / "spec.json",
            {
                "id": pod.id,
                "pod": pod.spec,
                "restart": pod.restart,
                "console": {"rows": console[0], "cols": console[1]},
                "log": {
                    "max_bytes": self.settings.daemon.log_max_bytes,
                    "max_files": self.settings.daemon.log_max_files,
                },
                "volumes": [v.to_dict() for v in volumes],
                "images": {c.local_name: c.image_id for c in pod.containers if c.image_id},
                "tenant": pod.tenant,
            },
        )
        pod.state, pod.error, pod.started_at, pod.finished_at = "starting", "", time.time(), None
        pod.status_version = -1
        for container in pod.containers:
            container.state, container.exit_code, container.signal = "created", None, 0
            container.error, container.finished_at = "", None
        self._save(pod)
        try:
            attachment = await self.network.prepare(pod) if self.network else None
            if attachment is not None:  # the tap exists now; the supervisor's QEMU opens it
                spec_file = directory / "spec.json"
                _write_json(spec_file, {**json.loads(spec_file.read_text()), "network": attachment})
            child, ready = await launch.spawn(
                directory, config=self._config_file, timeout=self.settings.daemon.start_timeout
            )
        except errors.HyperError as exc:
            status = errors.start_failure_status(type(exc).__name__)
            for container in pod.containers:
                container.state, container.exit_code = "exited", status
                container.error, container.finished_at = str(exc), time.time()
            pod.state, pod.error, pod.finished_at = "exited", str(exc), time.time()
            self._save(pod)
            self._publish(pod, "die", exitCode=str(status))
            await self._network_changed()
            await self._notify()
            await self._auto_remove(pod)
            raise
        live = _Live(pid=int(ready.get("pid") or child.pid), child=child)
        self._live[pod.id] = live
        pod.shim_pid, pod.vm_pid = live.pid, ready.get("vm_pid")
        pod.state = "running"
        launched = _containers_of(_read_status(directory))
        for container in pod.containers:  # when each started in the guest, as its supervisor saw
            entry = launched.get(container.local_name)
            seen = entry.get("started_at") if isinstance(entry, dict) else None
            container.state, container.started_at = "running", _number(seen, pod.started_at)
        self._save(pod)
        self._publish(pod, "start")
        live.watcher = asyncio.create_task(self._watch(pod.id, live), name=f"watch-{pod.name}")
        await self._notify()
        return pod

    async def _volumes_released(self, pod_id: str) -> None:
        """Let the pods that hold this pod's volumes and are ending power off first."""
        if self.volumes:
            await self.wait_ending(self.volumes.conflicts(pod_id))

    async def wait_ending(self, pod_ids: Sequence[str]) -> None:
        """Until those of the pods that are ending (stopping, or their containers all exited:
        a ``run --rm`` just returned) have powered off, within the start timeout."""
        ending = [
            other
            for other in pod_ids
            if (pod := self.db.pod(other, None)) is not None
            and pod.state in ACTIVE
            and (pod.state == "stopping" or all(c.state == "exited" for c in pod.containers))
        ]
        if ending:
            await self.wait_inactive(ending, self.settings.daemon.start_timeout)

    async def wait_inactive(self, pod_ids: Sequence[str], timeout: float) -> None:
        """Until none of the pods is active (starting, running, stopping), or the timeout."""

        async def settled() -> None:
            async with self._changed:
                while any(
                    (pod := self.db.pod(pod_id, None)) is not None and pod.state in ACTIVE
                    for pod_id in pod_ids
                ):
                    await self._changed.wait()

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(settled(), timeout)

    async def stop(self, pod_id: str, timeout: float | None = None) -> PodRecord:
        """SIGTERM every container, SIGKILL after the grace period, power the VM off."""
        async with self._lock(pod_id):
            pod = self._fresh(pod_id)
            live = self._live.get(pod_id)
            if pod.state not in ACTIVE or live is None:
                return pod
            grace = self.settings.container.stop_timeout if timeout is None else timeout
            self._publish(pod, "stop")
            await self._stop_live(pod, live, grace)
            return self._fresh(pod_id) if self.db.pod(pod_id, None) else pod

    async def _stop_live(self, pod: PodRecord, live: _Live, grace: float) -> None:
        try:
            client = await self._client(pod.id, live)
            await asyncio.wait_for(client.stop(grace), grace + 30)
        except (errors.HyperError, TimeoutError, OSError) as exc:
            _log.warning("pod %s did not stop cleanly (%s): killing its supervisor", pod.name, exc)
            with contextlib.suppress(ProcessLookupError):
                os.kill(live.pid, signals.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.settled.wait(), 60)

    async def kill(self, pod_id: str, signal: int = signals.SIGKILL) -> None:
        """Send a signal to every container's main process; no more restarts."""
        async with self._lock(pod_id):
            pod = self._fresh(pod_id)
            live = self._live.get(pod_id)
            if pod.state not in ACTIVE or live is None:
                raise errors.FailedPrecondition(f"pod {pod.name} is not running")
            client = await self._client(pod.id, live)
            await client.kill(signal)
            self._publish(pod, "kill", signal=str(signal))

    async def restart(self, pod_id: str, timeout: float | None = None) -> PodRecord:
        async with self._lock(pod_id):
            pod = self._fresh(pod_id)
            live = self._live.get(pod_id)
            if pod.state in ACTIVE and live is not None:
                grace = self.settings.container.stop_timeout if timeout is None else timeout
                await self._stop_live(pod, live, grace)
            pod = self._fresh(pod_id)
            self._publish(pod, "restart")
            return await self._start(pod, (24, 80))

    async def remove(self, pod_id: str, *, force: bool = False) -> None:
        async with self._lock(pod_id):
            pod = self._fresh(pod_id)
            live = self._live.get(pod_id)
            if pod.state in ACTIVE and live is not None:
                if not force:
                    raise errors.FailedPrecondition(
                        f"{pod.name} is running: stop it first, or remove it with -f"
                    )
                await self._stop_live(pod, live, 0.0)
            await self._forget(self.db.pod(pod_id, None) or pod)

    async def _forget(self, pod: PodRecord) -> None:
        if self.db.pod(pod.id, None) is None:
            return
        # billed up to its end (or now), then its quota is free
        self.accounts.stop(pod.tenant, pod.id, at=pod.finished_at or time.time())
        self.accounts.release_owner(pod.tenant, pod.id)
        self.db.delete_pod(pod.id)  # its network endpoint (address) goes with it
        if self.volumes:
            await self.volumes.release(pod.id)  # its anonymous volumes
        await self._network_changed()
        await asyncio.to_thread(shutil.rmtree, self.state_dir(pod.id), True)
        self._locks.pop(pod.id, None)
        self._publish(pod, "destroy")
        await self._notify()

    async def wait(self, container_id: str, condition: str = "not-running") -> ContainerRecord:
        """Until the container is not running (or has exited once more, or is removed)."""
        if condition not in ("not-running", "next-exit", "removed"):
            raise errors.InvalidArgument(f"unknown wait condition {condition!r}")
        first = True
        async with self._changed:
            while True:
                pod, container = self._find_container(container_id)
                if container is None:
                    if condition == "removed" or not first:
                        return _removed_placeholder(container_id)
                    raise errors.NotFound(f"no such container: {container_id}")
                done = {
                    "not-running": container.state == "exited"
                    or (container.state == "created" and (pod is None or pod.state not in ACTIVE)),
                    "next-exit": not first and container.state == "exited",
                    "removed": False,
                }[condition]
                if done:
                    return container
                first = False
                await self._changed.wait()

    def _find_container(self, container_id: str) -> tuple[PodRecord | None, ContainerRecord | None]:
        """By id, with one indexed query: every waiter looks again at every change."""
        pod = self.db.pod_of_container(container_id, None)
        if pod is None:
            return None, None
        return pod, next(c for c in pod.containers if c.id == container_id)

    # ------------------------------------------------------------ processes and data

    async def attach(
        self, pod: PodRecord, container: ContainerRecord, *, stdin: bool, replay: bool
    ) -> Process:
        try:
            client = await self._running_client(pod)
            return await client.attach(
                container.local_name, stdin=stdin, stdout=True, stderr=True, replay=replay
            )
        except errors.Unavailable as exc:
            # A quick run (a clone starts in ~0.2 s) may end while we connect: the supervisor
            # is closing its control socket. Callers then take the ended run from the logs.
            raise errors.FailedPrecondition(
                f"container {container.name} is not running any more ({exc})"
            ) from exc

    async def exec(
        self,
        pod: PodRecord,
        container: ContainerRecord,
        argv: Sequence[str],
        *,
        env: Sequence[str] = (),
        workdir: str = "",
        user: str = "",
        tty: bool = False,
        stdin: bool = False,
        rows: int = 24,
        cols: int = 80,
    ) -> Process:
        if not argv:
            raise errors.InvalidArgument("exec needs a command")
        client = await self._running_client(pod)
        return await client.exec(
            container.local_name,
            f"exec-{secrets.token_hex(6)}",
            list(argv),
            env=list(env),
            cwd=workdir or "/",
            user=user,
            tty=tty,
            stdin=stdin,
            rows=rows,
            cols=cols,
        )

    async def signal_container(self, pod: PodRecord, container: ContainerRecord, sig: int) -> None:
        client = await self._running_client(pod)
        await client.signal(container.local_name, sig)
        self._publish(pod, "kill", signal=str(sig), container=container.name)

    async def signal_process(self, pod: PodRecord, process: str, sig: int) -> None:
        client = await self._running_client(pod)
        await client.signal(process, sig)

    async def resize(self, pod: PodRecord, process: str, rows: int, cols: int) -> None:
        client = await self._running_client(pod)
        await client.resize(process, rows, cols)

    async def stats(self, pod: PodRecord) -> dict[str, Any]:
        client = await self._running_client(pod)
        return (await client.stats()).to_wire()

    async def processes(self, pod: PodRecord, container: ContainerRecord) -> list[dict[str, Any]]:
        client = await self._running_client(pod)
        return await client.processes(container.local_name)

    async def export(self, pod: PodRecord, container: ContainerRecord) -> Process:
        client = await self._running_client(pod)
        return await client.export(container.local_name)

    def logs(
        self,
        container: ContainerRecord,
        *,
        tail: int | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> list[logfiles.LogEntry]:
        return list(
            logfiles.read_logs(self.log_dir(container), tail=tail, since=since, until=until)
        )

    async def ended_run(
        self, container_id: str, *, since: float
    ) -> tuple[list[logfiles.LogEntry], ContainerRecord]:
        """A run that ended before a client could attach to it (a quick ``hyper run``): its
        logged output from ``since`` (the run's start) and its final record."""
        done = await self.wait(container_id)
        _, record = self._find_container(container_id)
        if record is None:
            raise errors.NotFound(f"no such container: {container_id}")
        entries = await asyncio.to_thread(self.logs, record, since=since)
        return entries, done

    async def follow_logs(
        self, container: ContainerRecord, *, tail: int | None, since: float | None
    ) -> AsyncIterator[logfiles.LogEntry]:
        """The logs so far, then new lines as they come, until the container stops."""
        directory = self.log_dir(container)
        entries = await asyncio.to_thread(
            lambda: list(logfiles.read_logs(directory, tail=tail, since=since))
        )
        last = entries[-1] if entries else None
        for entry in entries:
            yield entry
        stop = asyncio.Event()
        waiter = asyncio.create_task(self._until_stopped(container.id, stop))
        try:
            position = last.position if last else logfiles.end_position(directory)
            async for entry in logfiles.follow_logs(directory, start_after=position, stop=stop):
                last = entry
                yield entry
            # What was written between the last look and the stop:
            after = last.time_ns if last else 0
            rest = await asyncio.to_thread(
                lambda: list(logfiles.read_logs(directory, since=after / 1e9 if after else None))
            )
            for entry in rest:
                if entry.time_ns > after:
                    yield entry
        finally:
            waiter.cancel()

    async def _until_stopped(self, container_id: str, stop: asyncio.Event) -> None:
        with contextlib.suppress(errors.HyperError):
            await self.wait(container_id)
        stop.set()

    async def _running_client(self, pod: PodRecord) -> ShimClient:
        live = self._live.get(pod.id)
        if pod.state not in ("running", "starting") or live is None:
            raise errors.FailedPrecondition(f"{pod.name} is not running")
        return await self._client(pod.id, live)

    async def _client(self, pod_id: str, live: _Live) -> ShimClient:
        if live.client is None or live.client.is_closed:
            live.client = await ShimClient.connect(self._control_socket(pod_id), timeout=10.0)
        return live.client

    def _control_socket(self, pod_id: str) -> Path:
        return self.settings.paths.pods / pod_id[:16] / "control.sock"

    # ------------------------------------------------------------ watching a pod

    async def _watch(self, pod_id: str, live: _Live) -> None:
        """Follow a pod's status until its supervisor ends, then settle the pod."""
        try:
            version = -1
            pod = self.db.pod(pod_id, None)
            if pod is not None:
                version = pod.status_version
            while True:
                try:
                    client = await self._client(pod_id, live)
                    status = await client.status(after=version, timeout=None)
                except (errors.HyperError, OSError) as exc:
                    if not launch.alive(live.pid):
                        break
                    _log.info("lost the control connection of pod %s: %s", pod_id[:12], exc)
                    if live.client is not None:
                        await live.client.close()
                    live.client = None
                    await asyncio.sleep(0.2)  # the supervisor is alive: reconnect
                    continue
                version = int(status.get("version", version))
                if self._apply(pod_id, status):
                    await self._notify()
                if status.get("pod", {}).get("state") in ("exited", "failed"):
                    break
            await self._reap(live)
            pod = self.db.pod(pod_id, None)
            if pod is not None:
                self._settle(pod, _read_status(self.state_dir(pod_id)), SUPERVISOR_DIED)
                await self._network_changed()
                await self._notify()
                await self._auto_remove(pod)
        finally:
            if live.client is not None and not self._closing:
                await live.client.close()
            if not self._closing and self._live.get(pod_id) is live:
                del self._live[pod_id]
            live.settled.set()

    async def _reap(self, live: _Live) -> None:
        """Wait for the supervisor to exit (it does, right after its final status)."""
        try:
            if live.child is not None:
                await asyncio.wait_for(live.child.wait(), 30)
            else:
                await asyncio.wait_for(launch.wait_exit(live.pid), 30)
        except TimeoutError:
            _log.warning("supervisor %d did not exit after its pod ended: killing it", live.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(live.pid, signals.SIGKILL)

    def _apply(self, pod_id: str, status: dict[str, Any]) -> bool:
        """Record a supervisor's status; publish what changed. True if anything did."""
        pod = self.db.pod(pod_id, None)
        if pod is None:
            return False
        before = {c.id: (c.state, c.restart_count) for c in pod.containers}
        _merge_status(pod, status)
        self._save(pod)
        for container in pod.containers:
            old_state, old_restarts = before[container.id]
            if container.restart_count > old_restarts:
                self._publish(pod, "restart", container=container.name)
            if container.state == "exited" and old_state != "exited":
                self._publish(
                    pod, "die", container=container.name, exitCode=str(container.exit_code)
                )
        return True

    def _settle(self, pod: PodRecord, status: dict[str, Any] | None, reason: str) -> None:
        """Make a pod whose supervisor is gone final: what its status says, or dead."""
        if status:
            _merge_status(pod, status)
        now = time.time()
        for container in pod.containers:
            if container.state != "exited" and (
                container.state != "created" or pod.state in ACTIVE
            ):
                container.state, container.exit_code = "exited", 255
                container.error = container.error or reason
                container.finished_at = container.finished_at or now
                self._publish(pod, "die", container=container.name, exitCode="255")
        if pod.state not in ("exited", "failed"):
            pod.state, pod.error = "failed", pod.error or reason
        pod.finished_at = pod.finished_at or now
        pod.shim_pid = pod.vm_pid = None
        self._save(pod)

    # ------------------------------------------------------------ quota and metering

    def _shape(self, pod: PodRecord) -> tuple[int, int]:
        """The pod's vCPUs and MiB of memory: its spec's, else the host's defaults."""
        memory = pod.spec.get("memory")
        return (
            int(pod.spec.get("cpus") or self.settings.vm.cpus),
            parse_memory(memory) if memory else self.settings.vm.memory_mb,
        )

    def _reserve(self, pod: PodRecord) -> Reservation | None:
        cpus, memory_mb = self._shape(pod)
        return self.accounts.reserve(
            pod.tenant, {"pods": 1, "vcpus": cpus, "memory_mb": memory_mb}, owner=pod.id
        )

    def _save(self, pod: PodRecord) -> None:
        """Record the pod's state, and what it consumes: from the moment its VM started to
        boot (``started_at``) to the moment it powered off (``finished_at``), as the pod's
        supervisor saw them, so a restart of hyperd in between changes nothing."""
        self.db.update_pod(pod)
        self._meter(pod)

    def _meter(self, pod: PodRecord) -> None:
        if pod.started_at is None:
            return
        if pod.state in ("running", "stopping"):
            cpus, memory_mb = self._shape(pod)
            self.accounts.start(
                pod.tenant,
                pod.id,
                Kind.POD,
                pod.started_at,
                vcpus=cpus,
                memory_mb=memory_mb,
                name=pod.name,
            )
        elif pod.state in FINAL:
            self.accounts.stop(pod.tenant, pod.id, at=pod.finished_at or time.time())

    def _reconcile_usage(self) -> None:
        """After a restart: close what the ledger still bills for pods that are gone."""
        self.accounts.close_gone(
            Kind.POD, lambda tenant, pod_id: self.db.pod(pod_id, tenant) is not None
        )

    # ------------------------------------------------------------ helpers

    async def _network_changed(self) -> None:
        """A pod ended or went: its tap, rules and names go (nothing of ours stays unused)."""
        if self.network is not None:
            try:
                await self.network.converge()
            except errors.HyperError as exc:  # the next change or start converges again
                _log.error("could not update the host's network: %s", exc)

    def _lock(self, pod_id: str) -> asyncio.Lock:
        return self._locks.setdefault(pod_id, asyncio.Lock())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _publish(self, pod: PodRecord, action: str, **attributes: str) -> None:
        container = attributes.get("container")
        if container is None and len(pod.containers) == 1:
            container = pod.containers[0].name
        if container is not None:
            record = next((c for c in pod.containers if c.name == container), None)
            self.events.publish(
                Event(
                    "container",
                    action,
                    record.id if record else "",
                    container,
                    {"pod": pod.name, **attributes},
                    tenant=pod.tenant,
                )
            )
        else:
            self.events.publish(
                Event("pod", action, pod.id, pod.name, attributes, tenant=pod.tenant)
            )


def _merge_status(pod: PodRecord, status: dict[str, Any]) -> None:
    """Copy a supervisor's status (untrusted shape: it is checked field by field)."""
    state = status.get("pod", {})
    if isinstance(state, dict):
        if state.get("state") in POD_STATES:
            pod.state = state["state"]
        pod.error = str(state.get("error") or pod.error or "")[:4096]
        pod.finished_at = _number(state.get("finished_at"), pod.finished_at)
    version = status.get("version")
    if isinstance(version, int):
        pod.status_version = version
    if isinstance(status.get("vm_pid"), int):
        pod.vm_pid = status["vm_pid"]
    containers = _containers_of(status)
    for container in pod.containers:
        entry = containers.get(container.local_name)
        if not isinstance(entry, dict):
            continue
        if entry.get("state") in ("created", "running", "restarting", "exited"):
            container.state = entry["state"]
        for key in ("pid", "signal", "restart_count"):
            if isinstance(entry.get(key), int):
                setattr(container, key, entry[key])
        if isinstance(entry.get("exit_code"), int) or entry.get("exit_code") is None:
            container.exit_code = entry.get("exit_code")
        container.error = str(entry.get("error") or "")[:4096]
        container.started_at = _number(entry.get("started_at"), container.started_at)
        container.finished_at = _number(entry.get("finished_at"), container.finished_at)


def _containers_of(status: dict[str, Any] | None) -> dict[str, Any]:
    containers = (status or {}).get("containers")
    return containers if isinstance(containers, dict) else {}


def _number(value: Any, default: float | None) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return default


def _read_status(directory: Path) -> dict[str, Any] | None:
    try:
        with open(directory / "status.json", "rb") as handle:
            data = json.loads(handle.read(1 << 20))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.rename(path)


def _removed_placeholder(container_id: str) -> ContainerRecord:
    return ContainerRecord(
        id=container_id, pod_id="", name="", local_name="", image="", state="removed"
    )
