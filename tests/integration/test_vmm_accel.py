"""The accelerator probe on this host's real KVM (or its absence)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path

import pytest

from hyper.config.settings import Paths, Settings, VmSettings
from hyper.vmm import accel, host
from hyper.vmm.qemu import binary

from .conftest import pids_mentioning, wait_gone

pytestmark = pytest.mark.vm


def test_auto_probes_once_and_caches(debian_kernel: Path, tmp_path: Path) -> None:
    settings = Settings(
        paths=Paths(cache_dir=tmp_path / "cache"), vm=VmSettings(kvm_probe_timeout=5.0)
    )

    async def scenario() -> None:
        started = time.monotonic()
        first = await accel.choose(settings, debian_kernel)
        probe_seconds = time.monotonic() - started
        print(f"probe: {first} in {probe_seconds:.2f} s")
        assert first.name in ("kvm", "tcg") and first.reason
        assert probe_seconds < settings.vm.kvm_probe_timeout + 3
        if host.kvm_unusable_reason() is None and first.name == "tcg":
            assert "KVM present" in first.reason
        cache = json.loads((tmp_path / "cache" / "accel.json").read_text())
        if host.kvm_unusable_reason() is None:
            assert list(cache.values()) == [dataclasses.asdict(first)]
        started = time.monotonic()
        assert await accel.choose(settings, debian_kernel) == first
        assert time.monotonic() - started < 1.0  # from the cache, no second probe
        assert pids_mentioning("kvm-probe") == []

    asyncio.run(scenario())


def test_a_hanging_guest_means_tcg_and_is_killed(debian_kernel: Path, tmp_path: Path) -> None:
    """What a stock kernel does on nested PVM KVM, played by a "QEMU" that never exits."""
    hanging = tmp_path / "hanging-qemu"
    pidfile = tmp_path / "pid"
    hanging.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 3600\n")
    hanging.chmod(0o755)

    async def scenario() -> None:
        qemu = binary.QemuBinary(str(hanging), "7.2.0", sandbox=False)
        started = time.monotonic()
        result = await accel.probe(qemu, debian_kernel, timeout=1.0)
        assert time.monotonic() - started < 1.0 + 2
        assert result == accel.Accelerator(
            "tcg", "KVM present but the guest kernel did not boot on it within 1 s (nested PVM?)"
        )
        assert wait_gone(int(pidfile.read_text()), timeout=0)

    asyncio.run(scenario())

    asyncio.run(scenario())
