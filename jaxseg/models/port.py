"""Weights between PyTorch and jaxseg's Flax variables.

Sources (detected from the keys, or named with `source=`):
  segmentation  torchvision segmentation state dicts of its six models (`fcn_resnet50_coco-*.pth`,
                `deeplabv3_resnet50_coco-*.pth`, `lraspp_mobilenet_v3_large-*.pth`, ...), with or
                without `aux_classifier.*`: every variable is ported; the model is recognised
                from the keys and shapes.
  resnet        torchvision ImageNet ResNets (`resnet50-*.pth`): backbone only, `fc.*` dropped,
                heads initialised fresh (FCN's unless `arch` names a DeepLabV3).
  mobilenet     torchvision ImageNet MobileNetV3-Large (`mobilenet_v3_large-*.pth`): backbone
                only (`features.*`), `classifier.*` dropped; `arch` names the head.
  robustness    MadryLab robustness-library checkpoints ({'model': state_dict} with
                `module.model.*` keys, `module.attacker.model.*` copies and `module.normalizer.*`
                buffers): a ResNet backbone only. This is the paper's "RB" model.
Export writes a torchvision-compatible `state_dict` (`.pth`) back.

    python -m jaxseg.cli.port import fcn_resnet50_coco.pth ckpt/pre
    python -m jaxseg.cli.port import resnet50_l2_eps3.ckpt ckpt/rb --num-classes 21
    python -m jaxseg.cli.port export ckpt/at50 fcn_resnet50_at.pth
"""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxseg.errors import JaxsegError
from jaxseg.io import atomic_path
from jaxseg.models.network import (ARCHS, IMAGENET_MEAN, IMAGENET_STD, RESNETS, arch_backbone,
                                   build, has_aux, init)

SOURCES = ("auto", "segmentation", "resnet", "mobilenet", "robustness")
HEAD_LAYERS = {"conv": "0", "bn": "1", "out": "4"}  # FCNHead submodule -> nn.Sequential index
# (collection, flax leaf name) -> torch leaf name
LEAF_NAMES = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}


def torch_module_name(flax_path):
    """('backbone', 'layer3_0', 'downsample_conv') -> 'backbone.layer3.0.downsample.0',
    ('classifier', '0', 'convs_1', '0') -> 'classifier.0.convs.1.0': an index after '_' is a
    torch nn.Sequential / ModuleList index."""
    parts = []
    for name in flax_path:
        indexed = re.fullmatch(r"(\w+?)_(\d+)", name)
        if indexed:
            parts += [indexed[1], indexed[2]]
        elif name.startswith("downsample_"):
            parts += ["downsample", "0" if name == "downsample_conv" else "1"]
        elif flax_path[0] in ("classifier", "aux_classifier") and name in HEAD_LAYERS:
            parts.append(HEAD_LAYERS[name])
        else:
            parts.append(name)
    return ".".join(parts)


def torch_layout(variables):
    """{torch key: (collection, flax path)} for every variable of an FCN."""
    layout = {}
    for collection in ("params", "batch_stats"):
        for path in traverse_util.flatten_dict(variables.get(collection, {})):
            key = torch_module_name(path[:-1]) + "." + LEAF_NAMES[(collection, path[-1])]
            layout[key] = (collection, path)
    return layout


def _to_flax(value):
    """Torch layout -> Flax layout: conv kernels OIHW -> HWIO."""
    return value.transpose(2, 3, 1, 0) if value.ndim == 4 else value


def _to_torch(value):
    return value.transpose(3, 2, 0, 1) if value.ndim == 4 else value


# ---------------------------------------------------------------------------------------------
# Reading PyTorch files and recognising their format


def _import_torch():
    try:
        import torch
    except ImportError as err:
        raise JaxsegError(
            "reading or writing .pth files needs PyTorch: pip install 'jaxseg[torch]'"
        ) from err
    return torch


def read_torch_file(path):
    """A `.pth` / `.ckpt` file as a nested dict with numpy leaves (tensors converted)."""
    if not os.path.isfile(path):
        raise JaxsegError(f"{path}: no such file")
    torch = _import_torch()
    try:
        # weights_only: never execute pickled code from a downloaded checkpoint.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise JaxsegError(f"{path}: not a readable PyTorch checkpoint ({reason[:200]})") from err

    def convert(value):
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            if value.is_floating_point():
                value = value.float()
            return value.numpy()
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    return convert(obj)


def unwrap_state_dict(obj, name="input"):
    """Find the state dict in a checkpoint object and say which source it is.

    Returns (source, state) where state has torchvision key names ('backbone.*' for
    segmentation, plain 'conv1.*', 'layer1.*' for resnet / robustness, 'features.*' for
    mobilenet).
    """
    if not isinstance(obj, dict):
        raise JaxsegError(f"{name}: not a state dict (found {type(obj).__name__})")
    for wrapper in ("model", "state_dict"):
        if isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
            break
    state = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if not state:
        raise JaxsegError(f"{name}: no tensors found; not a model state dict")

    if any(k.startswith("module.model.") for k in state):
        _check_normalizer(state, name)
        inner = {k[len("module.model."):]: v for k, v in state.items() if k.startswith("module.model.")}
        return "robustness", inner
    if all(k.startswith("module.") for k in state):  # (Distributed)DataParallel wrapping
        state = {k[len("module."):]: v for k, v in state.items()}
    if any(k.startswith("backbone.") for k in state):
        return "segmentation", state
    if "conv1.weight" in state:
        return "resnet", state
    if "features.0.0.weight" in state:
        return "mobilenet", state
    raise JaxsegError(f"{name}: keys look like none of torchvision's segmentation models, ResNets "
                      f"or MobileNetV3 (first key {next(iter(state))!r})")


def _check_normalizer(state, name):
    """The robustness library normalises inside the model; ours uses ImageNet statistics."""
    for key, expected in (("module.normalizer.new_mean", IMAGENET_MEAN),
                          ("module.normalizer.new_std", IMAGENET_STD)):
        if key in state and not np.allclose(state[key].reshape(-1), expected, atol=1e-3):
            raise JaxsegError(
                f"{name}: {key} is {np.round(state[key].reshape(-1), 4).tolist()}, but jaxseg models "
                f"normalise with the ImageNet statistics {list(expected)}"
            )


def infer_backbone(state, prefix, name="input"):
    """The backbone (a key of network.RESNETS, or 'mobilenet_v3_large') whose layout matches
    the state dict's keys under `prefix`."""
    if f"{prefix}conv1.weight" in state:
        blocks = []
        for stage in range(1, 5):
            indices = {int(m[1]) for k in state
                       if (m := re.match(rf"{re.escape(prefix)}layer{stage}\.(\d+)\.", k))}
            blocks.append(len(indices))
        width = state[f"{prefix}conv1.weight"].shape[0]
        for backbone, spec in RESNETS.items():
            if tuple(spec["blocks"]) == tuple(blocks) and spec["base_width"] == width:
                return backbone
        raise JaxsegError(f"{name}: no known ResNet has {blocks} blocks per stage and stem "
                          f"width {width}")
    indices = {int(m[1]) for k in state if (m := re.match(rf"{re.escape(prefix)}(\d+)\.", k))}
    if indices:
        stem = state.get(f"{prefix}0.0.weight")
        if len(indices) == 17 and stem is not None and stem.shape[0] == 16:
            return "mobilenet_v3_large"
        raise JaxsegError(f"{name}: a MobileNetV3 with {len(indices)} feature layers; jaxseg has "
                          "MobileNetV3-Large (17)")
    raise JaxsegError(f"{name}: no backbone found under {prefix!r} (first key "
                      f"{next(iter(state))!r})")


def infer_head(state, name="input"):
    """'fcn', 'deeplabv3' or 'lraspp', from a segmentation state dict's classifier keys."""
    if "classifier.0.convs.0.0.weight" in state:
        return "deeplabv3"
    if "classifier.cbr.0.weight" in state:
        return "lraspp"
    if "classifier.4.weight" in state:
        return "fcn"
    raise JaxsegError(f"{name}: no classifier head of FCN, DeepLabV3 or LR-ASPP found (missing "
                      "key 'classifier.4.weight')")


def arch_name(head, backbone, name="input"):
    arch = f"{head}_{backbone}"
    if arch not in ARCHS:
        raise JaxsegError(f"{name}: a {head} head on {backbone} is none of jaxseg's models "
                          f"({', '.join(ARCHS)})")
    return arch


# ---------------------------------------------------------------------------------------------
# State dict <-> variables


def load_state_dict(variables, state, scope="", name="input", ignore=()):
    """Copy `state` (torch key names, numpy values) into a copy of `variables`.

    Only torch keys starting with `scope` are expected ('' = all, 'backbone.' = backbone only).
    Keys in `ignore` (regexes) and `num_batches_tracked` counters may be absent or extra. Any other
    missing key, unexpected key, or shape mismatch is an error naming the key and shapes.
    """
    layout = {k: v for k, v in torch_layout(variables).items() if k.startswith(scope)}
    skippable = [re.compile(p) for p in (r".*\.num_batches_tracked$", *ignore)]
    unexpected = [k for k in state if k not in layout and not any(p.match(k) for p in skippable)]
    if unexpected:
        raise JaxsegError(f"{name}: unexpected key {unexpected[0]!r}"
                          + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else ""))
    missing = [k for k in layout if k not in state]
    if missing:
        raise JaxsegError(f"{name}: missing key {missing[0]!r}"
                          + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))

    flat = {c: traverse_util.flatten_dict(variables.get(c, {})) for c in ("params", "batch_stats")}
    for key, (collection, path) in layout.items():
        target = flat[collection][path]
        value = _to_flax(np.asarray(state[key]))
        if value.shape != target.shape:
            torch_shape = tuple(_to_torch(np.empty(target.shape, np.int8)).shape)
            raise JaxsegError(f"{name}: key {key!r} has shape {tuple(state[key].shape)}, "
                              f"the model expects {torch_shape}")
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            bad = int(np.sum(~np.isfinite(value)))
            raise JaxsegError(f"{name}: key {key!r} holds {bad} non-finite value(s) (NaN or "
                              "inf); a model with them cannot be evaluated or exported")
        flat[collection][path] = value.astype(target.dtype)
    return jax.tree_util.tree_map(jnp.asarray, {c: traverse_util.unflatten_dict(flat[c]) for c in flat})


def to_state_dict(variables):
    """Flax variables -> torchvision state dict (numpy values, OIHW kernels, BN counters)."""
    state = {}
    for key, (collection, path) in torch_layout(variables).items():
        tree = variables[collection]
        for part in path:
            tree = tree[part]
        state[key] = np.ascontiguousarray(_to_torch(np.asarray(tree)))
        if key.endswith(".running_var"):
            state[key[: -len("running_var")] + "num_batches_tracked"] = np.zeros((), np.int64)
    return state


# ---------------------------------------------------------------------------------------------
# The public API


def port(obj, arch=None, num_classes=None, aux=True, source="auto", seed=0, name="input"):
    """Build (model, variables, source) from a torch checkpoint object or a `.pth` path.

    For segmentation sources arch, num_classes and aux come from the file (a given value must
    agree).
    For backbone-only sources the heads are initialised fresh with `num_classes` (default 21)
    and `seed`.
    """
    if source not in SOURCES:
        raise JaxsegError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    if isinstance(obj, (str, os.PathLike)):
        name, obj = str(obj), read_torch_file(obj)
    found, state = unwrap_state_dict(obj, name)
    if source != "auto" and source != found:
        raise JaxsegError(f"{name}: looks like a {found!r} checkpoint, not {source!r}")

    if found == "segmentation":
        file_arch = arch_name(infer_head(state, name), infer_backbone(state, "backbone.", name),
                              name)
        head_key = ("classifier.low_classifier.weight" if file_arch.startswith("lraspp")
                    else "classifier.4.weight")
        if head_key not in state:
            raise JaxsegError(f"{name}: missing key {head_key!r}")
        file_classes = int(state[head_key].shape[0])
        aux = "aux_classifier.0.weight" in state
        if arch is not None and arch != file_arch:
            raise JaxsegError(f"{name}: holds a {file_arch} but arch {arch} was asked for")
        if num_classes is not None and num_classes != file_classes:
            raise JaxsegError(f"{name}: has {file_classes} classes but num_classes={num_classes}")
        arch, num_classes, scope = file_arch, file_classes, ""
    else:
        if found == "mobilenet":  # features.N -> backbone.N; the ImageNet classifier is dropped
            state = {"backbone." + k[len("features."):]: v for k, v in state.items()
                     if k.startswith("features.")}
        else:
            state = {"backbone." + k: v for k, v in state.items()}
        backbone = infer_backbone(state, "backbone.", name)
        if arch is None:
            if backbone not in RESNETS:
                choices = [a for a in ARCHS if arch_backbone(a) == backbone]
                raise JaxsegError(f"{name}: a {backbone} backbone; name the model to build on it "
                                  f"with arch (--arch {' or '.join(choices)})")
            arch = f"fcn_{backbone}"
        if arch not in ARCHS or arch_backbone(arch) != backbone:
            raise JaxsegError(f"{name}: holds a {backbone} backbone but arch {arch} was asked for")
        scope = "backbone."
        aux = aux and has_aux(arch)

    model = build(arch, num_classes if num_classes is not None else 21, aux)
    # Shapes only (no forward pass): a full FCN replaces every variable; a backbone-only port
    # starts its heads as torchvision's fresh FCNHead would.
    fresh = jax.eval_shape(lambda: init(model, jax.random.key(0)))
    if scope:
        fresh = torch_fresh_heads(fresh, jax.random.key(seed))
    ignore = (r"backbone\.fc\.",) if found in ("resnet", "robustness") else ()
    variables = load_state_dict(fresh, state, scope=scope, name=name, ignore=ignore)
    return model, variables, found


def torch_fresh_heads(shapes, key):
    """Concrete variables for `shapes` (jax.eval_shape of init): the heads initialised like
    PyTorch's defaults for a fresh torchvision FCNHead (Conv2d: kaiming_uniform(a=sqrt(5)), i.e.
    U(+-1/sqrt(fan_in)) for weights and biases; BatchNorm: scale 1, bias 0, mean 0, var 1), the
    backbone zeros (the port overwrites it)."""
    flat = {c: traverse_util.flatten_dict(shapes.get(c, {})) for c in ("params", "batch_stats")}
    out = {}
    for collection, leaves in flat.items():
        out[collection] = {}
        for index, (path, leaf) in enumerate(sorted(leaves.items())):
            module = flat[collection]
            name = path[-1]
            if path[0] == "backbone" or name in ("mean",) or (name == "bias" and
                                                              path[:-1] + ("scale",) in module):
                value = jnp.zeros(leaf.shape, leaf.dtype)
            elif name in ("scale", "var"):
                value = jnp.ones(leaf.shape, leaf.dtype)
            else:  # a conv kernel (HWIO) or its bias: fan_in from the kernel
                kernel = module[path[:-1] + ("kernel",)].shape
                bound = 1.0 / np.sqrt(np.prod(kernel[:-1]))
                value = jax.random.uniform(jax.random.fold_in(key, index), leaf.shape, leaf.dtype,
                                           -bound, bound)
            out[collection][path] = value
    return {c: traverse_util.unflatten_dict(v) for c, v in out.items()}


def export_pth(variables, path):
    """Write a torchvision-loadable state dict to `path` (temporary name, then rename)."""
    torch = _import_torch()
    state = {k: torch.from_numpy(np.array(v)) for k, v in to_state_dict(variables).items()}
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise JaxsegError(f"{path}: directory {directory} does not exist")
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def summary(model, variables):
    """A few lines describing a model: arch, classes, parameter counts per part."""
    counts = {part: sum(x.size for x in jax.tree_util.tree_leaves(tree))
              for part, tree in variables["params"].items()}
    lines = [f"{model.arch}: {model.num_classes} classes, aux head {'on' if model.aux else 'off'}"]
    lines += [f"  {part:<15} {count:>12,d} parameters" for part, count in counts.items()]
    lines.append(f"  {'total':<15} {sum(counts.values()):>12,d} parameters")
    return "\n".join(lines)
