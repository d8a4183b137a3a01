"""A pod: one micro-VM, its agent, and the containers inside it.

This is the only place where the parts meet: the VM driver (:mod:`hyper.vmm`), the agent client
(:mod:`hyper.agent`) and the images (:mod:`hyper.images`) do not know each other. Like Kata's
sandbox, a pod has an explicit state, refuses an operation in the wrong state with an error naming
both, and rolls back everything a failed start made (QEMU, sockets, files).

Start-up, in order: the root filesystem image of each distinct container image (cached), the
pod's runtime directory and its lock, the agent socket (listening before QEMU starts, so QEMU
connects to it as a client), QEMU (a clone of the VM template of the pod's shape, else a cold
boot: :mod:`hyper.sandbox.template`), the agent's handshake, the pod set-up (hostname, clock,
entropy, machine id, network), every disk hot-plugged (:meth:`Pod.attach_disk`), then each
container's filesystem. A container's main process starts separately
(:meth:`Pod.start_container`), so a front end can attach its stdio first.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from hyper import errors
from hyper.agent.client import AgentClient, Process
from hyper.config import Settings
from hyper.images import Image, ImageStore, erofs_image
from hyper.images.digest import Digest
from hyper.model.pod import ContainerSpec, PodSpec
from hyper.proto import messages
from hyper.sandbox import volumes
from hyper.sandbox.boot import connect_agent, listen
from hyper.sandbox.nic import NetworkAttachment
from hyper.sandbox.rundir import PodDir
from hyper.sandbox.template import BOOT_LABEL, Lease, Shape, Templates
from hyper.vmm.machine import Disk, MachineConfig, MemoryFile, Nic, VmExit
from hyper.vmm.qemu.driver import QemuVm
from hyper.volumes.attachment import Attachment

_log = logging.getLogger(__name__)
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class PodState(enum.Enum):
    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True)
class Guest:
    """The guest a pod boots: resolved by the caller (see :mod:`hyper.guest`)."""

    kernel: Path
    initrd: Path
    accelerator: str
    append: str = ""
    fingerprint: str = ""
    """The kernel's and initramfs's content fingerprint (VM templates are keyed on it)."""
    agent_version: str = ""


@dataclass
class Container:
    spec: ContainerSpec
    image: Image
    disk: str
    process: Process | None = None
    exit: messages.Exit | None = None
    argv: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    workdir: str = "/"
    user: str = ""


class Pod:
    """One pod; create it, :meth:`start` it, then start and exec its containers' processes."""

    def __init__(
        self,
        spec: PodSpec,
        *,
        settings: Settings,
        images: ImageStore,
        guest: Guest,
        pod_id: str | None = None,
        volumes: Sequence[Attachment] = (),
        templates: Templates | None = None,
        network: NetworkAttachment | None = None,
        image_digests: Mapping[str, Digest] | None = None,
        tenant: str = "",
    ) -> None:
        """``image_digests``: container name -> the manifest digest recorded when a tenant
        created the pod (hyperd); without it, images are resolved by name in the default tenant
        (the host's own tools). ``tenant``: whose pod it is, for unshared templates."""
        self.id = pod_id or secrets.token_hex(32)
        self._digests = dict(image_digests or {})
        self.tenant = tenant
        self.network = network
        self.volumes = tuple(volumes)
        self.spec = spec
        self.state = PodState.CREATED
        self.settings = settings
        self.log = _log.getChild(spec.name)
        self._images = images
        self._guest = guest
        self._dir = PodDir(settings.paths.pods / self.id[:16])  # short: unix socket paths
        self._vm: QemuVm | None = None
        self._agent: AgentClient | None = None
        self._watch: asyncio.Task[None] | None = None
        self.vm_exit: VmExit | None = None
        self._vm_gone = asyncio.Event()
        self.containers: dict[str, Container] = {}
        self._exec_ids = 0
        self._lock = asyncio.Lock()
        self._templates = templates
        self._lease: Lease | None = None
        self.boot = ""
        self.timings: dict[str, float] = {}
        """Seconds each phase of the start took (prepare, vm, personalise, disks, containers)."""
        """How the VM started: ``clone of template <key>`` or ``cold: <why>``."""

    @property
    def dir(self) -> Path:
        return self._dir.path

    @property
    def vm_pid(self) -> int | None:
        return self._vm.pid if self._vm else None

    @property
    def agent(self) -> AgentClient:
        if self._agent is None or self.state is not PodState.RUNNING:
            raise errors.FailedPrecondition(
                f"pod {self.spec.name} is {self.state.value}, expected running"
            )
        return self._agent

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._expect(PodState.CREATED)
        self.state = PodState.STARTING
        started = time.monotonic()
        try:
            await self._start()
        except BaseException as exc:
            self.log.debug("start failed, rolling back: %r", exc)
            self.state = PodState.FAILED
            console = self._vm.console_tail() if self._vm else ""
            await self._teardown(kill=True)
            if (
                isinstance(exc, errors.HyperError)
                and console
                and not isinstance(exc, errors.InvalidArgument | errors.NotFound)
            ):
                raise type(exc)(f"{exc}\n--- guest console (tail) ---\n{console[-2000:]}") from exc
            raise
        self.state = PodState.RUNNING
        self.log.info(
            "pod %s running in %.0f ms (%s; %s)",
            self.spec.name,
            (time.monotonic() - started) * 1000,
            self.boot,
            ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in self.timings.items()),
        )

    async def _start(self) -> None:
        mark = _Stopwatch(self.timings)
        images = await self._prepare_images()
        self._dir.create(self.spec, self.id)
        self.volumes = await volumes.pack_host_dirs(self.volumes, self._dir.path)
        mark("prepare")
        config = machine_config(
            self.settings,
            self._guest,
            name=self.spec.name,
            cpus=self.spec.cpus,
            memory_mb=self.spec.memory_mb,
            agent_socket=self._dir.agent_socket,
            run_dir=self._dir.vm_dir,
            nic=self.network.nic if self.network else None,
        )
        self._agent = await self._boot(config)
        mark("vm")
        # A clone wakes up with its template's identity, clock and RNG state: personalise it.
        await self._agent.setup_pod(
            messages.SetupPod(
                hostname=self.spec.hostname or _hostname(self.spec.name),
                time_ns=time.time_ns(),
                entropy=secrets.token_hex(64),
                machine_id=secrets.token_hex(16),
            )
        )
        if self.network is not None:  # after setup_pod, before containers read /etc from it
            await self._agent.setup_network(self.network.setup)
        mark("personalise")
        images_disks = tuple(
            Disk(id=disk, path=path, readonly=True, format="raw") for disk, path in images.items()
        )
        for disk in images_disks + volumes.disks(self.volumes):
            await self.attach_disk(disk)
        mark("disks")
        for container in self.containers.values():
            await self._agent.add_container(
                messages.AddContainer(
                    container.spec.name,
                    container.disk,
                    "erofs",
                    self.settings.container.scratch_mb,
                    volumes.mounts(self.volumes, container.spec.name),
                )
            )
        mark("containers")

    async def _prepare_images(self) -> dict[str, Path]:
        """Resolve every container's image and its root filesystem; one disk per image."""
        disks: dict[str, Path] = {}
        by_digest: dict[str, str] = {}  # manifest digest -> disk id
        for spec in self.spec.containers:
            digest = self._digests.get(spec.name)
            if digest is not None:
                image = await asyncio.to_thread(self._images.image, digest, spec.image)
            else:
                image = await asyncio.to_thread(self._images.resolve, spec.image)
            disk = by_digest.get(str(image.digest))
            if disk is None:
                disk = f"img{len(by_digest)}"
                by_digest[str(image.digest)] = disk
                disks[disk] = await erofs_image(self._images, image)
            container = Container(spec=spec, image=image, disk=disk)
            _apply_image_defaults(container)
            self.containers[spec.name] = container
        return disks

    async def _boot(self, config: MachineConfig) -> AgentClient:
        """Clone the template of the pod's shape, else (or if that fails) boot cold."""
        lease, reason = await self._template(config)
        if lease is not None:
            clone = replace(
                config, memory_file=MemoryFile(lease.info.ram, shared=False), incoming=True
            )
            try:
                agent = await self._start_vm(clone, lease)
                self._lease = lease
                self.boot = f"clone of template {lease.info.key[:16]}"
                return agent
            except errors.HyperError as exc:
                lease.release()
                reason = f"cloning template {lease.info.key[:16]} failed: {exc}"
                await self._discard_vm()
        self.log.warning("pod %s boots cold: %s", self.spec.name, reason)
        self.boot = f"cold: {reason}"
        return await self._start_vm(config, None)

    async def _template(self, config: MachineConfig) -> tuple[Lease | None, str]:
        """A hold on the template to clone, or None and why not."""
        if self._templates is None:
            return None, "no VM templates here"
        if self.settings.template.boot == "cold":
            return None, "template.boot is cold"
        if self.spec.labels.get(BOOT_LABEL) == "cold":
            return None, f"the pod is labelled {BOOT_LABEL}=cold"
        tenant = "" if self.settings.template.share_across_tenants else self.tenant
        shape = Shape(config, self._guest.fingerprint, self._guest.agent_version, tenant)
        try:
            return await self._templates.lease(shape, self.log), ""
        except errors.HyperError as exc:
            return None, f"no template: {exc}"

    async def _start_vm(self, config: MachineConfig, lease: Lease | None) -> AgentClient:
        """Start QEMU (restoring the template's state into a clone) and reach the agent."""
        listener = listen(self._dir.agent_socket)  # a fresh one per attempt: no stale client
        try:
            self._vm = QemuVm(config, self.settings.vm, logger=self.log)
            await self._vm.start()
            self.timings["vm.qemu"] = self._vm.startup_seconds or 0.0  # spawn to QMP
            self._watch = asyncio.create_task(self._watch_vm(), name=f"watch-{self.spec.name}")
            started = time.monotonic()
            if lease is not None:
                await self._vm.restore_state(lease.info.state)
                self.timings["vm.restore"] = time.monotonic() - started
                started = time.monotonic()
            timeout = self.settings.vm.boot_timeout
            agent = await connect_agent(listener, self._vm, timeout, self.log)
            self.timings["vm.agent"] = time.monotonic() - started
            return agent
        finally:
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                self._dir.agent_socket.unlink()

    async def _discard_vm(self) -> None:
        """Forget a VM whose start failed, before trying another way."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, errors.HyperError):
                await self._watch
            self._watch = None
        if self._vm is not None:
            with contextlib.suppress(errors.FailedPrecondition):
                await self._vm.kill()
        self._vm = None
        self.vm_exit = None
        self._vm_gone = asyncio.Event()
        self.state = PodState.STARTING

    async def attach_disk(self, disk: Disk) -> None:
        """Attach ``disk`` to the running VM; the guest finds it by ``disk.id`` (its serial).

        The one way every disk reaches a pod (image root filesystems, volumes), whatever the
        transport underneath (virtio-scsi hot-plug, docs/vmm.md)."""
        if self._vm is None or self.state not in (PodState.STARTING, PodState.RUNNING):
            raise errors.FailedPrecondition(
                f"pod {self.spec.name} is {self.state.value}, expected starting or running"
            )
        await self._vm.attach_disk(disk)

    async def _watch_vm(self) -> None:
        assert self._vm is not None
        self.vm_exit = await self._vm.wait()
        self._vm_gone.set()
        if self.state in (PodState.STARTING, PodState.RUNNING):
            self.log.error(
                "the VM of pod %s exited unexpectedly: %s", self.spec.name, self.vm_exit.reason
            )
            self.state = PodState.FAILED
            reason = errors.Unavailable(f"the pod's VM exited: {self.vm_exit.reason}")
            for container in self.containers.values():
                if container.process is not None:
                    container.process._fail(reason)
            if self._agent is not None:
                self._agent._shutdown(reason)

    async def wait_vm_exit(self) -> VmExit:
        """Until QEMU has exited (for any reason: a stop, a crash, a kill) and its exit."""
        await self._vm_gone.wait()
        assert self.vm_exit is not None
        return self.vm_exit

    async def explain(self, error: errors.HyperError, within: float = 2.0) -> errors.HyperError:
        """The error to report for a failure seen on the agent connection.

        When QEMU dies, the agent's connection usually ends a moment before QEMU's exit is
        reaped; the VM's exit is the real cause, so wait briefly for it and report that."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._vm_gone.wait(), within)
        if self.vm_exit is not None:
            return errors.Unavailable(f"the pod's VM exited unexpectedly: {self.vm_exit.reason}")
        return error

    async def stop(self, timeout: float | None = None) -> None:
        """Stop every container (SIGTERM, then SIGKILL after the grace period), power off."""
        async with self._lock:
            if self.state in (PodState.STOPPED, PodState.CREATED):
                self.state = PodState.STOPPED
                await self._teardown(kill=False)
                return
            grace = self.settings.container.stop_timeout if timeout is None else timeout
            if self.state is PodState.RUNNING:
                self.state = PodState.STOPPING
                with contextlib.suppress(errors.HyperError):
                    await asyncio.gather(
                        *(self._stop_container(c, grace) for c in self.containers.values())
                    )
                if self._agent is not None:
                    with contextlib.suppress(errors.HyperError):
                        await self._agent.shutdown(timeout=5.0)
                    if self.volumes:  # let the guest unmount, sync and power off by itself
                        await volumes.wait_power_off(self._vm_gone, self.settings.vm.boot_timeout)
            await self._teardown(kill=False)
            self.state = PodState.STOPPED

    async def destroy(self) -> None:
        """Kill the VM now and remove everything the pod made."""
        async with self._lock:
            if self.state is not PodState.STOPPED:
                self.state = PodState.STOPPING
            await self._teardown(kill=True)
            self.state = PodState.STOPPED

    async def _teardown(self, *, kill: bool) -> None:
        if self._agent is not None:
            await self._agent.close()
        if self._vm is not None and self.vm_exit is None:
            with contextlib.suppress(errors.FailedPrecondition):
                self.vm_exit = await (self._vm.kill() if kill else self._vm.stop(timeout=5.0))
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError, errors.HyperError):
                await self._watch
        if self._lease is not None:  # the VM is gone: the template may go too
            self._lease.release()
            self._lease = None
        self._dir.remove()

    # ------------------------------------------------------------ processes

    async def start_container(
        self,
        name: str,
        *,
        stdin: bool = False,
        tty: bool | None = None,
        rows: int = 24,
        cols: int = 80,
    ) -> Process:
        """Start a container's main process (its id is the container's name)."""
        container = self._container(name)
        if container.process is not None and not container.process.exited:
            raise errors.FailedPrecondition(f"container {name} is running already")
        container.exit = None
        use_tty = container.spec.tty if tty is None else tty
        container.process = await self.agent.exec(
            name,
            name,
            container.argv,
            env=container.env,
            cwd=container.workdir,
            user=container.user,
            tty=use_tty,
            stdin=stdin or container.spec.stdin,
            rows=rows,
            cols=cols,
        )
        return container.process

    async def exec(
        self,
        container_name: str,
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
        """Run another process in a running container, like ``docker exec``."""
        container = self._container(container_name)
        if container.process is None or container.process.exited:
            raise errors.FailedPrecondition(f"container {container_name} is not running")
        if not argv:
            raise errors.InvalidArgument("exec needs a command")
        self._exec_ids += 1
        return await self.agent.exec(
            container_name,
            f"exec-{self._exec_ids}-{secrets.token_hex(4)}",
            list(argv),
            env=_merge_env(container.env, env),
            cwd=workdir or container.workdir,
            user=user or container.user,
            tty=tty,
            stdin=stdin,
            rows=rows,
            cols=cols,
        )

    async def processes(self, container_name: str) -> list[dict[str, Any]]:
        """The processes of a running container, like ``docker top`` (see
        ``messages.ProcessInfo`` for the fields)."""
        container = self._container(container_name)
        if container.process is None or container.process.exited:
            raise errors.FailedPrecondition(f"container {container_name} is not running")
        return await self.agent.processes(container_name)

    async def export_changes(self, container_name: str) -> Process:
        """A tar of the container's changes (an OCI layer, uncompressed) on ``stdout``; the exit
        status says whether it is complete. On a running container the tar is crash-consistent
        per file, not a snapshot. The container may also have exited (its files remain)."""
        self._container(container_name)
        self._exec_ids += 1
        return await self.agent.export(
            container_name, f"export-{self._exec_ids}-{secrets.token_hex(4)}"
        )

    async def snapshot_volume(self, disk: str, name: str, *, freeze: bool = True) -> str:
        """Snapshot an attached volume live; its consistency ("application" or "crash")."""
        if self._vm is None:
            raise errors.FailedPrecondition(f"pod {self.spec.name} has no VM")
        volumes.check_disk(self.volumes, disk)
        consistency = await volumes.snapshot(self._vm, self.agent, disk, name, freeze=freeze)
        return consistency.value

    async def delete_volume_snapshot(self, disk: str, name: str) -> None:
        if self._vm is None:
            raise errors.FailedPrecondition(f"pod {self.spec.name} has no VM")
        volumes.check_disk(self.volumes, disk)
        await volumes.delete_snapshot(self._vm, disk, name)

    async def signal(self, process_id: str, signal: int) -> None:
        await self.agent.signal(process_id, signal)

    async def resize(self, process_id: str, rows: int, cols: int) -> None:
        await self.agent.resize(process_id, rows, cols)

    async def wait_container(self, name: str) -> messages.Exit:
        container = self._container(name)
        if container.process is None:
            raise errors.FailedPrecondition(f"container {name} was never started")
        container.exit = await container.process.wait()
        return container.exit

    async def _stop_container(self, container: Container, grace: float) -> None:
        process = container.process
        agent = self._agent  # not self.agent: stop() calls this in the STOPPING state
        if process is None or process.exited or agent is None:
            return
        with contextlib.suppress(errors.NotFound):
            await agent.signal(process.id, 15)
        try:
            await asyncio.wait_for(process.wait(), grace)
        except TimeoutError:
            self.log.info(
                "container %s ignored SIGTERM for %g s: killing it", container.spec.name, grace
            )
            with contextlib.suppress(errors.NotFound):
                await agent.signal(process.id, 9)
            await asyncio.wait_for(process.wait(), 10.0)

    async def stop_container(self, name: str, timeout: float | None = None) -> messages.Exit:
        """SIGTERM the container's main process, SIGKILL after the grace period."""
        container = self._container(name)
        grace = self.settings.container.stop_timeout if timeout is None else timeout
        await self._stop_container(container, grace)
        return await self.wait_container(name)

    def _container(self, name: str) -> Container:
        container = self.containers.get(name)
        if container is None:
            raise errors.NotFound(f"pod {self.spec.name} has no container {name!r}")
        return container

    def _expect(self, state: PodState) -> None:
        if self.state is not state:
            raise errors.FailedPrecondition(
                f"pod {self.spec.name} is {self.state.value}, expected {state.value}"
            )


def machine_config(
    settings: Settings,
    guest: Guest,
    *,
    name: str,
    cpus: int,
    memory_mb: int,
    agent_socket: Path,
    run_dir: Path,
    nic: Nic | None = None,
) -> MachineConfig:
    """A pod's machine (``cpus``/``memory_mb`` 0: the configured default). No disks: they are
    hot-plugged once the agent is up, on a clone and a cold boot alike. Templates are built
    from this too (`hyper.sandbox.runtime.Runtime.shape`), so that clones match them."""
    return MachineConfig(
        name=name,
        accelerator=guest.accelerator,
        cpus=cpus or settings.vm.cpus,
        memory_mb=memory_mb or settings.vm.memory_mb,
        kernel=guest.kernel,
        initrd=guest.initrd,
        append=guest.append,
        disks=(),
        agent_socket=agent_socket,
        run_dir=run_dir,
        nic=nic,
    )


class _Stopwatch:
    """Records the seconds since the previous mark under each phase's name."""

    def __init__(self, into: dict[str, float]) -> None:
        self._into = into
        self._last = time.monotonic()

    def __call__(self, phase: str) -> None:
        now = time.monotonic()
        self._into[phase] = now - self._last
        self._last = now


def _hostname(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in name).strip("-")
    return (cleaned or "pod")[:63]


def _merge_env(base: Sequence[str], extra: Sequence[str]) -> list[str]:
    merged: dict[str, str] = {}
    for entry in (*base, *extra):
        key, _, value = entry.partition("=")
        merged[key] = value
    return [f"{k}={v}" for k, v in merged.items()]


def _apply_image_defaults(container: Container) -> None:
    """Docker's rules: the spec's entrypoint/command replace the image's, env is merged."""
    spec, config = container.spec, container.image.config
    entrypoint = (
        list(spec.entrypoint) if spec.entrypoint is not None else list(config.entrypoint or [])
    )
    if spec.command is not None:
        command = list(spec.command)
    elif spec.entrypoint is not None:
        command = []
    else:
        command = list(config.cmd or [])
    container.argv = entrypoint + command
    if not container.argv:
        raise errors.InvalidArgument(
            f"container {spec.name}: no command given and image {spec.image} has none"
        )
    env = list(config.env or [])
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, DEFAULT_PATH)
    container.env = _merge_env(env, spec.env)
    container.workdir = spec.workdir or config.working_dir or "/"
    container.user = spec.user or config.user or ""
