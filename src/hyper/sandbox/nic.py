"""A pod's network attachment: the tap hyperd made for it and what its guest must configure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hyper.errors import InvalidArgument, ProtocolError
from hyper.proto.messages import SetupNetwork
from hyper.vmm.machine import Nic


@dataclass(frozen=True)
class NetworkAttachment:
    nic: Nic
    setup: SetupNetwork

    def to_dict(self) -> dict[str, Any]:
        return {"tap": self.nic.tap, **self.setup.to_wire()}

    @classmethod
    def from_dict(cls, data: Any) -> NetworkAttachment:
        """From ``spec.json`` (written by hyperd; checked like anything read from a file)."""
        if not isinstance(data, dict) or not isinstance(data.get("tap"), str):
            raise InvalidArgument("network must be an object with a tap")
        rest = {k: v for k, v in data.items() if k != "tap"}
        try:
            return cls(Nic(data["tap"]), SetupNetwork.from_wire(rest))
        except ProtocolError as exc:
            raise InvalidArgument(f"network: {exc}") from None
