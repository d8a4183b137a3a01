"""Tenant networks, pod endpoints and floating IPs: the use cases behind ``hyper network`` and
``hyper fip``, and the network side of a pod's life.

Records live in SQLite (:mod:`hyper.state.networks`); the host is made to match them by one
declarative step, :meth:`NetworkService.converge`: the topology of every *running* pod's
endpoint is computed from the records and :class:`~hyper.network.host.HostNetwork` makes the
kernel match it (bridges, taps, nftables, dnsmasq, floating IPs on the uplink). It runs when a
pod starts (before its supervisor opens the tap), when one ends or is removed, when a floating
IP moves, and at hyperd's start (what a crash left behind is repaired or removed). With no
running pod nothing of ours remains on the host.

Every call of a front end takes the :class:`~hyper.service.caller.Caller`: lookups and listings
are in its :meth:`~hyper.service.caller.Caller.reads` scope (an operator's ``--tenant '*'``
lists every tenant's), changes in its :meth:`~hyper.service.caller.Caller.writes` scope (one
tenant). Another tenant's network or floating IP is "not found", with the very message of a
missing one. Subnets, addresses and host ports are shared by every tenant (one routing table, one
uplink): a clash with another tenant's says "not available" and names nothing of theirs.

Quotas (:mod:`hyper.tenancy.quotas`): a network is one of the tenant's ``networks`` (owner: its
id), except the ``default`` network that a tenant's first pod makes implicitly; a floating IP is
one of its ``fips`` (owner: the address). Charged before the object exists, given back when it
goes. A floating IP is metered while allocated (``Kind.FIP``); :meth:`NetworkService.recover`
repairs the ledger after a crash between a change and its event.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import defaultdict
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from hyper import errors
from hyper.config import Settings
from hyper.config.settings import network_settings
from hyper.model.pod import check_name
from hyper.model.ports import PortMap
from hyper.network import ipam, names
from hyper.network.host import HostNetwork
from hyper.network.topology import Endpoint, Network, Topology
from hyper.service.caller import Caller
from hyper.service.tenancy import Accounts, TenancyService
from hyper.state.db import ACTIVE, Database, PodRecord
from hyper.state.networks import EndpointRecord, FipRecord, NetworkRecord, NetworkStore
from hyper.tenancy.metering import Kind
from hyper.tenancy.principal import Scope

_log = logging.getLogger(__name__)

DEFAULT_NETWORK = "default"
NO_NETWORK = "none"


class NetworkService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        host: HostNetwork | None = None,
        *,
        tenancy: TenancyService | None = None,
    ) -> None:
        self.settings = network_settings(settings)
        self.db = db
        self.store = NetworkStore(db)
        self.host = host or HostNetwork(self.settings)
        self.accounts = Accounts(tenancy)
        self._lock = asyncio.Lock()  # one convergence at a time; records change under it too

    # ------------------------------------------------------------ networks

    async def create(
        self, caller: Caller, name: str, *, subnet: str = "", nat: bool = True
    ) -> NetworkRecord:
        """A network of the caller's tenant, one of its ``networks`` quota until removed."""
        tenant = caller.writes().single()
        check_name(name, "network name")
        if name == NO_NETWORK:
            raise errors.InvalidArgument(f"{NO_NETWORK!r} means no network; pick another name")
        async with self._lock:
            return await self._create(tenant, name, subnet, nat, charged=True)

    async def _create(
        self, tenant: str, name: str, subnet: str, nat: bool, *, charged: bool
    ) -> NetworkRecord:
        if self.store.network(tenant, name) is not None:
            raise errors.AlreadyExists(f"a network named {name} exists already")
        every = self.store.networks(None)
        taken = [IPv4Network(n.subnet) for n in every]
        if subnet:
            wanted = ipam.parse_subnet(subnet)
            clash = next((n for n in every if IPv4Network(n.subnet).overlaps(wanted)), None)
            if clash is not None and clash.tenant == tenant:
                raise errors.AlreadyExists(
                    f"subnet {wanted} overlaps network {clash.name} ({clash.subnet})"
                )
            if clash is not None:  # another tenant's: the routing table is shared, not known
                raise errors.AlreadyExists(f"subnet {wanted} is not available")
        else:
            routed = await asyncio.to_thread(self.host.routed)
            wanted = ipam.allocate_subnet(
                IPv4Network(self.settings.subnet_pool), self.settings.subnet_prefix, taken + routed
            )
        record = NetworkRecord(secrets.token_hex(32), tenant, name, str(wanted), nat, time.time())
        reservation = self.accounts.reserve(tenant, {"networks": 1}, record.id) if charged else None
        try:
            self.store.insert_network(record)
        except BaseException:
            self.accounts.release(reservation)
            raise
        _log.info("network %s of %s: %s", name, tenant, wanted)
        return record

    def networks(self, caller: Caller) -> list[dict[str, Any]]:
        counts: dict[str, int] = defaultdict(int)
        for ep in self.store.endpoints():
            counts[ep.network_id] += 1
        scope = caller.reads()
        return [self._view(net, counts[net.id]) for net in self.store.networks(scope.tenant)]

    def network(self, caller: Caller, ref: str) -> NetworkRecord:
        return self._network(caller.reads(), ref)

    def _network(self, scope: Scope, ref: str) -> NetworkRecord:
        found = self.store.network(scope.tenant, ref)
        if found is None:
            raise errors.NotFound(f"no such network: {ref}")
        return found

    def inspect(self, caller: Caller, ref: str) -> dict[str, Any]:
        net = self.network(caller, ref)
        return self._inspect(net)

    def _inspect(self, net: NetworkRecord) -> dict[str, Any]:
        pods = {p.id: p for p in self.db.pods(net.tenant)}
        endpoints = []
        for ep in self.store.endpoints(net.id):
            pod = pods.get(ep.pod_id)
            endpoints.append(
                {
                    "pod": pod.name if pod else ep.pod_id,
                    "address": ep.address,
                    "mac": ipam.mac_for(IPv4Address(ep.address)),
                    "running": bool(pod and pod.state in ACTIVE),
                }
            )
        return {**self._view(net, len(endpoints)), "endpoints": endpoints}

    async def remove(self, caller: Caller, ref: str) -> None:
        scope = caller.writes()
        async with self._lock:
            net = self._network(scope, ref)
            if self.store.endpoints(net.id):
                raise errors.FailedPrecondition(f"network {net.name} has pods: remove them first")
            self.store.delete_network(net.tenant, net.id)
            self.accounts.release_owner(
                net.tenant, net.id
            )  # nothing for an implicit default network

    def _view(self, net: NetworkRecord, endpoints: int) -> dict[str, Any]:
        subnet = IPv4Network(net.subnet)
        return {
            "id": net.id,
            "name": net.name,
            "tenant": net.tenant,
            "subnet": net.subnet,
            "gateway": str(ipam.gateway(subnet)),
            "nat": net.nat,
            "bridge": names.bridge(self.settings.prefix, net.id),
            "endpoints": endpoints,
            "created": net.created_at,
        }

    # ------------------------------------------------------------ a pod's endpoint

    async def attach(self, pod: PodRecord, tenant: str) -> EndpointRecord | None:
        """Give a new (recorded) pod of ``tenant`` (the pod service's write scope) its address
        on the tenant's network its spec names; None: no NIC. The tenant's ``default`` network
        is made by its first pod, and not charged to its quota.

        Links must name containers on the same network (of the same tenant)."""
        wanted = str(pod.spec.get("network") or "")
        if wanted == NO_NETWORK or (not wanted and not self.settings.enabled):
            return None
        async with self._lock:
            if not wanted:
                net = self.store.network(tenant, DEFAULT_NETWORK) or await self._create(
                    tenant, DEFAULT_NETWORK, "", True, charged=False
                )
            else:
                net = self._network(Scope(tenant), wanted)
            for link in pod.spec.get("links", []):
                self._link_target(net, str(link).partition(":")[0])
            subnet = IPv4Network(net.subnet)
            taken = [IPv4Address(ep.address) for ep in self.store.endpoints(net.id)]
            address = ipam.allocate_address(subnet, taken)
            record = EndpointRecord(pod.id, net.id, str(address), [], [])
            self.store.insert_endpoint(record)
            return record

    def _link_target(self, net: NetworkRecord, container: str) -> EndpointRecord:
        pods = self.db.pods(net.tenant)
        for pod in pods:
            if container in (pod.name, *(c.name for c in pod.containers)):
                ep = self.store.endpoint(pod.id)
                if ep is not None and ep.network_id == net.id:
                    return ep
        raise errors.NotFound(f"no container {container} on network {net.name} to link to")

    async def prepare(self, pod: PodRecord) -> dict[str, Any] | None:
        """Before a pod's supervisor starts: its tap exists on its bridge, its rules and names
        are in place; returns what ``spec.json`` carries for the guest (None: no NIC)."""
        ep = self.store.endpoint(pod.id)
        if ep is None:
            return None
        async with self._lock:
            self._check_ports(pod)
            await self._converge(also={pod.id})
            net = self.store.network_by_id(ep.network_id)
            if net is None:
                raise errors.Internal(f"the network of pod {pod.name} is gone")
            subnet = IPv4Network(net.subnet)
            hosts = []
            for link in pod.spec.get("links", []):
                target, _, alias = str(link).partition(":")
                with_ep = self._link_target(net, target)
                hosts.append([with_ep.address, alias or target])
            gateway = str(ipam.gateway(subnet))
            return {
                "tap": names.tap(self.settings.prefix, pod.id),
                "mac": ipam.mac_for(IPv4Address(ep.address)),
                "address": f"{ep.address}/{subnet.prefixlen}",
                "gateway": gateway,
                "nameservers": [gateway] if self.settings.dns else [],
                "hosts": hosts,
            }

    def _check_ports(self, pod: PodRecord) -> None:
        """A host port is published by one running pod at a time (an unbound host IP clashes
        with every address), of any tenant: another tenant's pod is not named."""
        mine = [PortMap.parse(p) for p in pod.spec.get("ports", [])]
        for other in self.db.pods(None):
            if other.id == pod.id or other.state not in ACTIVE:
                continue
            for theirs in (PortMap.parse(p) for p in other.spec.get("ports", [])):
                for port in mine:
                    if (port.host_port, port.protocol) != (theirs.host_port, theirs.protocol):
                        continue
                    if None in (port.host_ip, theirs.host_ip) or port.host_ip == theirs.host_ip:
                        if other.tenant != pod.tenant:
                            raise errors.AlreadyExists(f"host port {port} is not available")
                        raise errors.AlreadyExists(
                            f"host port {port} is published by {other.name} already"
                        )

    def address_of(self, pod_id: str) -> str:
        ep = self.store.endpoint(pod_id)
        return ep.address if ep else ""

    # ------------------------------------------------------------ floating IPs

    async def fip_allocate(self, caller: Caller) -> FipRecord:
        """The next free address of the pool, for the caller's tenant: one of its ``fips``
        quota, and billed, until it is released."""
        tenant = caller.writes().single()
        async with self._lock:
            taken = [IPv4Address(f.address) for f in self.store.fips(None)]
            address = ipam.allocate_fip(self.settings.fip_pool, taken)
            record = FipRecord(str(address), tenant, None, time.time())
            reservation = self.accounts.reserve(tenant, {"fips": 1}, record.address)
            try:
                self.store.insert_fip(record)
            except BaseException:
                self.accounts.release(reservation)
                raise
            self._meter(record)
            return record

    async def fip_associate(self, caller: Caller, address: str, pod: PodRecord) -> FipRecord:
        """Point the caller's floating IP at ``pod`` (found in the caller's write scope): a
        pod of the floating IP's tenant, on one of its networks."""
        scope = caller.writes()
        async with self._lock:
            fip = self._fip(scope.tenant, address)
            tenant = fip.tenant
            ep = self.store.endpoint(pod.id)
            net = self.network_of(pod.id)
            if pod.tenant != tenant or ep is None or net is None or net.tenant != tenant:
                raise errors.FailedPrecondition(f"{pod.name} has no network of this tenant")
            if fip.pod_id not in (None, pod.id):
                raise errors.FailedPrecondition(f"{address} is associated already: disassociate")
            if any(f.pod_id == pod.id and f.address != address for f in self.store.fips(tenant)):
                raise errors.FailedPrecondition(f"{pod.name} has a floating IP already")
            self.store.set_fip_pod(tenant, fip.address, pod.id)
            await self._converge()
            return self._fip(tenant, address)

    async def fip_disassociate(self, caller: Caller, address: str) -> FipRecord:
        scope = caller.writes()
        async with self._lock:
            fip = self._fip(scope.tenant, address)
            self.store.set_fip_pod(fip.tenant, fip.address, None)
            await self._converge()
            return self._fip(fip.tenant, address)

    async def fip_release(self, caller: Caller, address: str) -> None:
        scope = caller.writes()
        async with self._lock:
            fip = self._fip(scope.tenant, address)
            tenant = fip.tenant
            self.store.delete_fip(tenant, fip.address)
            self.accounts.stop(tenant, fip.address, at=time.time())
            self.accounts.release_owner(tenant, fip.address)
            if fip.pod_id is not None:
                await self._converge()

    def fips(self, caller: Caller) -> list[dict[str, Any]]:
        scope = caller.reads()
        pods = {p.id: p.name for p in self.db.pods(scope.tenant)}
        return [
            {
                "address": f.address,
                "tenant": f.tenant,
                "container": pods.get(f.pod_id, "") if f.pod_id else "",
                "created": f.created_at,
            }
            for f in self.store.fips(scope.tenant)
        ]

    def fip(self, caller: Caller, address: str) -> dict[str, Any]:
        """The view of one of the caller's floating IPs (as :meth:`fips` lists them)."""
        found = self._fip(caller.reads().tenant, address)
        return next(f for f in self.fips(caller) if f["address"] == found.address)

    def _fip(self, tenant: str | None, address: str) -> FipRecord:
        ipam.parse_address(address, "floating IP")
        found = next((f for f in self.store.fips(tenant) if f.address == address), None)
        if found is None:  # another tenant's FIP is "not found" too: it is not yours to know
            raise errors.NotFound(f"no such floating IP: {address}")
        return found

    def network_of(self, pod_id: str) -> NetworkRecord | None:
        ep = self.store.endpoint(pod_id)
        return None if ep is None else self.store.network_by_id(ep.network_id)

    # ------------------------------------------------------------ quota and metering

    def _meter(self, fip: FipRecord) -> None:
        """A floating IP is billed from its allocation (idempotent)."""
        self.accounts.start(fip.tenant, fip.address, Kind.FIP, fip.created_at, name=fip.address)

    def _reconcile_usage(self) -> None:
        """After a crash between a change and its ledger event: an allocated floating IP is
        billed from its allocation (a no-op when its interval is open), and an interval still
        open for an address released since is closed now (the last time known)."""
        fips = {(f.tenant, f.address): f for f in self.store.fips(None)}
        self.accounts.close_gone(Kind.FIP, lambda tenant, address: (tenant, address) in fips)
        for fip in fips.values():
            self._meter(fip)

    # ------------------------------------------------------------ the host

    async def recover(self) -> None:
        """At hyperd's start: repair the ledger, then converge, but a host that cannot (no
        nft) still serves the rest."""
        self._reconcile_usage()
        try:
            await self.converge()
        except errors.HyperError as exc:
            _log.error("pod networking is not available: %s", exc)

    async def converge(self) -> None:
        """Make the host match the records (at start, and after a pod ended or was removed)."""
        async with self._lock:
            await self._converge()

    async def _converge(self, also: Iterable[str] = ()) -> None:
        topology = self.topology(set(also))
        await asyncio.to_thread(self.host.converge, topology)

    def topology(self, also: set[str]) -> Topology:
        """The networks of running pods (and of the pods in ``also``, about to start)."""
        prefix = self.settings.prefix
        pods = {p.id: p for p in self.db.pods(None)}
        fips = {f.pod_id: IPv4Address(f.address) for f in self.store.fips(None) if f.pod_id}
        endpoints: dict[str, list[Endpoint]] = defaultdict(list)
        for ep in self.store.endpoints():
            pod = pods.get(ep.pod_id)
            if pod is None or (pod.state not in ACTIVE and pod.id not in also):
                continue
            address = IPv4Address(ep.address)
            endpoints[ep.network_id].append(
                Endpoint(
                    tap=names.tap(prefix, pod.id),
                    address=address,
                    mac=ipam.mac_for(address),
                    names=tuple(sorted({pod.name, *(c.name for c in pod.containers), *ep.aliases})),
                    ports=tuple(PortMap.parse(p) for p in pod.spec.get("ports", [])),
                    fip=fips.get(pod.id),
                )
            )
        networks = []
        for net in self.store.networks(None):
            if endpoints.get(net.id):
                subnet = IPv4Network(net.subnet)
                networks.append(
                    Network(
                        id=net.id,
                        bridge=names.bridge(prefix, net.id),
                        subnet=subnet,
                        gateway=ipam.gateway(subnet),
                        nat=net.nat,
                        endpoints=tuple(sorted(endpoints[net.id], key=lambda e: e.tap)),
                    )
                )
        return Topology(tuple(networks))  # the host fills in the uplink
