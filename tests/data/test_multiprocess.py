"""A real two-process JAX run on 127.0.0.1: each process loads its own shard (from
jax.process_index / process_count) and the global batch is assembled with
jax.make_array_from_process_local_data."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jaxseg.data import Shard, SyntheticScenes, train_loader
from tests.helpers import multiprocess, paths
from tests.helpers.multiprocess import free_port

WORKER = textwrap.dedent("""
    import json, sys
    import jax
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    port, process_id = sys.argv[1], int(sys.argv[2])
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id,
                               initialization_timeout=60)
    from jaxseg.data import SyntheticScenes, to_global, train_loader

    ds = SyntheticScenes("train", size=(16, 16), num_examples=24)
    loader = train_loader(ds, 8, 16, seed=4)  # shard from jax.process_index / process_count
    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharding = NamedSharding(mesh, P("data"))
    steps = []
    for batch in [next(loader) for _ in range(3)]:
        arrays = to_global(batch, sharding)
        local = [np.asarray(s.data) for s in arrays["index"].addressable_shards]
        steps.append({"shape": list(arrays["image"].shape), "local": batch["index"].tolist(),
                      "addressable": np.concatenate(local).tolist()})
    print("RESULT " + json.dumps({"process": jax.process_index(),
                                  "count": jax.process_count(), "steps": steps}), flush=True)
    jax.distributed.shutdown()
""")


@pytest.mark.slow
def test_two_jax_processes_load_disjoint_covering_shards(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = free_port()
    repo = str(paths.REPO)
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": repo,
           "XLA_FLAGS": multiprocess.xla_flags(1)}
    procs = [subprocess.Popen([sys.executable, str(script), str(port), str(i)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
        line = next(l for l in out.splitlines() if l.startswith("RESULT "))
        results.append(json.loads(line[len("RESULT "):]))
    results.sort(key=lambda r: r["process"])
    assert [r["count"] for r in results] == [2, 2]

    reference = train_loader(SyntheticScenes("train", size=(16, 16), num_examples=24), 8, 16,
                             seed=4, shard=Shard(0, 1))
    seen = []
    for step in range(3):
        parts = [r["steps"][step] for r in results]
        for part in parts:
            assert part["shape"] == [8, 16, 16, 3]  # the global batch
            assert part["addressable"] == part["local"]  # this process holds its own rows
            assert len(part["local"]) == 4
        stacked = parts[0]["local"] + parts[1]["local"]
        np.testing.assert_array_equal(stacked, next(reference)["index"])
        seen.extend(stacked)
    assert sorted(seen) == list(range(24))  # one epoch: disjoint and covering
