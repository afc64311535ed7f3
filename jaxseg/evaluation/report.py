"""Evaluating checkpoints end to end and reporting: Table-1 markdown, JSON, per-image results,
the worst case over attacks, robustness curves.

    jaxseg.evaluation.report.evaluate_checkpoints(["ckpt/pre"], data="synthetic",
        attacks=["pgd", "sea"], eps=8/255, output="results/pre")

is what `evaluate.py` runs (the CLI only parses arguments).
"""

import hashlib
import json
import os
import re
import sys

import jax
import numpy as np
from jax.experimental import multihost_utils

from jaxseg import attacks as attack_presets
from jaxseg import data as datasets
from jaxseg import labels, models, runtime, viz
from jaxseg.attacks import losses
from jaxseg.evaluation import confusion, metrics
from jaxseg.evaluation.worst_case import PerImage, summarize_counts, worst_case
from jaxseg.errors import JaxsegError
from jaxseg.io import prepare_dir, write_json, write_text

WORST = "worst case"


def _safe(name):
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "_"


def model_fingerprint(path, model, variables):
    """What identifies the model behind stored results: the checkpoint directory it was read
    from (a workdir's latest step), that step, arch and classes, and a hash of every parameter
    and BatchNorm statistic (a retrained or different model under the same path differs)."""
    resolved = models.resolve(path)
    digest = hashlib.sha256()
    for key, value in sorted(jax.tree_util.tree_flatten_with_path(variables)[0],
                             key=lambda item: jax.tree_util.keystr(item[0])):
        value = np.asarray(value)
        digest.update(f"{jax.tree_util.keystr(key)}:{value.dtype}:{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    step = os.path.basename(resolved)
    return {"checkpoint": resolved, "step": int(step) if step.isdigit() else None,
            "arch": model.arch, "num_classes": model.num_classes,
            "params": digest.hexdigest()[:16]}


def data_fingerprint(data, split, data_kwargs, num_images, short_side, pad_to, num_classes):
    """What determines the images and labels an evaluation sees (a dataset root is made
    absolute: the same relative spec from another folder is other data)."""
    kind, _, root = data.partition(":")
    if root and os.path.exists(root):
        data = f"{kind}:{os.path.abspath(root)}"
    return {"data": data, "split": split,
            "data_kwargs": json.dumps(data_kwargs or {}, sort_keys=True, default=str),
            "num_images": num_images, "short_side": short_side,
            "pad_to": list(pad_to) if pad_to else None, "num_classes": num_classes,
            "ignore": labels.IGNORE}


def _describe_model(fingerprint):
    step = "" if fingerprint.get("step") is None else f" step {fingerprint['step']}"
    return f"{fingerprint.get('checkpoint')}{step} (parameters {fingerprint.get('params')})"


def _check_l2_budget(values, dataset, short_side, pad_to):
    """An L2 eps of at least the diameter of the pixel cube [0, 1]^(H x W x 3) constrains
    nothing (the attack may reach any image): a budget meant per pixel, or in 0-255 units."""
    height, width = np.asarray(dataset[0]["image"]).shape[:2]
    if pad_to:
        height, width = pad_to
    elif short_side:
        scale = short_side / min(height, width)
        height, width = round(height * scale), round(width * scale)
    diameter = float(np.sqrt(height * width * 3))
    for value in values:
        if value >= diameter:
            raise JaxsegError(f"L2 eps {value:g} is at least the diameter of a {height}x{width} "
                              f"image ({diameter:.4g}): it constrains nothing; L2 budgets are "
                              "per image (e.g. 0.5 - 3)")


def _class_weights(class_counts, data, data_kwargs, num_classes, log):
    """Balanced-CE weights from a counts file, or from the training split of `data` (cached)."""
    if class_counts:
        counts = datasets.read_counts(class_counts, num_classes)
    else:
        log(f"class pixel counts: from {data} (train), cached")
        counts = datasets.class_pixel_counts(data, "train", **(data_kwargs or {}))
        if len(counts) != num_classes:
            raise JaxsegError(f"class counts of {data}: {len(counts)} classes, the model has "
                              f"{num_classes}")
    return losses.balanced_class_weights(counts)


# Attacks with a published schedule of their own (APGD: 100 steps from a step of 2 eps; SEA:
# 300 steps per loss): a flag shared by every attack of a command that changes it is announced.
SCHEDULED = {"apgd": "100 steps from a step of 2 eps", "apgd_red": "100 steps from a step of "
             "2 eps", "sea": "300 steps per loss from a step of 2 eps"}
ATTACK_KEYS = {"steps": int, "restarts": int, "step_size": float, "loss": str}


def parse_attack(text):
    """'sea' or 'sea:steps=300' or 'pgd:steps=20,restarts=3,step_size=1/255,loss=segpgd' ->
    (preset name, {setting: value}) for the settings this attack alone gets."""
    from jaxseg.config.overrides import parse_number

    name, _, rest = text.partition(":")
    own = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in ATTACK_KEYS:
            raise JaxsegError(f"--attack {text!r}: expected NAME[:KEY=VALUE,...] with keys "
                              f"{', '.join(ATTACK_KEYS)}, got {item!r}")
        if ATTACK_KEYS[key] is int:
            if not value.strip().isdigit() or int(value) < 1:
                raise JaxsegError(f"--attack {text!r}: {key} must be an integer >= 1, "
                                  f"got {value!r}")
            own[key] = int(value)
        elif ATTACK_KEYS[key] is float:
            own[key] = parse_number(value, f"attack {name} {key}")
        else:
            own[key] = value.strip()
    return name.strip(), own


def make_attacks(names, *, eps, steps, step_size, restarts, loss=None, class_weights=None,
                 norm=None, log=None):
    """{row name: spec} for the attacks asked for: preset names, each optionally with settings
    of its own ('sea:steps=300', see `parse_attack`) that take precedence over the shared ones
    (`steps`, `step_size`, `restarts`, `loss`: None leaves each preset's default). `loss`
    applies to apgd / apgd_red / pgd-like presets and names the row, e.g. 'apgd_red-js'; `norm`
    'l2' switches the Linf presets to the L2 ball and suffixes their rows, e.g. 'sea-l2'. A
    shared setting that changes the published schedule of apgd / apgd_red / sea is logged."""
    specs = {}
    shared = {"steps": steps, "step_size": step_size, "restarts": restarts, "loss": loss}
    for text in names:
        name, own = parse_attack(text)
        if name not in attack_presets.PRESETS:
            raise JaxsegError(f"unknown attack preset {name!r}; choose one of "
                              f"{', '.join(attack_presets.PRESETS)}")
        settings = {k: own.get(k, shared[k]) for k in ATTACK_KEYS}
        if name == "fgsm":
            settings.pop("steps")
        if name in ("sea", "apgd_red", "fgsm") and "restarts" not in own:
            settings.pop("restarts")
        if name == "sea" and "loss" not in own:
            settings.pop("loss")
        changed = [k for k in ("steps", "step_size") if k not in own and settings.get(k)]
        if name in SCHEDULED and changed and log:
            log(f"{name}: the shared --{changed[0].replace('_', '-')} replaces its published "
                f"{SCHEDULED[name]} ({name}:{changed[0]}=N sets it for {name} alone)")
        row_loss = settings.get("loss")
        row = f"{name}-{row_loss}" if row_loss else name
        if norm and norm != attack_presets.PRESETS[name][0]:
            row = f"{row}-{norm}"
        if row in specs:
            raise JaxsegError(f"--attack {text!r}: a second attack with the row {row!r} (each "
                              "row of the table is one attack; give them other losses or norms)")
        specs[row] = attack_presets.make(
            name, eps=eps, class_weights=class_weights, norm=norm,
            **{k: v for k, v in settings.items() if v is not None})
    return specs


def needs_class_weights(names, loss):
    """Whether an attack asked for needs class weights (sea, or an mce_bal loss)."""
    parsed = [parse_attack(text) for text in names]
    return any(name == "sea" or own.get("loss", loss) in losses.NEEDS_CLASS_WEIGHTS
               for name, own in parsed)


def describe_attack(row, spec):
    """One line of an attack's settings for the report."""
    settings = _attack_settings(row, spec)
    if hasattr(spec, "members"):
        member = _attack_settings(row, spec.members[0][1])
        losses_ = ", ".join(m.loss for _, m in spec.members)
        return (f"{row}: {member['name']} on {losses_}, {member['steps']} steps each, step "
                f"size from {member['step_size']:.4g}, {settings['norm']}")
    return (f"{row}: {settings['steps']} steps, {settings['restarts']} restart(s), step size "
            f"{settings['step_size']:.4g}, loss {settings['loss']}, {settings['norm']}")


def evaluate_checkpoints(checkpoints, *, output, names=None, data="synthetic", split="val",
                         data_kwargs=None, num_images=None, batch_size=8, short_side=None,
                         pad_to=None, attacks=(), eps=8 / 255, steps=10, step_size=None,
                         restarts=1, loss=None, class_counts=None, worst=False, eps_curve=None,
                         curve_attack="pgd", seed=0, dtype="auto", remat="none", norm=None,
                         show=0, quiet=False, log=print):
    """Clean and robust accuracy / mIoU of each checkpoint (Table 1), per image and over the
    split, and with `eps_curve` (a list of eps values) a robustness curve per model. Every
    input is checked before any work.

    attacks: preset names (`jaxseg.attacks.PRESETS`; 'sea' adds its members' rows and their
    worst case). worst: also a worst-case row over every attack of the model at this eps and
    norm: this run's and those stored earlier in OUTPUT/per_image for the same model and data
    (their rows are added, marked stored; with no attacks the worst case is of the stored ones
    alone; stored runs of other data or another eps are left out, with a line saying which and
    why). Results stored under a name of this run from another model (checkpoint, step or
    parameters) are refused before any work. class_counts: a JSON file of training
    pixels per class for mce_bal / sea (default: counted from `data`'s train split, cached).
    dtype / remat: how the models compute (`models.load`; 'auto': bf16 on GPU/TPU, fp32 on CPU).
    norm: 'linf' or 'l2' for every attack (None: each preset's own; L2 eps is per image).
    show: pictures of what each attack did to the first `show` images (`show_attacks`).

    Writes OUTPUT/results.md (Table-1 style), results.json (per-class IoU too),
    per_image/<model>/<attack>.npz (per-image TP / FP / FN per class, with a fingerprint of
    the model, the data and the attack's settings), and with `eps_curve`:
    curve.json and curve.png. Returns {model name: {row: summary}}.
    """
    main = runtime.is_main_process()  # the process that writes and prints
    if not main:
        log = lambda line: None  # noqa: E731
    names = list(names) if names else [os.path.basename(os.path.normpath(c)) for c in checkpoints]
    if len(names) != len(checkpoints):
        raise JaxsegError(f"{len(names)} --name values for {len(checkpoints)} checkpoints")
    if norm not in (None, "linf", "l2"):
        raise JaxsegError(f"unknown norm {norm!r}; choose linf or l2")
    attack_presets.check_hyper(eps, 1.0, norm or "linf")  # also when only the clean row is asked
    if loss and not [name for name in attacks if parse_attack(name)[0] != "sea"]:
        raise JaxsegError("sea runs its own losses (js, mce, mce_bal); --loss applies to the "
                          "other attacks (apgd, apgd_red, pgd, ...)")
    if num_images is not None and num_images < 1:
        raise JaxsegError(f"--num-images must be >= 1, got {num_images}")
    if show < 0:
        raise JaxsegError(f"--show must be >= 0, got {show}")

    def load_all():  # all errors before any work, agreed between the processes of a job
        dataset = datasets.get_dataset(data, split, **(data_kwargs or {}))
        if num_images:
            dataset = datasets.Subset(dataset, num_images)
        loaded = [models.load(path, dtype, remat) for path in checkpoints]
        for path, (model, _) in zip(checkpoints, loaded):
            labels.check_num_classes(model.num_classes, dataset.info.num_classes, path,
                                     f"data {data}")
        return dataset, loaded

    dataset, loaded = runtime.on_every_process(load_all)
    if norm == "l2":
        _check_l2_budget([eps, *(eps_curve or [])], dataset, short_side, pad_to)
    fingerprints = {name: model_fingerprint(path, model, variables)
                    for name, path, (model, variables) in zip(names, checkpoints, loaded)}
    data_id = data_fingerprint(data, split, data_kwargs, num_images, short_side, pad_to,
                               dataset.info.num_classes)
    # Stored results of another model under a name of this run: refused before any work.
    runtime.on_every_process(lambda: [_check_same_model(os.path.join(
        output, "per_image", _safe(n)), n, fingerprints[n]) for n in names] if main else None)
    weights = None
    if needs_class_weights(attacks, loss):
        # Process 0 counts (or reads the cache) and tells the others: no image read twice.
        weights = runtime.on_every_process(lambda: np.asarray(_class_weights(
            class_counts, data, data_kwargs, dataset.info.num_classes, log), np.float32)
            if main else np.zeros(dataset.info.num_classes, np.float32))
        if jax.process_count() > 1:
            weights = np.asarray(multihost_utils.broadcast_one_to_all(weights))
    specs = {"clean": None, **make_attacks(attacks, eps=eps, steps=steps, step_size=step_size,
                                           restarts=restarts, loss=loss, class_weights=weights,
                                           norm=norm, log=log)}
    if eps_curve:  # validate every point before any work (the curve runs in --norm's ball)
        for value in eps_curve:
            attack_presets.make(curve_attack, eps=value, steps=steps, norm=norm)
    runtime.on_every_process(lambda: prepare_dir(output, "output") if main else None)

    loader = lambda: datasets.eval_loader(dataset, batch_size, short_side=short_side,  # noqa: E731
                                          pad_to=pad_to)
    key = jax.random.key(seed)
    results, curves = {}, {}
    for name, (model, variables) in zip(names, loaded):
        results[name] = {}
        attacked = {}  # row -> PerImage, for the worst case
        folder = os.path.join(output, "per_image", _safe(name))
        for row, spec in specs.items():
            total = len(dataset) * (len(spec.members) if hasattr(spec, "members") else 1)
            with _progress(f"{name} {row}", total, quiet) as bar:
                summary, per_image = confusion.evaluate_attack(
                    model, variables, loader, spec, key, class_names=dataset.info.class_names,
                    progress=bar.update)
            for member, counts in per_image.items():
                member_row = row if member is None else f"{row}/{member}"
                if main:
                    counts.save(os.path.join(folder, _safe(member_row) + ".npz"), attack=member_row,
                                eps=0.0 if spec is None else float(eps),
                                steps=0 if spec is None else spec.steps,
                                norm="" if spec is None else spec.norm,
                                fingerprint=json.dumps({
                                    "model": fingerprints[name], "data": data_id,
                                    "attack": _attack_settings(member_row, spec, member),
                                    "jaxseg": jaxseg_version()}, sort_keys=True))
                if spec is not None:
                    attacked[member_row] = counts
            if isinstance(spec, attack_presets.presets.Ensemble):
                for member, member_summary in summary.pop("members").items():
                    results[name][f"{row}/{member}"] = member_summary
            results[name][row] = _table_summary(summary)
            log(f"{name} {row}: pixel acc {100 * summary['pixel_acc']:.1f} "
                f"mIoU {100 * summary['miou']:.1f} (image acc {100 * summary['image_acc']:.1f})")
        if worst:
            if main:  # the output folder is process 0's
                stored, left_out = _stored(folder, eps, attacked, norm, data_id)
                for row, counts in stored.items():  # earlier runs' rows, from their counts
                    results[name][row] = _table_summary(
                        summarize_counts(counts.tp, counts.fp, counts.fn,
                                         dataset.info.class_names)) | {"stored": True}
                attacked.update(stored)
                if left_out:
                    log(f"{name} {WORST}: left out stored " + "; ".join(left_out))
            if not attacked:
                raise JaxsegError(f"--worst-case: no attack at eps {_eps_text(eps, norm)} for "
                                  f"{name}, run now or stored in {folder}")
            results[name][WORST] = _table_summary(worst_case(attacked, dataset.info.class_names))
            results[name][WORST]["attacks"] = sorted(attacked)
            s = results[name][WORST]
            log(f"{name} {WORST} over {len(attacked)} attacks: pixel acc {100 * s['pixel_acc']:.1f} "
                f"mIoU {100 * s['miou']:.1f} (image acc {100 * s['image_acc']:.1f})")
        if show and main:
            where = os.path.join(output, "show", _safe(name))
            show_attacks(model, variables, loader(), specs, show, key, dataset.info, where,
                         results[name])
            log(f"{name}: pictures of the first {show} images per attack and a per-class IoU "
                f"chart in {where}")
        if eps_curve:
            curves[name] = []
            for value in eps_curve:
                spec = attack_presets.make(curve_attack, eps=value, steps=steps, norm=norm)
                with _progress(f"{name} curve {_eps_text(value, norm)}", len(dataset),
                               quiet) as bar:
                    matrix = confusion.evaluate_split(model, variables, loader(), spec, key,
                                                      progress=bar.update).confusion
                curves[name].append((value, metrics.summarize(matrix)))

    if not main:
        return results
    budget = f"L2 eps {eps:.4g} per image" if norm == "l2" else f"eps {255 * eps:.4g}/255"
    settings = [describe_attack(row, spec) for row, spec in specs.items() if spec is not None]
    header = (f"data {data} ({split}, {len(dataset)} images); {budget}\n\n"
              + "".join(f"- {line}\n" for line in settings) + ("\n" if settings else ""))
    write_text(os.path.join(output, "results.md"), header + markdown_table(results) + "\n")
    write_json(os.path.join(output, "results.json"),
               {"data": data, "split": split, "images": len(dataset), "eps": eps,
                "norm": norm, "steps": steps, "restarts": restarts, "loss": loss,
                "attacks": {row: _attack_settings(row, spec) for row, spec in specs.items()
                            if spec is not None},
                "checkpoints": dict(zip(names, checkpoints)), "results": results})
    if curves:
        write_json(os.path.join(output, "curve.json"), {
            "attack": curve_attack, "steps": steps, "norm": norm or "linf", "curves": {
                n: [{"eps": e, "pixel_acc": s["pixel_acc"], "miou": s["miou"]} for e, s in pts]
                for n, pts in curves.items()}})
        robustness_curve(curves, os.path.join(output, "curve.png"), attack=curve_attack,
                         norm=norm)
        log(curve_table(curves, curve_attack, norm))
        log(f"curve written to {os.path.join(output, 'curve.json')} and "
            f"{os.path.join(output, 'curve.png')}")
    else:  # a curve of an earlier run in this folder would read as this run's
        for stale in ("curve.json", "curve.png"):
            if os.path.exists(os.path.join(output, stale)):
                os.remove(os.path.join(output, stale))
    return results


def show_attacks(model, variables, batches, specs, count, key, info, folder, rows):
    """For the first `count` images of `batches`: per attack a grid (image | adversarial |
    perturbation | clean and adversarial prediction | truth, `viz.attack_grid`) in
    folder/<row>.png, and folder/iou.png, the per-class IoU of every row of `rows` (the split's
    summaries). The pictured attacks run on these images alone (same key, another batch than
    the evaluation's): what they show is the attack, not the counted example."""
    from jaxseg.io import save_png

    images, labels = [], []
    for batch in batches:
        valid = np.asarray(batch.get("valid", np.ones(len(batch["image"]), bool)), bool)
        images += list(np.asarray(batch["image"], np.float32)[valid])
        labels += list(np.asarray(batch["label"], np.int32)[valid])
        if len(images) >= count:
            break
    images, labels = np.stack(images[:count]), np.stack(labels[:count])
    predict = lambda x: np.asarray(model.apply(variables, x, train=False)["out"]).argmax(-1)  # noqa: E731
    clean = predict(images)
    for row, spec in specs.items():
        if spec is None:
            continue
        x = np.asarray(attack_presets.attack(spec, model.apply, variables, images, labels, key).x)
        save_png(viz.attack_grid(images, x, clean, predict(x), labels, info),
                 os.path.join(folder, f"{_safe(row)}.png"))
    bars = {row: summary["iou"] for row, summary in rows.items() if "iou" in summary}
    viz.iou_bars(bars, list(info.class_names), os.path.join(folder, "iou.png"),
                 title="per-class IoU, clean and under each attack")


def _eps_text(eps, norm):
    return f"L2 {eps:.4g}" if norm == "l2" else f"{255 * eps:.4g}/255"


def curve_table(curves, attack="pgd", norm=None):
    """curves: {model name: [(eps, summary), ...]} -> markdown, one row per eps."""
    names = list(curves)
    lines = [f"| eps ({attack}{', L2' if norm == 'l2' else ''}) | "
             + " | ".join(f"{n} acc / mIoU" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for i, (eps, _) in enumerate(curves[names[0]]):
        cells = [f"{100 * curves[n][i][1]['pixel_acc']:.1f} / {100 * curves[n][i][1]['miou']:.1f}"
                 for n in names]
        lines.append(f"| {_eps_text(eps, norm)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _table_summary(summary):
    """A summary without the per-image choices (they stay in per_image/)."""
    return {k: v for k, v in summary.items()
            if k not in ("attack_for_accuracy", "attack_for_miou", "index")}


def jaxseg_version():
    import jaxseg

    return jaxseg.__version__


def _attack_settings(row, spec, member=None):
    """The settings of the attack behind a stored row (None for the clean row)."""
    if spec is None:
        return None
    if member is not None and hasattr(spec, "members"):
        spec = dict(spec.members)[member]
    settings = {"row": row, "name": spec.name, "steps": spec.steps, "norm": spec.norm}
    if hasattr(spec, "config"):  # steps per restart
        settings |= {"steps": spec.steps // spec.config.restarts,
                     "restarts": spec.config.restarts, "loss": spec.loss,
                     "step_size": None if spec.step_size is None else float(spec.step_size)}
    return settings


def _fingerprint(meta):
    try:
        return json.loads(str(meta["fingerprint"]))
    except (KeyError, ValueError):
        return None


def _check_same_model(folder, name, fingerprint):
    """Stored results under `name` come from the model this run evaluates under that name."""
    if not os.path.isdir(folder):
        return
    for filename in sorted(os.listdir(folder)):
        if not filename.endswith(".npz"):
            continue
        stored = _fingerprint(PerImage.load(os.path.join(folder, filename))[1])
        if stored is None:
            continue
        theirs, ours = stored["model"], fingerprint
        if (theirs["params"], theirs["arch"]) != (ours["params"], ours["arch"]):
            raise JaxsegError(
                f"{os.path.join(folder, filename)}: results of {_describe_model(theirs)} are "
                f"stored under --name {name}, which is now {_describe_model(ours)}; give this "
                "model another --name or --output (or delete the old results)")


def _stored(folder, eps, have, norm=None, data=None):
    """Per-image results stored earlier for the same eps, norm and data, not already in `have`
    (files written before the norm was stored are Linf). Returns ({row: PerImage}, [why each
    other stored attack was left out])."""
    found, left_out = {}, []
    if not os.path.isdir(folder):
        return found, left_out
    for filename in sorted(os.listdir(folder)):
        if not filename.endswith(".npz"):
            continue
        counts, meta = PerImage.load(os.path.join(folder, filename))
        name = str(meta.get("attack", filename[:-4]))
        if name in have or name == "clean":
            continue
        stored_norm = str(meta.get("norm", "")) or "linf"
        reason = None
        if abs(float(meta.get("eps", -1)) - eps) > 1e-9 or (norm or "linf") != stored_norm:
            reason = f"at {_eps_text(float(meta.get('eps', -1)), stored_norm)}"
        elif (fingerprint := _fingerprint(meta)) is None:
            reason = "with no record of its model and data (written by an older jaxseg)"
        elif data is not None and fingerprint["data"] != data:
            changed = [f"{k} {fingerprint['data'].get(k)!r}" for k in data
                       if fingerprint["data"].get(k) != data[k]]
            reason = "on other data (" + ", ".join(changed) + ")"
        if reason:
            left_out.append(f"{name} ({reason})")
        else:
            found[name] = counts
    return found, left_out


class _progress:
    """A tqdm bar over images with ETA on stderr (process 0 only), or nothing when quiet."""

    def __init__(self, title, total, quiet):
        self.bar = None
        if not quiet and jax.process_index() == 0:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=title, unit="img", file=sys.stderr,
                            dynamic_ncols=True, leave=False)

    def update(self, count):
        if self.bar is not None:
            self.bar.update(count)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()


def markdown_table(rows, title="model"):
    """Table-1 style: one row per (model, attack) with pixel accuracy (pooled over pixels, as
    Table 1), the mean of per-image accuracies (as Croce et al. report) and mIoU, in percent."""
    lines = [f"| {title} | attack | pixel acc | image acc | mIoU |", "|---|---|---|---|---|"]
    for name, results in rows.items():
        for attack_name, summary in results.items():
            image = summary.get("image_acc")
            image = "" if image is None else f"{100 * image:.1f}"
            if summary.get("stored"):
                attack_name = f"{attack_name} (stored)"
            lines.append(f"| {name} | {attack_name} | {100 * summary['pixel_acc']:.1f} | "
                         f"{image} | {100 * summary['miou']:.1f} |")
    return "\n".join(lines)


def robustness_curve(curves, path, metric="miou", attack="pgd", norm=None):
    """curves: {model name: [(eps, summary), ...]} -> a line plot of `metric` (percent) vs eps
    (x/255 for L-inf, the per-image L2 radius for norm 'l2')."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.5), dpi=120)
    for name, points in curves.items():
        scale = 1.0 if norm == "l2" else 255.0
        axis.plot([scale * eps for eps, _ in points], [100 * s[metric] for _, s in points],
                  marker="o", label=name)
    axis.set_xlabel("L2 eps (per image)" if norm == "l2" else "eps (x/255)")
    axis.set_ylabel({"miou": "mIoU (%)", "pixel_acc": "pixel accuracy (%)"}.get(metric, metric))
    axis.set_title(f"{attack} robustness")
    axis.grid(alpha=0.3)
    axis.legend()
    viz.save_figure(figure, path)
