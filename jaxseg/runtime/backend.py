"""How models and programs are shaped and compiled per backend: convolution forms, block
barriers, XLA compiler options, the compute dtype. Read at trace time, so a policy applies to
the programs traced while it is in force.

Convolutions on CPU (XLA:CPU's direct convolutions run well below its matmul rate):
- 1x1 convolutions run as matmuls over channels (`pointwise_matmul`), forward and backward.
  On GPU/TPU they stay lax convolutions (cuDNN / the TPU's units run them as matmuls anyway,
  and XLA:GPU in jaxlib 0.11.2 aborted compiling the FCN-ResNet50 train step at 480x480 in a
  Triton GEMM fusion for a stride-2 matmul 1x1 convolution).
- float32 3x3 convolutions of stride 1, dilated or not, run as Winograd F(2x2, 3x3)
  (`winograd_convs`, jaxseg.models.winograd: 16 batched matmuls) when a call does at least
  WINOGRAD_MIN_MACS multiply-adds. Winograd's form runs 35-55 % faster than XLA:CPU's direct
  convolution at nearly every shape but compiles ~0.6 s slower per convolution (5-6x lax's;
  `python -m bench.winograd_shapes`); below that size a call saves under ~2 ms, which a program
  run once or a few hundred times (tests, short evaluations) never earns back. Strided ones,
  bfloat16 and GPU/TPU stay lax convolutions.
- each bottleneck block's output passes an optimization barrier (`materialize_blocks`), so
  XLA:CPU computes it once instead of fusing the block's BN / residual / ReLU chain into
  several consumers of the backward pass.
`conv_policy(...)` overrides any of them (tests, benchmarks); parameters are the same either
way and results equal to float32 rounding.

Compiler options: on CPU jaxseg's programs compile with XLA:CPU's memory-optimised scheduler
(`compiler_options`; train steps in `train.state.compile_step`, attacks, evaluation and
synthesis through `runtime.jit`). GPU/TPU keep XLA's defaults. Figures: docs/performance.md.

Compute dtype: 'auto' computes in bfloat16 on GPU/TPU (their matrix units run bf16 at several
times the fp32 rate) and in float32 on CPU (XLA:CPU has no fast bf16 convolutions); parameters,
logits and losses stay float32 either way.
"""

import contextlib
import functools

import jax
import jax.numpy as jnp

from jaxseg.errors import JaxsegError

# Multiply-adds per call (9 x batch x height x width x in x out channels) from which a float32
# 3x3 stride-1 convolution runs as Winograd on CPU (bench.winograd_shapes; docs/performance.md).
# FCN-ResNet50 at 224, batch 4: every such convolution (layer1's: 4.6e8); the tests' models at
# 32x32: none.
WINOGRAD_MIN_MACS = 1e8

_conv_override = []  # stack of conv_policy() choices: {name: True / False / None (default)}
_POLICIES = ("pointwise_matmul", "materialize_blocks", "winograd_convs")


def _choice(name):
    """The innermost `conv_policy` choice for `name`, or None."""
    for choices in reversed(_conv_override):
        if choices[name] is not None:
            return choices[name]
    return None


def _on_cpu():
    return jax.default_backend() == "cpu"


def pointwise_matmul():
    """Whether models traced now write 1x1 convolutions as matmuls: on CPU, unless
    `conv_policy` says otherwise."""
    choice = _choice("pointwise_matmul")
    return _on_cpu() if choice is None else choice


def materialize_blocks():
    """Whether models traced now put an optimization barrier on each bottleneck block's output:
    on CPU, unless `conv_policy` says otherwise."""
    choice = _choice("materialize_blocks")
    return _on_cpu() if choice is None else choice


def winograd_convs(input_shape, features):
    """Whether a float32 3x3 stride-1 convolution of an NHWC input of `input_shape` into
    `features` channels, traced now, runs as Winograd F(2x2, 3x3): on CPU from
    WINOGRAD_MIN_MACS multiply-adds per call, unless `conv_policy` says otherwise (then at
    every size)."""
    choice = _choice("winograd_convs")
    if choice is not None:
        return choice
    batch, height, width, channels = input_shape
    return _on_cpu() and 9.0 * batch * height * width * channels * features >= WINOGRAD_MIN_MACS


@contextlib.contextmanager
def conv_policy(pointwise_matmul=None, materialize_blocks=None, winograd_convs=None):
    """Within the block, models trace 1x1 convolutions as matmuls (True) or lax convolutions
    (False), barriers after blocks (True) or none (False), and float32 3x3 stride-1
    convolutions of every size as Winograd's (True) or lax's (False); None keeps the
    backend's choice. For tests and benchmarks: parameters are the same either way, results
    equal to float32 rounding."""
    choices = dict(zip(_POLICIES, (pointwise_matmul, materialize_blocks, winograd_convs)))
    _conv_override.append({k: None if v is None else bool(v) for k, v in choices.items()})
    try:
        yield
    finally:
        _conv_override.pop()


def compiler_options(run_once=False):
    """XLA options for compiling jaxseg's programs on the default backend: XLA:CPU's
    memory-optimised scheduler, which orders a program's thunks for less live memory and less
    concurrency (the default and the concurrency-optimised ones run independent convolutions
    side by side on the same few cores, and are slower on the train step and the attack);
    nothing on GPU/TPU.

    `run_once`: a program that runs once per process (the models' initialisers) is compiled at
    XLA:CPU's lowest backend optimisation level. An initialiser is hundreds of threefry draws
    that LLVM optimises for seconds to save milliseconds: LR-ASPP's compiles in 5.0 s instead of
    27.7 s, fcn_resnet26_w16's in 2.5 s instead of 16.4 s (values within 1 ulp of the optimised
    program's; `python -m bench.init_compile`, docs/performance.md)."""
    if not _on_cpu():
        return {}
    options = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}
    if run_once:
        options["xla_backend_optimization_level"] = 0
    return options


class jit:
    """`jax.jit` compiling with `compiler_options()` (use as `@functools.partial(runtime.jit,
    static_argnames=...)`). jax.jit is built on the first call, not at import: choosing the
    options asks for the backend, which must not start before `jax.distributed.initialize`.
    Called on traced arguments (inside an outer jit, grad or vmap) it is a plain jax.jit: jax
    takes compiler options only on the outermost program. One jax.jit per backend policy in
    force (`conv_policy`): the policies are read while tracing, and jax's trace cache does not
    know them, so a program traced under one policy is never reused under another."""

    def __init__(self, fun, run_once=False, **jit_kwargs):
        functools.update_wrapper(self, fun)
        self._fun, self._jit_kwargs, self._programs = fun, jit_kwargs, {}
        self._run_once = run_once  # see compiler_options

    def _program(self, nested=False):
        key = (nested, _on_cpu(), *(_choice(name) for name in _POLICIES))
        if key not in self._programs:
            def per_policy(*args, **kwargs):  # jax caches traces per function object
                return self._fun(*args, **kwargs)

            functools.update_wrapper(per_policy, self._fun)
            options = {} if nested else {"compiler_options": compiler_options(self._run_once)}
            self._programs[key] = jax.jit(per_policy, **options, **self._jit_kwargs)
        return self._programs[key]

    def __call__(self, *args, **kwargs):
        nested = any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves((args, kwargs)))
        if not nested:
            try:
                return self._program()(*args, **kwargs)
            except ValueError as err:  # inside a trace (eval_shape, an outer jit) on constants
                if "can only be passed to top-level" not in str(err):
                    raise
        return self._program(nested=True)(*args, **kwargs)

    def __getattr__(self, name):  # lower, trace, _cache_size, ...
        return getattr(self._program(), name)


COMPUTE_DTYPES = ("auto", "float32", "bfloat16")


def compute_dtype(name="auto"):
    """The models' compute dtype for `name` (see COMPUTE_DTYPES): None means float32."""
    if name not in COMPUTE_DTYPES:
        raise JaxsegError(f"compute dtype {name!r}; choose one of {', '.join(COMPUTE_DTYPES)}")
    if name == "auto":
        name = "float32" if _on_cpu() else "bfloat16"
    return None if name == "float32" else jnp.bfloat16
