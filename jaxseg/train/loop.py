"""The training loop: data, the jitted step over a mesh, checkpoints and resume, signals, NaN
guard, logging (progress bar, JSON lines, optional TensorBoard) and periodic evaluation.

    train(config, workdir)   # config: jaxseg.config.base() with experiment changes

Workdir (see jaxseg.train.workdir): checkpoints/<step>/ (orbax), metrics.jsonl,
samples/step_<N>.png, config.json, config_history.jsonl, train.lock. Re-running with the same
workdir resumes from the newest intact checkpoint: parameters, optimizer state, PRNG key and the
data iterator's position, so an interrupted run continues exactly. Every exit path finishes (or
abandons) the checkpoint save in flight before it reports.
"""

import json
import os
import signal
import sys
import time

import jax
import numpy as np

from jaxseg import attacks, data, evaluation, labels, models, runtime, viz
from jaxseg import config as configs
from jaxseg.train import optim
from jaxseg.train import state as training
from jaxseg.train import workdir as workdirs
from jaxseg.models.checkpoint import quiet_orbax
from jaxseg.train.checkpoint import CheckpointWriteError, TrainCheckpoints, config_changes
from jaxseg.errors import JaxsegError


class StopSignals:
    """SIGTERM / SIGINT set a flag; the loop saves a checkpoint and returns at the next step.
    With nothing to save (start-up, the first step's compilation, the final evaluation) or at
    a second signal, the CLIs' signal thread exits at once instead (jaxseg.errors)."""

    stops_after_step = True  # what the CLIs' signal thread announces at once (jaxseg.errors)

    def __init__(self, workdir=""):
        self.received = None
        self.unsaved = False  # steps run since the last checkpoint (the loop keeps it)
        self.final_evaluation = False  # the last step is saved and being evaluated
        self.workdir = workdir
        self._signals = 0

    def at_once_message(self, name):
        """What the signal thread prints when `name` stops the run at once."""
        if self.final_evaluation:  # the run is finished and saved: rerunning would do nothing
            return (f"{name}: stopped at once during the final evaluation; the run is finished "
                    f"and saved: evaluate.py --checkpoint {self.workdir} measures it")
        return f"{name}: stopped at once; the last checkpoint is kept, rerun the same command " \
               "to resume"

    def exits_at_once(self):
        """Asked by the signal thread as each signal arrives, before this handler runs."""
        self._signals += 1
        return not self.unsaved or self._signals > 1

    def __enter__(self):
        self._previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no signal handling there
                pass
        return self

    def _handle(self, signum, _frame):
        self.received = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class MetricsLog:
    """JSON lines in the workdir (process 0 only), and TensorBoard events when tensorboardX is
    installed."""

    def __init__(self, workdir):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.writer = None
        if self.enabled:
            SummaryWriter = _tensorboard_writer()
            if SummaryWriter is not None:
                self.writer = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step, kind, values):
        if not self.enabled:
            return
        record = {"step": int(step), "kind": kind, "time": round(time.time(), 3), **values}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for name, value in values.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{kind}/{name}", value, step)
            self.writer.flush()

    def close(self):
        if self.writer is not None:
            self.writer.close()


def _tensorboard_writer():
    """tensorboardX's SummaryWriter, or None without tensorboardX. Imported without PyTorch:
    tensorboardX imports it where installed (1-4 s per process) only to accept its tensors,
    and the metrics here are Python floats."""
    blocked = "torch" not in sys.modules
    if blocked:
        sys.modules["torch"] = None  # `import torch` raises ImportError while this is set
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    finally:
        if blocked:
            del sys.modules["torch"]
    return SummaryWriter


def _datasets(config):
    kwargs = config.data.kwargs.to_dict()
    if config.data.skip_bad:
        kwargs["skip_bad"] = True

    def dataset(spec, split):
        try:
            return data.get_dataset(spec, split, **kwargs)
        except (JaxsegError, TypeError) as err:  # TypeError: an argument the dataset does not take
            if not config.data.kwargs:
                raise
            given = ", ".join(f"{k}={v!r}" for k, v in config.data.kwargs.items())
            raise JaxsegError(f"{spec} ({split}): {err} (from config key data.kwargs: "
                              f"{given})") from None

    train_ds = dataset(config.data.train, config.data.train_split)
    eval_ds = dataset(config.data.eval or config.data.train, config.data.eval_split)
    labels.check_num_classes(eval_ds.info.num_classes, train_ds.info.num_classes,
                             f"eval data {config.data.eval or config.data.train}", "train data")
    return train_ds, data.Subset(eval_ds, config.eval.num_images)


def _model_and_variables(config, num_classes):
    wanted = config.model.num_classes
    if wanted is not None and wanted != num_classes:
        raise JaxsegError(f"model.num_classes={wanted} but the data has {num_classes} classes")
    dtype, remat = runtime.compute_dtype(config.model.dtype), config.model.remat
    if config.model.init:
        loaded, variables = models.load(config.model.init)
        labels.check_num_classes(loaded.num_classes, num_classes, config.model.init, "the data")
        if loaded.arch != config.model.arch:
            raise JaxsegError(f"{config.model.init}: checkpoint is a {loaded.arch}, config asks "
                              f"for {config.model.arch}")
        model = models.build(loaded.arch, num_classes, loaded.aux, dtype, remat)
        return model, variables
    model = models.build(config.model.arch, num_classes, config.model.aux, dtype, remat)
    # the initial values do not depend on the input size: one initialiser program serves every
    # crop size (and the compilation cache then has it for the next run of this model)
    return model, models.init(model, jax.random.key(config.seed))


def _eval_specs(config):
    specs = {"clean": None}
    if config.eval.attack:
        eps = config.adv.eps if config.eval.eps is None else config.eval.eps
        specs[config.eval.attack] = attacks.make(config.eval.attack, eps=eps, steps=config.eval.steps)
    return specs


def _evaluate(model, variables, config, eval_ds, specs, mesh, step, log, workdir,
              announce=False):
    """Evaluate on `eval_ds` under each spec and log it; `announce` (the final evaluation): say
    what runs, show a bar per attack, and print the figures and where they went."""
    loader = lambda: data.eval_loader(eval_ds, config.eval.batch_size,  # noqa: E731
                                      short_side=config.data.eval_short_side,
                                      pad_to=config.data.eval_pad_to)
    speaking = announce and jax.process_index() == 0
    source = config.data.eval or config.data.train
    if speaking:
        print(f"final evaluation at step {step}: {', '.join(_describe(n, s) for n, s in specs.items())}"
              f" on {len(eval_ds)} images of {source} ({config.data.eval_split})",
              file=sys.stderr, flush=True)
    results = {}
    for name, spec in specs.items():
        bar = _image_bar(name, len(eval_ds)) if speaking else None
        try:
            results[name] = evaluation.evaluate_attack(
                model, variables, loader(), spec, jax.random.key(step), mesh,
                eval_ds.info.class_names, progress=bar.update if bar else None)[0]
        finally:
            if bar is not None:
                bar.close()
        log.write(step, f"eval_{name}", {"pixel_acc": results[name]["pixel_acc"],
                                         "miou": results[name]["miou"]})
        if speaking:
            print(f"  {name}: pixel accuracy {100 * results[name]['pixel_acc']:.1f} %, mIoU "
                  f"{100 * results[name]['miou']:.1f} %", file=sys.stderr, flush=True)
    if speaking and log.enabled:
        print(f"  written to {log.path} (kinds {', '.join(f'eval_{n}' for n in specs)})",
              file=sys.stderr, flush=True)
    if config.eval.samples and jax.process_index() == 0:
        batch = next(iter(loader()))
        count = min(config.eval.samples, int(np.sum(batch["valid"])))
        viz.save_predictions(
            os.path.join(workdir, "samples", f"step_{step:06d}.png"), model, variables,
            batch["image"][:count], batch["label"][:count], eval_ds.info, specs)
    return results


def _describe(name, spec):
    if spec is None:
        return name
    return f"{name} (eps {float(spec.eps):.4g}, {spec.steps} steps)"


def _image_bar(name, total):
    from tqdm import tqdm

    return tqdm(total=total, desc=f"  {name}", unit="image", dynamic_ncols=True, file=sys.stderr)


def train(config, workdir):
    """Train per `config` in `workdir` (resuming there if it holds checkpoints)."""
    configs.check(config)
    training.adversary(config.adv)  # validate the attack settings before any work
    new = not os.path.exists(workdir)
    workdir = workdirs.prepare(workdir)
    try:
        with workdirs.lock(workdir):
            return _train(config, workdir)
    except BaseException:
        if new:  # a run that failed before its first checkpoint leaves no workdir behind
            workdirs.remove_if_nothing_saved(workdir)
        raise


def _train(config, workdir):
    specs = _eval_specs(config)
    train_ds, eval_ds = _datasets(config)
    loader = data.train_loader(train_ds, config.batch_size, tuple(config.data.crop_size),
                               short_side_range=config.data.short_side_range,
                               flip_prob=config.data.flip_prob, seed=config.seed,
                               num_workers=config.data.workers)
    if config.epochs is not None:
        config.steps = config.epochs * loader.steps_per_epoch
    if config.steps < 1:
        loader.close()
        raise JaxsegError(f"steps must be >= 1, got {config.steps}")
    if _finished(workdir, config):  # before the model is built and the step compiled
        loader.close()
        if jax.process_index() == 0:
            print(f"{workdir}: already trained to step {config.steps} with this configuration; "
                  "nothing to do", file=sys.stderr)
        return {"step": config.steps, "stopped_by": None, "model": None, "state": None}
    try:
        model, variables = _model_and_variables(config, train_ds.info.num_classes)
        mesh = runtime.make_mesh()
        if config.batch_size % mesh.size:
            raise JaxsegError(f"batch_size {config.batch_size} is not divisible by the "
                              f"{mesh.size} devices")
    except BaseException:  # the loader's workers are already running
        loader.close()
        raise
    batch_sharding = runtime.batch_sharding(mesh)
    replays = config.adv.replays if config.adv.mode == "free" else 1
    tx = optim.make_optimizer(config.optim, config.steps * replays)
    free_shape = None
    if config.adv.mode == "free":
        free_shape = (config.batch_size, *tuple(config.data.crop_size), 3)
    state = training.create_state(variables, tx, jax.random.key(config.seed), free_shape)
    state = runtime.place(state, training.state_shardings(mesh, state))

    checkpoints = TrainCheckpoints(os.path.join(workdir, "checkpoints"), model,
                                   keep=config.checkpoint.keep)
    resumed = checkpoints.restore_latest(state.variables, _train_items(state), config.to_dict())
    start, changes = 0, []
    if resumed:
        start, restored_vars, restored_train, data_state, changes = resumed
        state = state.replace(**restored_vars, **restored_train)
        loader.set_state(data_state)
        if changes and jax.process_index() == 0:
            print(f"resuming step {start} with changed settings: {'; '.join(changes)}",
                  file=sys.stderr)
    workdirs.trim_metrics(workdir, start)
    workdirs.record_config(workdir, config, start, changes)
    log = MetricsLog(workdir)

    step_fn = training.compile_step(training.make_train_step(model, tx, config), mesh, state)
    save = lambda step: checkpoints.save(step, state.variables, _train_items(state),  # noqa: E731
                                         loader.get_state(), config.to_dict())
    progress = _progress(start, config.steps)
    pending, last_saved, stopped_by = [], start, None
    try:
        with StopSignals(workdir) as signals:
            for step in range(start + 1, config.steps + 1):
                batch = data.to_global(next(loader), batch_sharding)
                state, metrics = step_fn(state, batch["image"], batch["label"])
                signals.unsaved = True
                pending.append(metrics)
                progress.update(1)
                boundary = step % config.log_every == 0 or step % config.checkpoint.every == 0
                if boundary or step == config.steps or signals.received:
                    _check_and_log(pending, step, log, progress)
                    pending = []
                if step % config.checkpoint.every == 0 or step == config.steps or signals.received:
                    save(step)
                    last_saved, signals.unsaved = step, False
                if step % config.eval.every == 0 or step == config.steps:
                    if step == config.steps:
                        progress.close()  # the final evaluation's own bars follow
                        signals.final_evaluation = not signals.unsaved
                    _evaluate(model, state.variables, config, eval_ds, specs, mesh, step, log,
                              workdir, announce=step == config.steps)
                if signals.received:
                    stopped_by = signals.received
                    break
            checkpoints.wait()  # still under the handler: a Ctrl-C now cannot cut the save
    except (NonFiniteStep, OSError) as err:  # OSError: a full disk, a vanished workdir
        _settle(checkpoints, quiet=isinstance(err, CheckpointWriteError))
        latest = checkpoints.latest_step()
        where = checkpoints.path(latest) if latest else "none (no checkpoint was saved yet)"
        error = JaxsegError(f"{err}; stopped, the last good checkpoint is {where}")
        if isinstance(err, CheckpointWriteError):
            error.abandon = checkpoints.remove_unfinished
        raise error from None
    except BaseException:
        _settle(checkpoints)
        raise
    finally:
        checkpoints.close()
        progress.close()
        log.close()
        loader.close()
    if stopped_by:
        print(f"stopped by {stopped_by} at step {last_saved} of {config.steps}; checkpoint saved "
              f"in {workdir}; rerun the same command to resume", file=sys.stderr)
    return {"step": last_saved, "stopped_by": stopped_by, "model": model, "state": state}


def _finished(workdir, config):
    """Whether the workdir's newest checkpoint is the last step of this very configuration (a
    rerun of a finished run then does nothing). Anything else, a damaged or changed run
    included, takes the resuming path, which reports it."""
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return False
    checkpoints = TrainCheckpoints(directory, model=None)
    try:
        with quiet_orbax():
            latest = checkpoints.latest_step()
            return latest == config.steps and not config_changes(
                checkpoints.saved_config(latest), config.to_dict())
    except Exception:  # orbax and tensorstore raise many types for damage: resume reports it
        return False
    finally:
        checkpoints.close()


def _settle(checkpoints, quiet=False):
    """Finish the save in flight before an error is reported, so that the checkpoint the message
    names exists; a save that cannot finish is abandoned (orbax never publishes it) and its
    temporary folder removed. quiet: the error being reported is that failure already."""
    try:
        checkpoints.wait()
    except Exception as err:  # the save itself failed (full disk ...): it stays unpublished
        if not quiet:
            print(f"warning: the checkpoint save in flight failed: "
                  f"{' '.join(str(err).split())[:200]}", file=sys.stderr)
    checkpoints.remove_unfinished()
    checkpoints.manager.reload()


class NonFiniteStep(Exception):
    """A step whose loss or update was not finite (the state was left unchanged)."""


def _train_items(state):
    """The non-variable part of the state, as orbax saves it (no None leaves)."""
    items = {"step": state.step, "opt_state": state.opt_state, "key": state.key}
    if state.free_delta is not None:
        items["free_delta"] = state.free_delta
    return items


def _check_and_log(pending, step, log, progress):
    """Fetch the metrics of the last steps; stop on a non-finite step (the state is unchanged by
    such a step, and nothing is saved after it)."""
    values = jax.device_get(pending)
    for offset, metrics in enumerate(values):
        if not metrics["finite"]:
            bad = step - len(values) + offset + 1
            loss = float(metrics["loss"])
            what = (f"loss is {loss}" if not np.isfinite(loss)
                    else f"the update made parameters non-finite (loss {loss:.4g})")
            raise NonFiniteStep(f"{what} at step {bad}")
    loss = float(np.mean([m["loss"] for m in values]))
    acc = float(np.mean([m["pixel_acc"] for m in values]))
    log.write(step, "train", {"loss": loss, "pixel_acc": acc})
    progress.set_postfix(loss=f"{loss:.3f}", acc=f"{acc:.3f}")


def _progress(start, total):
    from tqdm import tqdm

    return tqdm(total=total, initial=start, unit="step", dynamic_ncols=True,
                disable=jax.process_index() != 0, file=sys.stderr)
