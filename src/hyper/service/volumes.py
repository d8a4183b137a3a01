"""Volumes and snapshots, as every front end manages them; and what a pod's start needs of them.

Every call takes the :class:`Caller`: lookups and listings are in :meth:`Caller.reads` (any
role of the tenant; an operator's ``--tenant '*'`` lists every tenant's), changes in
:meth:`Caller.writes` (an admin's or the operator's, in one tenant). A tenant sees only its own
volumes and snapshots; another tenant's is "not found", with the very message of a missing one.
Names are unique per tenant.

What a tenant holds is charged to its quota (:mod:`hyper.tenancy.quotas`) before it exists and
given back when it goes, each charge owned by its object: ``volume_bytes`` (the volume's size,
anonymous volumes included) and ``snapshots``. A volume is metered from its creation to its
removal (:mod:`hyper.tenancy.ledger`, ``Kind.VOLUME``); :meth:`VolumeService.recover` repairs
the ledger after a crash between a change and its event.

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
is the one place that decides (:attr:`Caller.is_operator`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Protocol, TypeVar

from hyper import errors
from hyper.config import Settings
from hyper.model.mount import Mount, MountKind
from hyper.model.pod import PodSpec, check_name, pod_from_dict
from hyper.service import names
from hyper.service.caller import Caller
from hyper.service.events import Event, EventBus
from hyper.service.tenancy import Accounts, TenancyService
from hyper.shim.client import ShimClient
from hyper.state.db import ACTIVE, Database
from hyper.state.volumes import PodVolumeRecord, SnapshotRecord, VolumeRecord, VolumeTables
from hyper.tenancy.metering import Kind
from hyper.tenancy.principal import Scope
from hyper.volumes import Attachment, Consistency, LocalDriver, VolumeDriver, disk_id, parse_size
from hyper.volumes.driver import DEFAULT_SIZE

_log = logging.getLogger(__name__)


class _Named(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def tenant(self) -> str: ...


N = TypeVar("N", bound=_Named)


def check_host_bind(caller: Caller, mount: Mount) -> None:
    """The one place that decides whether a caller may mount a host directory."""
    if not caller.is_operator:
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
        *,
        tenancy: TenancyService | None = None,
    ) -> None:
        self.settings = settings
        self.tables = VolumeTables(db)
        self.accounts = Accounts(tenancy)
        self.events = events
        self.driver: VolumeDriver = driver or LocalDriver(settings.paths.state_dir / "volumes")
        self._lock = asyncio.Lock()  # one change of volumes or snapshots at a time
        self.wait_ending: Callable[[Sequence[str]], Awaitable[None]] = _no_wait
        """Set by the pod service: waits for those of the pods that are powering off."""

    async def recover(self) -> None:
        """Remove anonymous volumes whose pod is gone, and files without a record; then make
        the ledger agree with the volumes that exist."""
        for volume in self.tables.orphans():
            _log.info("removing anonymous volume %s of a removed pod", volume.name)
            await self._destroy(volume)
        known = {v.id for v in self.tables.volumes(None)}
        for volume_id in self.driver.volume_ids():
            if volume_id not in known:
                _log.warning("removing volume %s, which has no record", volume_id[:12])
                await self.driver.remove(volume_id)
        self._reconcile_usage()

    def _reconcile_usage(self) -> None:
        """After a crash between a change and its ledger event: a volume that exists is billed
        from its creation (a no-op when its interval is open), and an interval still open for
        a volume that is gone is closed now (the last time known)."""
        volumes = {(v.tenant, v.id): v for v in self.tables.volumes(None)}
        self.accounts.close_gone(Kind.VOLUME, lambda tenant, id_: (tenant, id_) in volumes)
        for volume in volumes.values():
            self._meter(volume)

    # ------------------------------------------------------------ volumes

    def volumes(self, caller: Caller) -> list[VolumeRecord]:
        return self.tables.volumes(caller.reads().tenant)

    def volume(self, caller: Caller, ref: str) -> VolumeRecord:
        return self._volume(caller.reads(), ref)

    def _volume(self, scope: Scope, ref: str) -> VolumeRecord:
        return _find(self.tables.volumes(scope.tenant), ref, "volume")

    def snapshots_of(self, volume: VolumeRecord) -> list[SnapshotRecord]:
        return self.tables.snapshots(volume.tenant, volume.id)

    def volume_of(self, snapshot: SnapshotRecord) -> VolumeRecord | None:
        volumes = self.tables.volumes(snapshot.tenant)
        return next((v for v in volumes if v.id == snapshot.volume_id), None)

    async def create(
        self,
        caller: Caller,
        *,
        name: str | None = None,
        size: str | int | None = None,
        from_snapshot: str | None = None,
        owner_pod: str = "",
    ) -> VolumeRecord:
        """A new volume: empty and formatted (ext4), or a copy of a snapshot (its size), in
        the caller's tenant, whose quota pays for its size before it is made."""
        scope = caller.writes()
        tenant = scope.single()
        volume_id = secrets.token_hex(32)
        async with self._lock:
            taken = {v.name for v in self.tables.volumes(tenant)}
            if name is None:
                name = f"anon-{volume_id[:16]}" if owner_pod else names.generate(taken.__contains__)
            check_name(name, "volume name")
            if name in taken:
                raise errors.AlreadyExists(f"a volume named {name} exists already")
            snapshot = None
            if from_snapshot is not None:
                snapshot = self._snapshot(scope, from_snapshot)
                if size is not None:
                    raise errors.InvalidArgument("a volume from a snapshot has the snapshot's size")
                wanted = snapshot.size
            else:
                wanted = parse_size(DEFAULT_SIZE if size is None else size)
            record = VolumeRecord(
                id=volume_id,
                tenant=tenant,
                name=name,
                driver=self.driver.name,
                size=wanted,
                owner_pod=owner_pod,
                source_snapshot=snapshot.id if snapshot else "",
                created_at=time.time(),
            )
            reservation = self.accounts.reserve(
                tenant, {"volume_bytes": record.size}, owner=volume_id
            )
            try:
                if snapshot is not None:
                    record.size = await self.driver.create_from_snapshot(
                        volume_id, snapshot.volume_id, snapshot.id
                    )
                else:
                    await self.driver.create(volume_id, record.size)
                try:
                    if record.size != wanted:  # the copy's real size: charge all of it
                        self.accounts.release(reservation)
                        reservation = self.accounts.reserve(
                            tenant, {"volume_bytes": record.size}, owner=volume_id
                        )
                    self.tables.insert_volume(record)
                except BaseException:
                    await self.driver.remove(volume_id)
                    raise
            except BaseException:
                self.accounts.release(reservation)
                raise
            self._meter(record)
        self._publish("volume", "create", record, record.name)
        return record

    async def remove(self, caller: Caller, ref: str) -> None:
        scope = caller.writes()
        async with self._lock:
            volume = self._volume(scope, ref)
            users = self.tables.users(volume.id)
            if users:
                pods = ", ".join(sorted({pod for _, pod, _ in users}))
                raise errors.FailedPrecondition(f"volume {volume.name} is in use by pod {pods}")
            snapshots = self.tables.snapshots(volume.tenant, volume.id)
            if snapshots:
                raise errors.FailedPrecondition(
                    f"volume {volume.name} has {len(snapshots)} snapshot(s): remove them first"
                )
            await self._destroy(volume)

    async def _destroy(self, volume: VolumeRecord) -> None:
        """Remove a volume (and the records of its snapshots, which its file holds): its
        usage stops and its quota is free once the record is gone."""
        for snapshot in self.tables.snapshots(volume.tenant, volume.id):
            self.tables.delete_snapshot(volume.tenant, snapshot.id)
            self.accounts.release_owner(volume.tenant, snapshot.id)
        self.tables.delete_volume(volume.tenant, volume.id)
        self.accounts.stop(volume.tenant, volume.id, at=time.time())
        self.accounts.release_owner(volume.tenant, volume.id)
        await self.driver.remove(volume.id)
        self._publish("volume", "destroy", volume, volume.name)

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
        scope = caller.reads()
        if volume_ref:
            return self.snapshots_of(self._volume(scope, volume_ref))
        return self.tables.snapshots(scope.tenant)

    def snapshot(self, caller: Caller, ref: str) -> SnapshotRecord:
        return self._snapshot(caller.reads(), ref)

    def _snapshot(self, scope: Scope, ref: str) -> SnapshotRecord:
        return _find(self.tables.snapshots(scope.tenant), ref, "snapshot")

    async def create_snapshot(
        self, caller: Caller, volume_ref: str, *, name: str | None = None
    ) -> SnapshotRecord:
        """Snapshot a volume: live if a running pod has it attached read-write (application-
        or crash-consistent, as the record says), else offline (``clean``). One of the
        tenant's ``snapshots`` quota until it is removed."""
        scope = caller.writes()
        tenant = scope.single()
        async with self._lock:
            volume = self._volume(scope, volume_ref)
            taken = {s.name for s in self.tables.snapshots(tenant)}
            name = name or names.generate(taken.__contains__)
            check_name(name, "snapshot name")
            if name in taken:
                raise errors.AlreadyExists(f"a snapshot named {name} exists already")
            snapshot_id = secrets.token_hex(32)
            reservation = self.accounts.reserve(tenant, {"snapshots": 1}, owner=snapshot_id)
            try:
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
                    tenant=tenant,
                    name=name,
                    volume_id=volume.id,
                    size=volume.size,
                    consistency=consistency,
                    created_at=time.time(),
                )
                self.tables.insert_snapshot(record)
            except BaseException:
                self.accounts.release(reservation)
                raise
        self._publish("snapshot", "create", record, record.name, volume=volume.name)
        return record

    async def remove_snapshot(self, caller: Caller, ref: str) -> None:
        scope = caller.writes()
        async with self._lock:
            snapshot = self._snapshot(scope, ref)
            volume = self._volume(scope, snapshot.volume_id)
            live = await self._settled_user(volume)
            if live is None:
                await self.driver.remove_snapshot(volume.id, snapshot.id)
            else:
                client = await self._connect(live)
                try:
                    await client.volume_snapshot(disk_id(volume.id), snapshot.id, delete=True)
                finally:
                    await client.close()
            self.tables.delete_snapshot(snapshot.tenant, snapshot.id)
            self.accounts.release_owner(snapshot.tenant, snapshot.id)
        self._publish("snapshot", "destroy", snapshot, snapshot.name)

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
        """The caller's volume ``name``, made if it has none (another tenant's is not seen)."""
        with contextlib.suppress(errors.NotFound):
            found = self._volume(Scope(caller.writes().single()), name)
            if found.name == name:
                return found
        return await self.create(caller, name=name)

    def bind(self, refs: list[PodVolumeRecord]) -> None:
        self.tables.insert_pod_volumes(refs)

    def conflicts(self, pod_id: str) -> list[str]:
        """The active pods whose use of this pod's volumes conflicts with its own."""
        refs = self.tables.pod_volumes(pod_id)
        return sorted({other.pod_id for _, other, _ in self._conflicts(refs)})

    def _conflicts(
        self, refs: list[PodVolumeRecord]
    ) -> Iterator[tuple[PodVolumeRecord, PodVolumeRecord, str]]:
        """(a pod's reference, another active pod's conflicting one, that pod's name), in the
        order of ``refs``: read-write use is exclusive, read-only is shared."""
        for ref in refs:
            for other, other_name, state in self.tables.users(ref.volume_id):
                if other.pod_id == ref.pod_id or state not in ACTIVE:
                    continue
                if not (ref.readonly and other.readonly):
                    yield ref, other, other_name

    def attachments(
        self, pod_id: str, pod_name: str, spec: dict[str, Any] | None = None
    ) -> list[Attachment]:
        """What a starting pod attaches and mounts; refused if another active pod's use
        conflicts (read-write is exclusive). Synchronous on purpose: the caller marks the pod
        active in the same turn of the event loop, so two starts cannot both pass."""
        refs = self.tables.pod_volumes(pod_id)
        conflict = next(self._conflicts(refs), None)
        if conflict is not None:
            ref, other, other_name = conflict
            mode = "read-only" if other.readonly else "read-write"
            raise errors.FailedPrecondition(
                f"pod {pod_name} cannot mount its volume at {ref.target}: pod"
                f" {other_name} uses it {mode}, and read-write use is exclusive"
            )
        found = []
        for ref in refs:
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

    # ------------------------------------------------------------ quota and metering

    def _meter(self, volume: VolumeRecord) -> None:
        """The volume is billed from its creation, for its size (idempotent)."""
        self.accounts.start(
            volume.tenant,
            volume.id,
            Kind.VOLUME,
            volume.created_at,
            size=volume.size,
            name=volume.name,
        )

    def _publish(self, kind: str, action: str, record: _Named, name: str, **attrs: str) -> None:
        self.events.publish(Event(kind, action, record.id, name, dict(attrs), tenant=record.tenant))


def _find(records: Sequence[N], ref: str, what: str) -> N:
    """The record named ``ref`` or whose id is (or starts with) ``ref``. In an operator's
    every-tenant scope one name may be several tenants': ambiguous rather than a guess."""
    if len({r.tenant for r in records if r.name == ref}) > 1:
        raise errors.InvalidArgument(
            f"{what}s of several tenants are named {ref}: give the id, or one tenant"
        )
    return names.find(records, ref, id_of=lambda r: r.id, name_of=lambda r: r.name, what=what)


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
