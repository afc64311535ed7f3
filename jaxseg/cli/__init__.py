"""Command-line entry points: argparse in, one library call out. The top-level train.py,
evaluate.py and synthesize.py are shims for the first three.

    train.py        jaxseg.train.train
    evaluate.py     jaxseg.evaluation.evaluate_checkpoints
    synthesize.py   jaxseg.synthesis.synthesize
    python -m jaxseg.cli.port      import / export PyTorch weights (jaxseg.models.port)
    python -m jaxseg.cli.prepare   fetch and arrange CamVid / VOC / COCO (jaxseg.data.prepare)
    python -m jaxseg.cli.coco      build the COCO -> VOC21 label cache
    python -m jaxseg.cli.plan      FLOPs, memory and step time per batch, dtype and remat
    python -m jaxseg.cli.demo      `make demo`

Every command calls `start_process()` first, before JAX runs anything, and parses its
arguments with `ArgumentParser` (argparse, with the project's one-line errors).
"""

import argparse
import sys


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line, like every other error: 'error: ...' and exit
    code 2 (argparse prints the whole usage first)."""

    def error(self, message):
        if "expected one argument" in message:  # argparse reads `--eps -1/255` as two flags
            message += " (a value starting with '-' goes after '=': --eps=-1/255)"
        sys.stderr.write(f"error: {message}; see {self.prog} --help\n")
        sys.exit(2)


def start_process():
    """What a jaxseg command does to its process first: Ctrl-C exits at once with one line
    (`errors.exit_on_interrupt`), and on a CPU-only host glibc keeps the memory XLA frees
    between executions (`runtime.keep_freed_memory`; JAXSEG_CPU_HEAP=system opts out).
    Importing jaxseg does neither: a library user opts in with `runtime.keep_freed_memory()`."""
    from jaxseg.errors import exit_on_interrupt

    exit_on_interrupt()  # first: Ctrl-C while JAX loads exits 130 without a traceback
    from jaxseg.runtime import heap

    heap.keep_freed_memory()
