"""The training workdir: checked before any work, locked against a second trainer, its metrics log
cut back to the restored step on resume, its configuration history kept.

    checkpoints/<step>/   orbax steps (see jaxseg.train.checkpoint)
    metrics.jsonl         one JSON record per logged step and kind
    config.json           the configuration of the latest run
    config_history.jsonl  one record per start: time, start step, changed keys, full config
    train.lock            held (flock) by the running trainer; holds its pid
"""

import contextlib
import errno
import fcntl
import json
import os
import shutil
import time

import jax

from jaxseg import io
from jaxseg.errors import JaxsegError

LOCK = "train.lock"
FILES = (LOCK, "metrics.jsonl", "config.json", "config_history.jsonl")  # what the trainer writes


def prepare(workdir):
    """Create `workdir` if needed (one-line errors for an empty name, a file, a read-only
    place, and for a directory where the trainer keeps one of its files); returns the absolute
    path."""
    workdir = io.prepare_dir(workdir, "workdir")
    for name in FILES:
        path = os.path.join(workdir, name)
        if os.path.lexists(path) and not os.path.isfile(path):
            raise JaxsegError(f"{path} is not a file (the trainer keeps its {name} there); "
                              "move it away or use another workdir")
    return workdir


def remove_if_nothing_saved(workdir):
    """Remove `workdir` (created by this run) if no checkpoint was started in it: what a run
    that failed at start-up wrote there (its lock, config records) is of no use."""
    checkpoints = os.path.join(workdir, "checkpoints")
    if jax.process_index() == 0 and not (os.path.isdir(checkpoints) and os.listdir(checkpoints)):
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def lock(workdir):
    """Hold an exclusive lock on `workdir` (process 0 only, so that every host of one job shares
    it); a second trainer on the same workdir stops with one line naming the holder's pid. The
    kernel drops the lock when the holder dies, even by SIGKILL."""
    if jax.process_index() != 0:
        yield
        return
    path = os.path.join(workdir, LOCK)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise JaxsegError(f"workdir {workdir} is in use by another trainer (pid {holder}); "
                              "wait for it to finish or use another workdir") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def trim_metrics(workdir, step):
    """Drop the records of steps after `step` (written by a run that died before checkpointing
    them; the resumed run logs them again) and any line cut short by a kill."""
    path = os.path.join(workdir, "metrics.jsonl")
    if jax.process_index() != 0 or not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.read().splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("step", 0) <= step:
            kept.append(line)
    if len(kept) != len(lines):
        io.write_text(path, "".join(line + "\n" for line in kept))


def record_config(workdir, config, start, changes):
    """Write config.json (this run's configuration) and append a start record to
    config_history.jsonl, so that a resume with changed settings keeps the earlier ones."""
    if jax.process_index() != 0:
        return
    io.write_text(os.path.join(workdir, "config.json"), config.to_json(indent=2))
    record = {"time": round(time.time(), 3), "start_step": int(start), "changes": changes,
              "config": config.to_dict()}
    with open(os.path.join(workdir, "config_history.jsonl"), "a") as f:
        f.write(json.dumps(record, default=list) + "\n")
