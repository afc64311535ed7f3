"""Launching a CLI as a simulated multi-process job on 127.0.0.1 (CPU, gloo collectives), or
as one process with simulated devices, and comparing the files the runs wrote."""

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.helpers import paths

REPO = str(paths.REPO)


def xla_flags(devices):
    """XLA_FLAGS for a process with `devices` simulated CPU devices, keeping the suite's own
    flags (tests/conftest.py)."""
    return f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}" \
        .strip()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(script, *args, devices=1, processes=1):
    """Popen handles: `processes` copies of `python script args` joined by explicit flags (one
    process: no flags), each with `devices` CPU devices."""
    env = dict(os.environ, XLA_FLAGS=xla_flags(devices),
               PYTHONPATH=REPO)
    coordinator = f"127.0.0.1:{free_port()}"
    runs = []
    for index in range(processes):
        flags = [] if processes == 1 else ["--coordinator", coordinator, "--num-processes",
                                           str(processes), "--process-id", str(index)]
        runs.append(subprocess.Popen([sys.executable, script, *map(str, args), *flags], cwd=REPO,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True))
    return runs


def finished(runs, timeout=400):
    """The outputs of `runs`, once all exited 0. On a failure, every run's last lines: in a
    multi-process job the process that failed first is not always the one that reports it."""
    outputs = [run.communicate(timeout=timeout)[0] for run in runs]
    if any(run.returncode for run in runs):
        raise AssertionError("\n".join(
            f"--- run {i} (exit {run.returncode}):\n{out[-2500:]}"
            for i, (run, out) in enumerate(zip(runs, outputs))))
    return outputs


def files(folder):
    """{relative path: bytes} of every file under `folder`."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def assert_same_files(a, b):
    found_a, found_b = files(a), files(b)
    assert sorted(found_a) == sorted(found_b)
    differ = [name for name in found_a if found_a[name] != found_b[name]]
    assert not differ, f"{a} and {b} differ in {differ}"
