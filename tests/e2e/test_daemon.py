"""hyperd's acceptance: every CLI verb through the daemon on real QEMU; pods outlive the
daemon; many clients at once leave nothing behind."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import assert_nothing_left, read_line, wait_for

pytestmark = pytest.mark.vm


def _ok(result):
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    return result.stdout.decode()


def _inspect(hyper, name: str):
    [view] = json.loads(_ok(hyper("inspect", name)))
    return view


def _qemu_pids(run_dir: Path) -> list[int]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"qemu-system") and str(run_dir).encode() in cmdline:
            found.append(int(proc.name))
    return found


def test_detached_container_through_every_verb(hyper):
    ticker = "i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.2; done"
    # From a time before the create: the subscriber may connect after the first events.
    events = hyper.popen("events", "--format", "json", "--since", str(time.time() - 1))
    cid = _ok(
        hyper("run", "-d", "--name", "web", "-l", "tier=front", "busybox", "sh", "-c", ticker)
    )
    assert len(cid.strip()) == 64
    ps = _ok(hyper("ps"))
    assert "web" in ps and "Up " in ps
    assert _ok(hyper("ps", "-q")).split() == [cid.strip()[:12]]
    [view] = json.loads(_ok(hyper("ps", "--format", "json", "--filter", "label=tier=front")))
    assert (view["name"], view["state"]) == ("web", "running")
    assert json.loads(_ok(hyper("ps", "--format", "json", "--filter", "label=tier=back"))) == []

    follow = hyper.popen("logs", "-f", "web")
    assert read_line(follow.stdout, 120, "a followed log line").startswith(b"tick ")
    wait_for(lambda: len(_ok(hyper("logs", "web")).splitlines()) >= 3, 60, "three log lines")
    assert len(_ok(hyper("logs", "--tail", "2", "web")).splitlines()) == 2
    stamped = _ok(hyper("logs", "-t", "--tail", "1", "web"))
    assert stamped[:4].isdigit() and "Z tick " in stamped

    result = hyper("exec", "web", "sh", "-c", "echo $((6*7)); exit 4")
    assert (result.returncode, result.stdout) == (4, b"42\n"), result.stderr.decode()
    assert hyper("exec", "-i", "web", "cat", input=b"through stdin").stdout == b"through stdin"
    assert hyper("exec", "web", "no-such-program").returncode == 127
    top = _ok(hyper("top", "web"))
    assert "sh -c" in top and "PID" in top
    [stats] = json.loads(_ok(hyper("stats", "--no-stream", "--format", "json", "web")))
    assert stats["memory_total"] > 100 << 20 and stats["processes"] >= 1

    _ok(hyper("stop", "-t", "1", "web"))
    follow.wait(timeout=60)  # -f ends when the container stops
    stopped = _inspect(hyper, "web")
    assert stopped["state"] == "exited" and stopped["exit_code"] == 143
    assert "web" not in _ok(hyper("ps")) and "web" in _ok(hyper("ps", "-a"))
    before = len(_ok(hyper("logs", "web")).splitlines())

    _ok(hyper("start", "web"))
    assert _inspect(hyper, "web")["state"] == "running"
    wait_for(
        lambda: len(_ok(hyper("logs", "web")).splitlines()) > before, 120, "logs after restart"
    )
    _ok(hyper("restart", "-t", "0", "web"))
    assert _inspect(hyper, "web")["state"] == "running"
    waiter = hyper.popen("wait", "web")
    _ok(hyper("kill", "-s", "TERM", "web"))
    assert read_line(waiter.stdout, 60, "wait's status") == b"143\n"
    refused = hyper("rm", "nope-no-such")
    assert refused.returncode == 125 and b"no such container" in refused.stderr
    _ok(hyper("rm", "web"))
    assert _ok(hyper("ps", "-a", "-q")) == ""

    events.terminate()
    seen = [json.loads(line) for line in events.communicate(timeout=30)[0].splitlines()]
    actions = [e["action"] for e in seen if e["name"] == "web"]
    for action in ("create", "start", "die", "stop", "restart", "kill", "destroy"):
        assert action in actions, actions


def test_running_container_is_refused_removal_without_force(hyper):
    _ok(hyper("run", "-d", "--name", "busy", "busybox", "sleep", "600"))
    refused = hyper("rm", "busy")
    assert refused.returncode == 125 and b"-f" in refused.stderr
    _ok(hyper("rm", "-f", "busy"))
    assert _ok(hyper("ps", "-a", "-q")) == ""


def test_restart_policy_on_failure_counts_and_stops(hyper):
    _ok(
        hyper(
            "run",
            "-d",
            "--name",
            "flaky",
            "--restart",
            "on-failure:2",
            "busybox",
            "sh",
            "-c",
            "echo run; exit 3",
        )
    )
    assert _ok(hyper("wait", "flaky")) == "3\n"
    view = _inspect(hyper, "flaky")
    assert (view["restart_count"], view["exit_code"]) == (2, 3)
    assert _ok(hyper("logs", "flaky")) == "run\nrun\nrun\n"
    _ok(hyper("rm", "flaky"))


def test_run_rm_removes_the_container_and_attach_reaches_a_running_one(hyper):
    result = hyper("run", "--rm", "--name", "gone", "busybox", "sh", "-c", "echo bye; exit 2")
    assert (result.returncode, result.stdout) == (2, b"bye\n")
    wait_for(lambda: "gone" not in _ok(hyper("ps", "-a")), 30, "--rm to remove the container")

    _ok(hyper("run", "-d", "-i", "--name", "reader", "busybox", "sh", "-c", "read x; echo got $x"))
    attached = hyper("attach", "reader", input=b"hello\n")
    assert (attached.returncode, attached.stdout) == (0, b"got hello\n"), attached.stderr
    _ok(hyper("rm", "reader"))


def test_info_version_and_completion(hyper):
    info = json.loads(_ok(hyper("info", "--format", "json")))
    assert info["accelerator"]["name"] in ("kvm", "tcg")
    version = json.loads(_ok(hyper("version", "--format", "json")))
    assert version["server"]["api_version"] == "1"
    script = _ok(hyper("completion", "bash"))
    assert "complete -o default -F _hyper hyper" in script and "logs" in script


def test_pod_verbs(hyper, tmp_path):
    pod_file = tmp_path / "duo.yaml"
    pod_file.write_text(
        "name: duo\ncontainers:\n"
        "  - {name: a, image: busybox, command: [sleep, '600']}\n"
        "  - {name: b, image: busybox, command: [sleep, '600']}\n"
    )
    _ok(hyper("pod", "run", "-d", str(pod_file)))
    [pod] = json.loads(_ok(hyper("pod", "ls", "--format", "json")))
    assert [c["name"] for c in pod["containers"]] == ["duo.a", "duo.b"]
    assert _ok(hyper("exec", "duo.b", "hostname")) == "duo\n"
    refused = hyper("stop", "duo.a")
    assert refused.returncode == 125 and b"hyper pod stop duo" in refused.stderr
    _ok(hyper("pod", "stop", "-t", "1", "duo"))
    assert json.loads(_ok(hyper("pod", "inspect", "duo")))[0]["state"] == "exited"
    _ok(hyper("pod", "rm", "duo"))
    assert _ok(hyper("pod", "ls", "-a", "-q")) == ""


def test_pods_survive_kill_9_of_the_daemon(hyper, hyperd):
    for index in range(5):
        _ok(
            hyper(
                "run",
                "-d",
                "--name",
                f"keep{index}",
                "busybox",
                "sh",
                "-c",
                f"while :; do echo alive {index}; sleep 1; done",
            )
        )
    _ok(hyper("run", "-d", "--name", "ending", "busybox", "sh", "-c", "sleep 8; exit 7"))
    [ending] = [
        p for p in json.loads(_ok(hyper("pod", "ls", "--format", "json"))) if p["name"] == "ending"
    ]
    status_file = hyperd.state / "pods" / ending["id"] / "status.json"
    qemus_before = sorted(_qemu_pids(hyperd.run_dir))
    assert len(qemus_before) == 6

    hyperd.kill9()
    wait_for(
        lambda: json.loads(status_file.read_text())["pod"]["state"] == "exited",
        120,
        "the exiting pod to end while hyperd is down",
    )
    hyperd.start()

    view = _inspect(hyper, "ending")
    assert (view["state"], view["exit_code"]) == ("exited", 7)
    for index in range(5):
        assert _inspect(hyper, f"keep{index}")["state"] == "running"
        assert _ok(hyper("exec", f"keep{index}", "echo", "back")) == "back\n"
        follow = hyper.popen("logs", "-f", "--tail", "0", f"keep{index}")
        assert read_line(follow.stdout, 60, "new log lines") == f"alive {index}\n".encode()
        follow.kill()
    assert sorted(_qemu_pids(hyperd.run_dir)) == [
        p for p in qemus_before if os.path.exists(f"/proc/{p}")
    ]
    assert len(_qemu_pids(hyperd.run_dir)) == 5
    assert len(json.loads(_ok(hyper("ps", "-a", "--format", "json")))) == 6


def test_twenty_concurrent_clients_leave_nothing_behind(hyper, hyperd):
    failures: list[str] = []
    answered = [0]
    lock = threading.Lock()

    def client(number: int) -> None:
        transport = httpx.HTTPTransport(uds=str(hyperd.socket))  # one each: a client closes it
        with httpx.Client(transport=transport, base_url="http://hyperd/v1", timeout=300) as api:
            for round_ in range(2):
                body: dict[str, object] = {
                    "image": "busybox",
                    "name": f"c{number}-{round_}",
                    "command": ["sleep", "600"],
                    "memory": "128M",
                }
                steps: list[tuple[str, str, dict[str, object] | None]] = [
                    ("POST", "/containers", body)
                ]
                if (number + round_) % 2:  # half are started, half removed before they run
                    steps.append(("POST", f"/containers/c{number}-{round_}/start", None))
                steps.append(("DELETE", f"/containers/c{number}-{round_}?force=true", None))
                for method, path, payload in steps:
                    answer = api.request(method, path, json=payload)
                    with lock:
                        answered[0] += 1
                        if answer.status_code >= 300:
                            failures.append(f"{method} {path}: {answer.status_code} {answer.text}")

    threads = [threading.Thread(target=client, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=900)
    assert not failures, failures
    assert answered[0] == 20 * 5  # create+start+rm in one round, create+rm in the other
    assert json.loads(_ok(hyper("ps", "-a", "--format", "json"))) == []
    assert not assert_nothing_left(hyperd.state, hyperd.run_dir)


def test_attach_to_a_container_never_started_is_refused(hyper):
    _ok(hyper("create", "--name", "idle", "busybox", "true"))
    refused = hyper("attach", "idle")
    assert refused.returncode == 126 and b"not running" in refused.stderr, refused.stderr
    _ok(hyper("rm", "idle"))
