"""Where a train step's time goes on XLA:CPU: the profiler's per-instruction times, grouped.

    .venv/bin/python -m bench.profile_step [--batch 4] [--size 224] [--mode none|pgd] [--top 12]

One FCN-ResNet50 train step (as bench.train_speed builds it) runs under jax.profiler; every
event the trace holds for an instruction of the compiled program is summed and put in a group
read from the optimised HLO: convolution forward, convolution input gradient (a strided
layer's runs on a dilated input: XLA's slow path), convolution weight gradient (a window as
large as the image), matmul fusions (the 1x1 convolutions), max-pool forward / backward, BN
reductions, elementwise fusions, copies / transposes. Printed: seconds and share per group,
and the costliest single instructions, with the GFLOP/s of those that convolve or multiply
(FLOPs from the HLO shapes; instructions that overlapped another on the cores read slower).
"""

import argparse
import collections
import glob
import math
import re
import tempfile
import time

from bench.common import machine
from bench.train_speed import build_inputs

INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.+?) ([a-z][\w\-]*)\((.*)$")


def computations(hlo):
    """{computation name: [instruction lines]} of an HLO module's text."""
    found, current = {}, None
    for line in hlo.splitlines():
        header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) ", line)
        if header and line.rstrip().endswith("{"):
            current = found.setdefault(header.group(1), [])
        elif current is not None and INSTRUCTION.match(line):
            current.append(line)
    return found


def classify(line, bodies):
    """The group of one HLO instruction line (looking into the computations a fusion calls)."""
    name, _, op, rest = INSTRUCTION.match(line).groups()
    if op == "convolution":
        if "lhs_dilate" in rest:
            return "conv input gradient (strided layer)"
        size = re.search(r"size=(\d+)x(\d+)", rest)
        if size and int(size.group(1)) > 7:
            return "conv weight gradient"
        if re.search(r"dim_labels=\w+_\w*oi->", rest) or "reverse" in rest:
            return "conv input gradient"
        return "conv (forward or input gradient)"
    if op in ("fusion", "call", "custom-call"):
        called = re.findall(r"(?:calls|to_apply)=%?([\w.\-]+)", rest)
        inner = [i for c in called for i in bodies.get(c, [])]
        kinds = {INSTRUCTION.match(i).group(3) for i in inner}
        if "convolution" in kinds:
            return classify(next(i for i in inner if " convolution(" in i), bodies)
        if "dot" in kinds:
            return "matmul (1x1 convolutions, upsampling)"
        if "select-and-scatter" in kinds:
            return "max-pool backward"
        if "reduce-window" in kinds:
            return "max-pool forward"
        if "reduce" in kinds:
            return "reductions (BN statistics, loss)"
        if kinds and kinds <= {"copy", "transpose", "bitcast", "parameter", "slice", "pad",
                               "concatenate", "reshape", "broadcast"}:
            return "copies / transposes / pads"
        return "elementwise fusions (BN, ReLU, update)"
    if op == "dot":
        return "matmul (1x1 convolutions, upsampling)"
    if op == "select-and-scatter":
        return "max-pool backward"
    if op == "reduce-window":
        return "max-pool forward"
    if op in ("copy", "transpose", "pad", "slice", "concatenate", "reverse"):
        return "copies / transposes / pads"
    if op == "reduce":
        return "reductions (BN statistics, loss)"
    return "other"


def shapes(hlo):
    """{instruction name: its array shape as a list} for every array-valued instruction."""
    found = {}
    for line in hlo.splitlines():
        match = re.match(r"^\s*(?:ROOT )?%?([\w.\-]+) = \w+\[([\d,]*)\]", line)
        if match:
            found[match.group(1)] = [int(v) for v in match.group(2).split(",") if v]
    return found


def flops(line, bodies, shape_of):
    """Multiply-add FLOPs (x2) of the convolutions and dots in one instruction (inside the
    computations a fusion calls, too): what the per-group GFLOP/s are computed from."""
    name, _, op, rest = INSTRUCTION.match(line).groups()
    if op in ("fusion", "call", "custom-call"):
        called = re.findall(r"(?:calls|to_apply)=%?([\w.\-]+)", rest)
        return sum(flops(inner, bodies, shape_of) for c in called for inner in bodies.get(c, []))
    if op not in ("dot", "convolution") or name not in shape_of:
        return 0
    out = math.prod(shape_of[name])
    operands = re.findall(r"%([\w.\-]+)", rest.split(")")[0])
    if op == "dot":
        lhs = shape_of[operands[0]]
        contracting = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest).group(1)
        return 2 * out * math.prod(lhs[int(d)] for d in contracting.split(",") if d)
    kernel = shape_of[operands[1]]
    labels = re.search(r"dim_labels=\w+_(\w+)->", rest).group(1)
    return 2 * out * math.prod(kernel) // kernel[labels.index("o")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--mode", choices=("none", "pgd"), default="none")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    from jaxseg import runtime

    runtime.keep_freed_memory()  # as the CLIs run: glibc keeps freed memory on CPU

    import jax
    from jax.profiler import ProfileData

    from bench.train_speed import reference_fcn
    from jaxseg import config as base_config
    from jaxseg import runtime
    from jaxseg.models import port
    from jaxseg.train import optim
    from jaxseg.train import state as training

    model, variables, _ = port.port({k: v.numpy() for k, v in reference_fcn().state_dict().items()})
    config = base_config.base()
    config.adv.update(mode=args.mode, eps=8 / 255, step_size=2 / 255, steps=3)
    tx = optim.make_optimizer(config.optim, 1000)
    mesh = runtime.make_mesh()
    state = training.create_state(variables, tx, jax.random.key(0))
    state = jax.device_put(state, training.state_shardings(mesh, state))  # as the loop does
    step = training.compile_step(training.make_train_step(model, tx, config), mesh, state)
    x, y = runtime.shard_batch(mesh, build_inputs(args.batch, args.size))
    hlo = step.lower(state, x, y).compile().as_text()
    state, metrics = step(state, x, y)  # compile and warm up
    jax.block_until_ready(metrics)

    start = time.perf_counter()
    state, metrics = step(state, x, y)
    jax.block_until_ready(metrics)
    wall = time.perf_counter() - start
    folder = tempfile.mkdtemp(prefix="jaxseg-profile-")
    jax.profiler.start_trace(folder)
    state, metrics = step(state, x, y)
    jax.block_until_ready(metrics)
    jax.profiler.stop_trace()

    bodies = computations(hlo)
    shape_of = shapes(hlo)
    kind, work = {}, {}
    for lines in bodies.values():
        for line in lines:
            name = INSTRUCTION.match(line).group(1)
            kind[name] = classify(line, bodies)
            work[name] = flops(line, bodies, shape_of)
    trace = ProfileData.from_file(glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)[0])
    per_instruction = collections.Counter()
    for plane in trace.planes:
        for line in plane.lines:
            for event in line.events:
                if event.name in kind:
                    per_instruction[event.name] += event.duration_ns / 1e9
    groups, group_flops = collections.Counter(), collections.Counter()
    for name, seconds in per_instruction.items():
        groups[kind[name]] += seconds
        group_flops[kind[name]] += work[name]
    total = sum(groups.values())
    print(f"train step ({args.mode}), FCN-ResNet50, batch {args.batch} at {args.size}x{args.size} "
          f"fp32: {wall:.2f} s a step (unprofiled); {total:.2f} s summed over the instructions of a "
          f"profiled step")
    print(f"machine: {machine()}")
    for group, seconds in groups.most_common():
        rate = f"{group_flops[group] / seconds / 1e9:6.0f} GFLOP/s" if group_flops[group] else ""
        print(f"  {group:<42} {seconds:7.2f} s  {100 * seconds / total:5.1f} %  {rate}")
    print("costliest instructions:")
    for name, seconds in per_instruction.most_common(args.top):
        rate = f"{work[name] / seconds / 1e9:6.0f} GFLOP/s" if work[name] else ""
        print(f"  {name:<40} {kind[name]:<42} {seconds:6.3f} s  {rate}")


if __name__ == "__main__":
    main()
