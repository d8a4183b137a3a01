"""The runtime core's acceptance: `hyper run` on real QEMU micro-VMs, through hyperd."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess

import pytest

from tests.e2e.conftest import read_line, wait_for

pytestmark = pytest.mark.vm


def test_exit_code_and_output_propagate(hyper):
    result = hyper("run", "--rm", "busybox", "sh", "-c", "echo hello; echo oops >&2; exit 3")
    assert result.returncode == 3, result.stderr.decode()
    assert result.stdout == b"hello\n"
    assert result.stderr == b"oops\n"


def test_stdin_round_trip_is_byte_exact(hyper):
    data = os.urandom(1 << 20)
    result = hyper("run", "--rm", "-i", "busybox", "cat", input=data)
    assert result.returncode == 0, result.stderr.decode()
    assert hashlib.sha256(result.stdout).hexdigest() == hashlib.sha256(data).hexdigest()


def test_guest_kernel_and_process_isolation(hyper):
    result = hyper("run", "--rm", "busybox", "sh", "-c", "uname -r; ps -o comm")
    assert result.returncode == 0, result.stderr.decode()
    release, *processes = result.stdout.decode().split()
    assert release != os.uname().release
    assert release.endswith("cloud-amd64")
    host_only = {"pytest", "qemu-system-x86", "python3", "sshd", "tmux"}
    assert not host_only & set(processes), processes


def test_env_workdir_user_hostname(hyper):
    result = hyper(
        "run",
        "--rm",
        "-e",
        "GREETING=hi there",
        "-w",
        "/tmp",
        "-u",
        "nobody",
        "--name",
        "box1",
        "busybox",
        "sh",
        "-c",
        'echo "$GREETING|$(pwd)|$(id -u):$(id -g)|$(hostname)"',
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().strip() == "hi there|/tmp|65534:65534|box1"


def test_memory_and_cpus_per_pod(hyper):
    result = hyper(
        "run",
        "--rm",
        "--memory",
        "384M",
        "--cpus",
        "2",
        "busybox",
        "sh",
        "-c",
        "nproc; grep MemTotal /proc/meminfo",
    )
    assert result.returncode == 0, result.stderr.decode()
    cpus, meminfo = result.stdout.decode().splitlines()
    assert cpus == "2"
    total_kib = int(meminfo.split()[1])
    assert 300 * 1024 < total_kib <= 384 * 1024


def test_missing_command_is_127(hyper):
    result = hyper("run", "--rm", "busybox", "no-such-program")
    assert result.returncode == 127
    assert b"no-such-program" in result.stderr


def test_sigterm_to_client_stops_the_container(hyper):
    client = hyper.popen("run", "busybox", "sh", "-c", "echo ready; sleep 1000")
    assert read_line(client.stdout, 180, "the container to start") == b"ready\n"
    client.send_signal(signal.SIGTERM)
    assert client.wait(timeout=60) == 128 + signal.SIGTERM


def test_container_ignoring_sigterm_is_killed_after_grace(hyper):
    client = hyper.popen(
        "run",
        "--name",
        "stubborn",
        "busybox",
        "sh",
        "-c",
        "trap '' TERM; echo ready; while :; do sleep 1; done",
    )
    assert read_line(client.stdout, 180, "the container to start") == b"ready\n"
    assert hyper("stop", "-t", "1", "stubborn").returncode == 0
    assert client.wait(timeout=60) == 128 + signal.SIGKILL


def test_exec_in_a_running_container(hyper):
    client = hyper.popen(
        "run", "--name", "exectarget", "busybox", "sh", "-c", "echo ready; sleep 1000"
    )
    try:
        assert read_line(client.stdout, 180, "the container to start") == b"ready\n"
        result = hyper("exec", "exectarget", "sh", "-c", "echo $((6*7)); exit 4")
        assert (result.returncode, result.stdout) == (4, b"42\n"), result.stderr.decode()
        data = os.urandom(200_000)
        result = hyper("exec", "-i", "exectarget", "cat", input=data)
        assert result.stdout == data
        result = hyper("exec", "exectarget", "no-such-program")
        assert result.returncode == 127
        missing = hyper("exec", "nobody-has-this-name", "true")
        assert missing.returncode != 0 and b"no such container" in missing.stderr
    finally:
        client.send_signal(signal.SIGTERM)
        client.wait(timeout=60)


def test_two_container_pod_shares_localhost(hyper):
    pod_file = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "pod.yaml")
    result = hyper("pod", "run", pod_file, "--exit-code-from", "client")
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert b"client | server said: pong" in result.stdout


def test_qemu_killed_is_detected_and_reported(hyper):
    client = hyper.popen("run", "--name", "victim", "busybox", "sh", "-c", "echo ready; sleep 1000")
    assert read_line(client.stdout, 180, "the container to start") == b"ready\n"
    [pod_dir] = hyper.pod_dirs()
    qemu_pid = int((pod_dir / "vm" / "qemu.pid").read_text())
    os.kill(qemu_pid, signal.SIGKILL)
    assert client.wait(timeout=60) == 255
    wait_for(lambda: not pod_dir.exists(), 60, "the pod's run dir to go")
    [view] = json.loads(hyper("inspect", "victim").stdout)
    assert view["state"] == "exited" and "VM" in view["error"], view
    assert not os.path.exists(f"/proc/{qemu_pid}")


def test_crash_of_the_client_leaves_the_container_running(hyper):
    client = hyper.popen("run", "--name", "orphan", "busybox", "sh", "-c", "echo ready; sleep 1000")
    assert read_line(client.stdout, 180, "the container to start") == b"ready\n"
    client.kill()  # SIGKILL: as with docker, the container does not depend on its client
    client.wait(timeout=30)
    assert hyper("exec", "orphan", "true").returncode == 0
    assert hyper("rm", "-f", "orphan").returncode == 0
    assert not hyper.pod_dirs()


def test_interactive_terminal_through_tmux(hyper, tmp_path):
    session = f"hyper-test-{os.getpid()}"
    command = " ".join([*map(str, hyper_cmd()), "run", "--rm", "-it", "busybox", "sh"])
    env = f"HYPER_CONFIG={hyper.config}"
    subprocess.run(
        [
            "tmux",
            "new-session",
            "-d",
            "-s",
            session,
            "-x",
            "100",
            "-y",
            "30",
            f"env {env} {command}",
        ],
        check=True,
    )
    try:

        def screen() -> str:
            return subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
            ).stdout

        wait_for(lambda: "#" in screen(), 180, "the shell prompt")
        subprocess.run(
            ["tmux", "send-keys", "-t", session, "echo sum=$((40+2))", "Enter"], check=True
        )
        wait_for(lambda: "sum=42" in screen(), 30, "the typed command's output")
        subprocess.run(
            ["tmux", "resize-window", "-t", session, "-x", "120", "-y", "40"], check=True
        )
        subprocess.run(["tmux", "send-keys", "-t", session, "stty size", "Enter"], check=True)
        wait_for(lambda: "40 120" in screen(), 30, f"stty size 40 120, screen:\n{screen()}")
        subprocess.run(["tmux", "send-keys", "-t", session, "exit 5", "Enter"], check=True)
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def hyper_cmd():
    import sys

    return [sys.executable, "-m", "hyper.cli"]
