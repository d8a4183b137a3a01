"""The pieces of VM templates that need no QEMU: command lines, hot-plug arguments, the key."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hyper.sandbox.template import Shape
from hyper.vmm.machine import Disk, MachineConfig, MemoryFile
from hyper.vmm.qemu import cmdline, hotplug

WIRING = cmdline.Wiring(qmp_fd=7, console_fd=8, pidfile=Path("/run/vm/qemu.pid"))
MACHINE = MachineConfig(
    name="pod-1",
    accelerator="tcg",
    cpus=1,
    memory_mb=256,
    kernel=Path("/cache/vmlinuz"),
    initrd=Path("/cache/initrd"),
    append="",
    disks=(),
    agent_socket=Path("/run/pod/agent.sock"),
    run_dir=Path("/run/vm"),
)


def build(config: MachineConfig) -> list[str]:
    return cmdline.build("qemu", config, WIRING, tsc_khz=1000, sandbox=False)


def test_a_cold_boot_has_anonymous_ram_and_the_empty_scsi_controller() -> None:
    argv = build(MACHINE)
    assert "-object" not in argv and "-incoming" not in argv
    assert "virtio-scsi-device,id=scsi0" in argv


def test_template_and_clone_differ_only_in_sharing_and_incoming() -> None:
    template = build(replace(MACHINE, memory_file=MemoryFile(Path("/t/r,am"), shared=True)))
    clone = build(
        replace(MACHINE, memory_file=MemoryFile(Path("/t/r,am"), shared=False), incoming=True)
    )
    backend = "memory-backend-file,id=ram0,size=256M,mem-path=/t/r,,am,share=on"
    assert template[template.index("-object") + 1] == backend
    assert template[template.index("-object") + 2 : template.index("-object") + 4] == [
        "-machine",
        "memory-backend=ram0",
    ]
    assert clone[clone.index("-object") + 1] == backend.replace("share=on", "share=off")
    assert clone[-4:-2] == ["-incoming", "defer"]
    assert [a for a in clone if a not in ("-incoming", "defer")] == [
        a.replace("share=on", "share=off") for a in template
    ]


def test_hotplug_arguments_name_the_disk_by_its_serial() -> None:
    disk = Disk("0vol", Path("/v/data.qcow2"), readonly=False, format="qcow2")
    assert hotplug.blockdev(disk) == {
        "node-name": "node-0vol",
        "driver": "qcow2",
        "read-only": False,
        "file": {
            "driver": "file",
            "filename": "/v/data.qcow2",
            "aio": "threads",
            "cache": {"direct": False},
        },
    }
    assert hotplug.device(disk) == {
        "driver": "scsi-hd",
        "id": "disk-0vol",
        "bus": "scsi0.0",
        "drive": "node-0vol",
        "serial": "0vol",
    }


def test_the_template_key_ignores_host_paths_and_covers_the_shape() -> None:
    shape = Shape(MACHINE, guest="g1")
    moved = Shape(
        replace(MACHINE, name="other", run_dir=Path("/x"), agent_socket=Path("/x/a.sock")), "g1"
    )
    assert shape.key("7.2.22") == moved.key("7.2.22")
    different = [
        Shape(replace(MACHINE, cpus=2), "g1"),
        Shape(replace(MACHINE, memory_mb=512), "g1"),
        Shape(replace(MACHINE, accelerator="kvm"), "g1"),
        Shape(replace(MACHINE, append="loglevel=7"), "g1"),
        Shape(replace(MACHINE, initrd=Path("/cache/initrd-2")), "g1"),
        Shape(MACHINE, "g2"),
        Shape(MACHINE, "g1", tenant="acme"),
    ]
    keys = {s.key("7.2.22") for s in different} | {shape.key("8.0.0")}
    assert shape.key("7.2.22") not in keys and len(keys) == len(different) + 1


def test_qmp_events_resolve_only_the_expected_futures() -> None:
    import asyncio
    import logging

    from qemu.qmp import Message

    from hyper.vmm.qemu.qmp import Qmp

    async def scenario() -> None:
        qmp = Qmp("t", logging.getLogger("test"))
        opened = qmp.expect("VSERPORT_CHANGE", lambda data: data.get("open") is True)
        qmp._on_event(
            Message({"event": "VSERPORT_CHANGE", "data": {"id": "agentport", "open": False}})
        )
        assert not opened.done()
        qmp._on_event(Message({"event": "SHUTDOWN", "data": {"reason": "host-qmp-quit"}}))
        qmp._on_event(
            Message({"event": "VSERPORT_CHANGE", "data": {"id": "agentport", "open": True}})
        )
        assert opened.done() and qmp._expected == []
        assert qmp.shutdown_reason == "host-qmp-quit"

    asyncio.run(scenario())


def test_a_pod_clones_its_own_tenants_template_when_templates_are_not_shared(
    tmp_path: Path,
) -> None:
    """The tenant comes from hyperd (the supervisor's spec), never from the pod's labels."""
    import asyncio

    from hyper.config.settings import Paths, Settings, TemplateSettings
    from hyper.images.store import ImageStore
    from hyper.model.pod import pod_from_dict
    from hyper.sandbox.pod import Guest, Pod

    leased: list[str] = []

    class Templates:
        async def lease(self, shape: Shape, log: object) -> None:
            leased.append(shape.tenant)

    spec = pod_from_dict(
        {
            "name": "p",
            "labels": {"hyper.tenant": "bob"},
            "containers": [{"name": "c", "image": "x"}],
        },
        default_name="p",
    )
    guest = Guest(kernel=Path("/k"), initrd=Path("/i"), accelerator="tcg")
    for shared, expected in ((True, ""), (False, "alice")):
        settings = Settings(
            paths=Paths(state_dir=tmp_path, run_dir=tmp_path / "run"),
            template=TemplateSettings(share_across_tenants=shared),
        )
        pod = Pod(
            spec,
            settings=settings,
            images=ImageStore(tmp_path / "images"),
            guest=guest,
            templates=Templates(),  # type: ignore[arg-type]
            tenant="alice",
        )
        asyncio.run(pod._template(MACHINE))
        assert leased.pop() == expected
