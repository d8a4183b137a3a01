"""Records of networks, endpoints and floating IPs, in hyperd's SQLite file (:mod:`.db`).

Every query that names a network or a floating IP takes the tenant (``None``: every tenant, for
an operator's listing and hyperd's own bookkeeping): a tenant never sees, or learns of, another
tenant's objects. Names are unique per tenant; subnets and addresses are unique on the host
(tenants share its routing table), and the messages of those clashes name no other tenant's
object. Endpoints are keyed by pod and deleted with it (the address
is released by the same transaction that removes the pod).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field

from hyper import errors
from hyper.state.db import Database
from hyper.state.scope import tenant_clause


@dataclass
class NetworkRecord:
    id: str
    tenant: str
    name: str
    subnet: str
    nat: bool = True
    created_at: float = 0.0


@dataclass
class EndpointRecord:
    pod_id: str
    network_id: str
    address: str
    aliases: list[str] = field(default_factory=list)
    """Extra names the pod answers to on its network."""
    ports: list[str] = field(default_factory=list)
    """Published ports, as ``PortMap`` strings."""


@dataclass
class FipRecord:
    address: str
    tenant: str
    pod_id: str | None = None
    created_at: float = 0.0


class NetworkStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------ networks

    def insert_network(self, net: NetworkRecord) -> None:
        try:
            with self.db.transaction() as tx:
                tx.execute(
                    "INSERT INTO networks (id, tenant, name, subnet, nat, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (net.id, net.tenant, net.name, net.subnet, int(net.nat), net.created_at),
                )
        except sqlite3.IntegrityError as exc:
            if "subnet" in str(exc):  # perhaps another tenant's: not named
                raise errors.AlreadyExists(f"subnet {net.subnet} is not available") from None
            raise errors.AlreadyExists(f"a network named {net.name} exists already") from None

    def delete_network(self, tenant: str, network_id: str) -> None:
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM networks WHERE id = ? AND tenant = ?", (network_id, tenant))

    def networks(self, tenant: str | None) -> list[NetworkRecord]:
        """A tenant's networks; every tenant's with ``None``."""
        clause, params = tenant_clause(tenant)
        rows = self.db.query(f"SELECT * FROM networks WHERE {clause} ORDER BY created_at", params)
        return [_network(row) for row in rows]

    def network(self, tenant: str | None, name_or_id: str) -> NetworkRecord | None:
        """The network of ``tenant`` (any tenant's with ``None``) with this name, id or id
        prefix (6 characters at least); None if there is none. A name that several tenants use
        is ambiguous for ``None``: InvalidArgument."""
        clause, params = tenant_clause(tenant)
        rows = self.db.query(
            f"SELECT * FROM networks WHERE {clause} AND (name = ? OR id = ?)",
            (*params, name_or_id, name_or_id),
        )
        if not rows and len(name_or_id) >= 6:  # an id prefix, within the tenant only
            rows = self.db.query(
                f"SELECT * FROM networks WHERE {clause} AND id LIKE ?",
                (*params, name_or_id.replace("%", "").replace("_", "") + "%"),
            )
        if len(rows) > 1:
            raise errors.InvalidArgument(
                f"{name_or_id!r} names several networks: give more of the id, or one tenant"
            )
        return _network(rows[0]) if rows else None

    def network_by_id(self, network_id: str) -> NetworkRecord | None:
        """Any tenant's network with this id (hyperd's own bookkeeping: a pod's network)."""
        rows = self.db.query("SELECT * FROM networks WHERE id = ?", (network_id,))
        return _network(rows[0]) if rows else None

    # ------------------------------------------------------------ endpoints

    def insert_endpoint(self, ep: EndpointRecord) -> None:
        try:
            with self.db.transaction() as tx:
                tx.execute(
                    "INSERT INTO endpoints (pod_id, network_id, address, aliases, ports)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (ep.pod_id, ep.network_id, ep.address, json.dumps(ep.aliases),
                     json.dumps(ep.ports)),
                )  # fmt: skip
        except sqlite3.IntegrityError as exc:
            raise errors.AlreadyExists(f"address {ep.address} is taken: {exc}") from None

    def endpoints(self, network_id: str | None = None) -> list[EndpointRecord]:
        if network_id is None:
            rows = self.db.query("SELECT * FROM endpoints")
        else:
            rows = self.db.query("SELECT * FROM endpoints WHERE network_id = ?", (network_id,))
        return [_endpoint(row) for row in rows]

    def endpoint(self, pod_id: str) -> EndpointRecord | None:
        rows = self.db.query("SELECT * FROM endpoints WHERE pod_id = ?", (pod_id,))
        return _endpoint(rows[0]) if rows else None

    # ------------------------------------------------------------ floating IPs

    def insert_fip(self, fip: FipRecord) -> None:
        try:
            with self.db.transaction() as tx:
                tx.execute(
                    "INSERT INTO fips (address, tenant, pod_id, created_at) VALUES (?, ?, ?, ?)",
                    (fip.address, fip.tenant, fip.pod_id, fip.created_at),
                )
        except sqlite3.IntegrityError:
            raise errors.AlreadyExists(f"floating IP {fip.address} is allocated") from None

    def set_fip_pod(self, tenant: str, address: str, pod_id: str | None) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "UPDATE fips SET pod_id = ? WHERE tenant = ? AND address = ?",
                (pod_id, tenant, address),
            )

    def delete_fip(self, tenant: str, address: str) -> None:
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM fips WHERE tenant = ? AND address = ?", (tenant, address))

    def fips(self, tenant: str | None) -> list[FipRecord]:
        """A tenant's floating IPs; every tenant's with ``None``."""
        clause, params = tenant_clause(tenant)
        rows = self.db.query(f"SELECT * FROM fips WHERE {clause} ORDER BY address", params)
        return [FipRecord(r["address"], r["tenant"], r["pod_id"], r["created_at"]) for r in rows]


def _network(row: sqlite3.Row) -> NetworkRecord:
    return NetworkRecord(
        row["id"], row["tenant"], row["name"], row["subnet"], bool(row["nat"]), row["created_at"]
    )


def _endpoint(row: sqlite3.Row) -> EndpointRecord:
    return EndpointRecord(
        row["pod_id"],
        row["network_id"],
        row["address"],
        json.loads(row["aliases"]),
        json.loads(row["ports"]),
    )
