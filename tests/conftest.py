"""Suite-wide: one persistent JAX compilation cache per test run, shared by the pytest workers
and the CLIs the tests start (the same small programs compile in many tests). Set here, before
any test module imports JAX; removed when the run ends."""

import os
import shutil
import tempfile

_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID", str(os.getpid()))
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.path.join(tempfile.gettempdir(),
                                                           f"jaxseg-test-cache-{_RUN}")


def pytest_sessionfinish(session):
    if _OWN_CACHE and not hasattr(session.config, "workerinput"):  # the controller, at the end
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
