"""Bounded buffers, host facts and the accelerator cache: the parts that need no QEMU."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from hyper.config.settings import Settings, VmSettings
from hyper.vmm import accel, host
from hyper.vmm.qemu.ring import ByteRing


@given(st.lists(st.binary(max_size=300), max_size=30), st.integers(1, 257))
def test_ring_keeps_the_last_bytes(chunks: list[bytes], capacity: int) -> None:
    ring = ByteRing(capacity)
    for chunk in chunks:
        ring.write(chunk)
    everything = b"".join(chunks)
    assert ring.tail() == everything[-capacity:]
    assert ring.total == len(everything)
    assert ring.tail(5) == everything[-capacity:][-5:]


def test_tsc_khz_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\ncpu MHz\t\t: 2596.124\nflags\t\t: fpu\n")
    assert host.tsc_khz(cpuinfo) == 2596124
    cpuinfo.write_text("processor\t: 0\n")
    assert host.tsc_khz.__wrapped__(cpuinfo) == 0
    assert host.tsc_khz(tmp_path / "missing") == 0


def test_kvm_unusable_without_device(tmp_path: Path) -> None:
    assert host.kvm_unusable_reason(tmp_path / "kvm") == f"no {tmp_path / 'kvm'}"


def test_a_configured_accelerator_is_not_probed(tmp_path: Path) -> None:
    for name in ("kvm", "tcg"):
        settings = Settings(vm=VmSettings(accelerator=name, qemu="/nonexistent"))
        chosen = asyncio.run(accel.choose(settings, tmp_path / "no-kernel"))
        assert chosen == accel.Accelerator(name, "configured in vm.accelerator")


def test_cache_round_trip_and_bound(tmp_path: Path) -> None:
    path = tmp_path / "cache" / "accel.json"
    assert accel._load(path, "k") is None
    for i in range(accel.CACHE_ENTRIES + 3):
        accel._store(path, f"k{i}", accel.Accelerator("tcg", f"reason {i}"))
    entries = json.loads(path.read_text())
    assert len(entries) == accel.CACHE_ENTRIES and "k0" not in entries
    last = f"k{accel.CACHE_ENTRIES + 2}"
    assert accel._load(path, last) == accel.Accelerator("tcg", f"reason {accel.CACHE_ENTRIES + 2}")
    path.write_text("{not json")
    assert accel._load(path, last) is None
    path.write_text(json.dumps({last: {"name": "vmx", "reason": "?"}}))
    assert accel._load(path, last) is None


def test_cache_key_changes_with_the_kernel(tmp_path: Path) -> None:
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"one")
    first = accel._cache_key(kernel, "7.2.22")
    kernel.write_bytes(b"two")
    assert accel._cache_key(kernel, "7.2.22") != first
    assert accel._cache_key(kernel, "8.0.0") != accel._cache_key(kernel, "7.2.22")
