"""Volumes and snapshots, as every front end manages them; and what a pod's start needs of them.

Every call takes the caller's tenant (:class:`Caller`): a tenant sees only its own volumes and
snapshots, and another tenant's is simply "not found". Until tenancy exists (issue 8) every
caller is the default tenant and the host's operator.

Who uses a volume is not a counter kept here but a fact in the database: a pod that mounts a
volume references it (``pod_volumes``, written with the pod, gone with it), and a pod holds its
volumes while it is active (starting, running, stopping). So:

- a volume referenced by any pod cannot be removed (as docker: a stopped pod would not start);
- at a pod's start (:meth:`VolumeService.attachments`) a volume in read-write use by another
  active pod, or in use at all when this pod wants it read-write, refuses the start: read-write
  is exclusive, read-only is shared;
- a snapshot of a volume that an active pod has attached read-write is taken live by that pod's
  supervisor (QEMU plus a freeze by the agent); a detached volume's, offline by the driver.

Anonymous volumes (``-v /data``) belong to their pod and go with it (docker's ``rm -v``, made
the only behaviour so that nothing leaks); at start-up, :meth:`VolumeService.recover` removes
those whose pod is gone and volume files that have no record (a crash between the two).

Host directories (``-v /host:/data``) are for the host's operator only: :func:`check_host_bind`
is the one place that decides, for the tenancy work to tighten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from hyper import errors
from hyper.config import Settings
from hyper.model.mount import Mount, MountKind
from hyper.model.pod import PodSpec, check_name, pod_from_dict
from hyper.service import names
from hyper.service.caller import Caller
from hyper.service.events import Event, EventBus
from hyper.shim.client import ShimClient
from hyper.state.db import Database
from hyper.state.volumes import PodVolumeRecord, SnapshotRecord, VolumeRecord, VolumeTables
from hyper.volumes import Attachment, Consistency, LocalDriver, VolumeDriver, disk_id, parse_size
from hyper.volumes.driver import DEFAULT_SIZE

_log = logging.getLogger(__name__)
ACTIVE = ("starting", "running", "stopping")


def check_host_bind(caller: Caller, mount: Mount) -> None:
    """The one place that decides whether a caller may mount a host directory."""
    if not caller.operator:
        raise errors.PermissionDenied(
            f"only the host's operator may mount a host directory ({mount.source})"
        )


class VolumeService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        events: EventBus,
        driver: VolumeDriver | None = None,
    ) -> None:
        self.settings = settings
        self.tables = VolumeTables(db)
        self.events = events
        self.driver: VolumeDriver = driver or LocalDriver(settings.paths.state_dir / "volumes")
        self._lock = asyncio.Lock()  # one change of volumes or snapshots at a time
        self.wait_ending: Callable[[Sequence[str]], Awaitable[None]] = _no_wait
        """Set by the pod service: waits for those of the pods that are powering off."""

    async def recover(self) -> None:
        """Remove anonymous volumes whose pod is gone, and files without a record."""
        for volume in self.tables.orphans():
            _log.info("removing anonymous volume %s of a removed pod", volume.name)
            await self._destroy(volume)
        known = {v.id for v in self.tables.all_volumes()}
        for volume_id in self.driver.volume_ids():
            if volume_id not in known:
                _log.warning("removing volume %s, which has no record", volume_id[:12])
                await self.driver.remove(volume_id)

    # ------------------------------------------------------------ volumes

    def volumes(self, caller: Caller) -> list[VolumeRecord]:
        return self.tables.volumes(caller.tenant)

    def volume(self, caller: Caller, ref: str) -> VolumeRecord:
        return names.find(
            self.tables.volumes(caller.tenant),
            ref,
            id_of=lambda v: v.id,
            name_of=lambda v: v.name,
            what="volume",
        )

    async def create(
        self,
        caller: Caller,
        *,
        name: str | None = None,
        size: str | int | None = None,
        from_snapshot: str | None = None,
        owner_pod: str = "",
    ) -> VolumeRecord:
        """A new volume: empty and formatted (ext4), or a copy of a snapshot (its size)."""
        volume_id = secrets.token_hex(32)
        if name is None:
            taken = {v.name for v in self.tables.volumes(caller.tenant)}
            name = f"anon-{volume_id[:16]}" if owner_pod else names.generate(taken.__contains__)
        check_name(name, "volume name")
        record = VolumeRecord(
            id=volume_id,
            tenant=caller.tenant,
            name=name,
            driver=self.driver.name,
            size=parse_size(size if size is not None else DEFAULT_SIZE),
            owner_pod=owner_pod,
            created_at=time.time(),
        )
        async with self._lock:
            if any(v.name == name for v in self.tables.volumes(caller.tenant)):
                raise errors.AlreadyExists(f"a volume named {name} exists already")
            if from_snapshot is not None:
                snapshot = self.snapshot(caller, from_snapshot)
                if size is not None:
                    raise errors.InvalidArgument("a volume from a snapshot has the snapshot's size")
                record.source_snapshot = snapshot.id
                record.size = await self.driver.create_from_snapshot(
                    volume_id, snapshot.volume_id, snapshot.id
                )
            else:
                await self.driver.create(volume_id, record.size)
            try:
                self.tables.insert_volume(record)
            except BaseException:
                await self.driver.remove(volume_id)
                raise
        self._publish("volume", "create", record.id, record.name)
        return record

    async def remove(self, caller: Caller, ref: str) -> None:
        async with self._lock:
            volume = self.volume(caller, ref)
            users = self.tables.users(volume.id)
            if users:
                pods = ", ".join(sorted({pod for _, pod, _ in users}))
                raise errors.FailedPrecondition(f"volume {volume.name} is in use by pod {pods}")
            snapshots = self.tables.snapshots(caller.tenant, volume.id)
            if snapshots:
                raise errors.FailedPrecondition(
                    f"volume {volume.name} has {len(snapshots)} snapshot(s): remove them first"
                )
            await self._destroy(volume)

    async def _destroy(self, volume: VolumeRecord) -> None:
        for snapshot in self.tables.snapshots(volume.tenant, volume.id):
            self.tables.delete_snapshot(volume.tenant, snapshot.id)
        self.tables.delete_volume(volume.tenant, volume.id)
        await self.driver.remove(volume.id)
        self._publish("volume", "destroy", volume.id, volume.name)

    def users(self, volume: VolumeRecord) -> list[dict[str, Any]]:
        return [
            {
                "pod": pod,
                "state": state,
                "container": ref.container,
                "target": ref.target,
                "readonly": ref.readonly,
            }
            for ref, pod, state in self.tables.users(volume.id)
        ]

    async def allocated(self, volume: VolumeRecord) -> int:
        return await self.driver.allocated(volume.id)

    # ------------------------------------------------------------ snapshots

    def snapshots(self, caller: Caller, volume_ref: str | None = None) -> list[SnapshotRecord]:
        volume_id = self.volume(caller, volume_ref).id if volume_ref else None
        return self.tables.snapshots(caller.tenant, volume_id)

    def snapshot(self, caller: Caller, ref: str) -> SnapshotRecord:
        return names.find(
            self.tables.snapshots(caller.tenant),
            ref,
            id_of=lambda s: s.id,
            name_of=lambda s: s.name,
            what="snapshot",
        )

    async def create_snapshot(
        self, caller: Caller, volume_ref: str, *, name: str | None = None
    ) -> SnapshotRecord:
        """Snapshot a volume: live if a running pod has it attached read-write (application-
        or crash-consistent, as the record says), else offline (``clean``)."""
        async with self._lock:
            volume = self.volume(caller, volume_ref)
            taken = {s.name for s in self.tables.snapshots(caller.tenant)}
            name = name or names.generate(taken.__contains__)
            check_name(name, "snapshot name")
            if name in taken:
                raise errors.AlreadyExists(f"a snapshot named {name} exists already")
            snapshot_id = secrets.token_hex(32)
            live = await self._settled_user(volume)
            if live is None:
                await self.driver.snapshot(volume.id, snapshot_id)
                consistency = Consistency.CLEAN.value
            else:
                client = await self._connect(live)
                try:
                    consistency = await client.volume_snapshot(disk_id(volume.id), snapshot_id)
                finally:
                    await client.close()
            record = SnapshotRecord(
                id=snapshot_id,
                tenant=caller.tenant,
                name=name,
                volume_id=volume.id,
                size=volume.size,
                consistency=consistency,
                created_at=time.time(),
            )
            self.tables.insert_snapshot(record)
        self._publish("snapshot", "create", record.id, record.name, volume=volume.name)
        return record

    async def remove_snapshot(self, caller: Caller, ref: str) -> None:
        async with self._lock:
            snapshot = self.snapshot(caller, ref)
            volume = self.volume(caller, snapshot.volume_id)
            live = await self._settled_user(volume)
            if live is None:
                await self.driver.remove_snapshot(volume.id, snapshot.id)
            else:
                client = await self._connect(live)
                try:
                    await client.volume_snapshot(disk_id(volume.id), snapshot.id, delete=True)
                finally:
                    await client.close()
            self.tables.delete_snapshot(caller.tenant, snapshot.id)
        self._publish("snapshot", "destroy", snapshot.id, snapshot.name)

    async def _settled_user(self, volume: VolumeRecord) -> str | None:
        """The live user once the pods that are powering off are gone (a live snapshot
        needs a pod that stays)."""
        await self.wait_ending([ref.pod_id for ref, _, _ in self.tables.users(volume.id)])
        return self._live_user(volume)

    def _live_user(self, volume: VolumeRecord) -> str | None:
        """The active pod that has the volume attached read-write, if any."""
        active = [(ref, pod) for ref, pod, state in self.tables.users(volume.id) if state in ACTIVE]
        writers = [ref.pod_id for ref, _ in active if not ref.readonly]
        if writers:
            return writers[0]  # read-write use is exclusive: the only one
        if active:
            raise errors.FailedPrecondition(
                f"volume {volume.name} is attached read-only to pod {active[0][1]}, which QEMU"
                " cannot snapshot: stop the pod first"
            )
        return None

    async def _connect(self, pod_id: str) -> ShimClient:
        socket = self.settings.paths.pods / pod_id[:16] / "control.sock"
        return await ShimClient.connect(socket, timeout=10.0)

    # ------------------------------------------------------------ pods

    async def prepare(self, caller: Caller, pod_id: str, spec: PodSpec) -> list[PodVolumeRecord]:
        """The volumes a new pod mounts: named ones found (or created, as docker does),
        anonymous ones created for it. Record them with :meth:`bind` once the pod exists;
        :meth:`release` undoes this if the pod is not recorded after all."""
        refs: list[PodVolumeRecord] = []
        try:
            for container in spec.containers:
                for mount in container.volumes:
                    if mount.kind is MountKind.BIND:
                        check_host_bind(caller, mount)
                        if not mount.readonly:
                            raise errors.InvalidArgument(
                                f"host directory {mount.source} reaches the guest as a read-only"
                                " copy taken at start (docs/volumes.md): add :ro"
                            )
                        continue  # in the pod's spec; packed by the sandbox at each start
                    if mount.kind is MountKind.ANONYMOUS:
                        volume = await self.create(caller, owner_pod=pod_id)
                    else:
                        volume = await self._named(caller, mount.source)
                    refs.append(
                        PodVolumeRecord(
                            pod_id, volume.id, container.name, mount.target, mount.readonly
                        )
                    )
        except BaseException:
            await self.release(pod_id)
            raise
        return refs

    async def _named(self, caller: Caller, name: str) -> VolumeRecord:
        with contextlib.suppress(errors.NotFound):
            found = self.volume(caller, name)
            if found.name == name:
                return found
        return await self.create(caller, name=name)

    def bind(self, refs: list[PodVolumeRecord]) -> None:
        self.tables.insert_pod_volumes(refs)

    def conflicts(self, pod_id: str) -> list[str]:
        """The active pods whose use of this pod's volumes conflicts with its own."""
        found = []
        for ref in self.tables.pod_volumes(pod_id):
            for other, _, state in self.tables.users(ref.volume_id):
                conflict = not (ref.readonly and other.readonly)
                if other.pod_id != pod_id and state in ACTIVE and conflict:
                    found.append(other.pod_id)
        return sorted(set(found))

    def attachments(
        self, pod_id: str, pod_name: str, spec: dict[str, Any] | None = None
    ) -> list[Attachment]:
        """What a starting pod attaches and mounts; refused if another active pod's use
        conflicts (read-write is exclusive). Synchronous on purpose: the caller marks the pod
        active in the same turn of the event loop, so two starts cannot both pass."""
        found = []
        for ref in self.tables.pod_volumes(pod_id):
            for other, other_name, state in self.tables.users(ref.volume_id):
                if other.pod_id == pod_id or state not in ACTIVE:
                    continue
                if not (ref.readonly and other.readonly):
                    mode = "read-only" if other.readonly else "read-write"
                    raise errors.FailedPrecondition(
                        f"pod {pod_name} cannot mount its volume at {ref.target}: pod"
                        f" {other_name} uses it {mode}, and read-write use is exclusive"
                    )
            device = self.driver.device(ref.volume_id)
            found.append(
                Attachment(
                    container=ref.container,
                    target=ref.target,
                    disk=disk_id(ref.volume_id),
                    path=device.path,
                    format=device.format,
                    readonly=ref.readonly,
                )
            )
        return found + _host_dirs(pod_from_dict(spec, pod_name) if spec else None)

    async def release(self, pod_id: str) -> None:
        """A pod is gone: remove its anonymous volumes (and their snapshots)."""
        async with self._lock:
            for volume in self.tables.owned_by(pod_id):
                await self._destroy(volume)

    def _publish(self, kind: str, action: str, object_id: str, name: str, **attrs: str) -> None:
        self.events.publish(Event(kind, action, object_id, name, dict(attrs)))


def _host_dirs(spec: PodSpec | None) -> list[Attachment]:
    """The operator's host directories (checked when the pod was created)."""
    binds = [
        (container.name, mount)
        for container in (spec.containers if spec else ())
        for mount in container.volumes
        if mount.kind is MountKind.BIND
    ]
    return [
        Attachment(name, mount.target, f"dir-{index}", mount.source, "dir", True, "erofs")
        for index, (name, mount) in enumerate(binds)
    ]


async def _no_wait(pod_ids: Sequence[str]) -> None:
    """Without a pod service (tests): no pod is ever powering off."""
