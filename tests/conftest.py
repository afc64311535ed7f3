"""Suite-wide, set here before any test module imports JAX, for the pytest workers and every
process the tests start:
- one persistent JAX compilation cache per test run (the same small programs compile in many
  tests and in the processes the CLI tests start), removed when the run ends; every program
  goes in it, not only those that compile in more than JAX's default 1 s (a tiny model's
  evaluate.py call: 4.3 -> 3.1 s when its programs are cached);
- XLA:CPU's backend (LLVM) optimisation level 0: the tests' models are small and each program
  runs a few times, so compiling is most of their time, and level 0 halves it (a tiny PGD-3
  train step: 37.6 -> 19.5 s compile, 96 -> 176 ms per step). The same computations: no test
  times anything, and the commands and benchmarks keep XLA's defaults;
- for the same reason, attack and descent loops of more than 4 steps compile rolled
  (JAXSEG_UNROLL_LIMIT; the default unrolls up to 32 on CPU, for speed per step): a 10-30 step
  attack that runs once compiles one step instead of all of them (tests/attacks: 217 -> 141 s).
  Tests of the default policy unset it; the same iterates either way (tested)."""

import os
import shutil
import tempfile

_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID", str(os.getpid()))
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(tempfile.gettempdir(),
                                                           f"jaxseg-test-cache-{_RUN}")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

os.environ.setdefault("JAXSEG_UNROLL_LIMIT", "4")

TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
if TEST_XLA_FLAGS.split("=")[0] not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()


def pytest_sessionfinish(session):
    if _OWN_CACHE and not hasattr(session.config, "workerinput"):  # the controller, at the end
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


# The longest tests run first: with two workers, one collected late leaves the other idle at the
# end (the README and RESULTS walk alone takes minutes of one worker).
LONGEST = ("test_a_fresh_clone_runs_every_readme_and_results_command",
           "test_parity_with_torchattacks",
           "test_sigterm_and_kills_at_random_points_lose_nothing",
           "test_remat_keeps_less_and_flops_grow_with_the_batch")


def pytest_collection_modifyitems(items):
    def rank(item):
        name = getattr(item, "originalname", item.name)
        return LONGEST.index(name) if name in LONGEST else len(LONGEST)
    items.sort(key=rank)
