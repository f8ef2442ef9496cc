"""Issue 11, dask.distributed: a cached product (NetCDF stack) and a GeoTIFF mosaic computed by worker
processes of a ``LocalCluster`` give the same values as in-process.

Worker processes receive the task graph pickled, so this also proves the lazy mosaic reader
(``mosaic._Reader``) and xarray's NetCDF file managers travel, and that every read happens in the
workers (no file handle of this process is shared).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from .preloaded import Preloaded, preload

distributed = pytest.importorskip("distributed", reason='needs the "distributed" extra')


@pytest.fixture(scope="module")
def cached(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Preloaded]:
    yield from preload(tmp_path_factory.mktemp("distributed"))


@pytest.fixture(scope="module")
def client(cached: Preloaded) -> Iterator[distributed.Client]:
    with distributed.LocalCluster(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None,
                                  worker_dashboard_address=None) as cluster, distributed.Client(cluster) as c:
        yield c


def _main(ds):
    (var,) = [ds[name] for name in ds.data_vars if ds[name].ndim >= 3]
    return var


@pytest.mark.parametrize("label", ["ndvi_alps", "hrl_2018"])
def test_a_local_cluster_of_processes_computes_what_this_process_computes(cached, client, label):
    var = _main(cached.datasets[label])
    assert var.chunks is not None and var.data.npartitions >= 3, "several tasks to spread over the workers"
    here = var.data.compute(scheduler="sync")
    with distributed.get_task_stream(client) as stream:
        there = client.compute(var.data).result()
    assert there.dtype == here.dtype and there.shape == here.shape
    np.testing.assert_array_equal(there, here)
    assert np.isfinite(here.astype("float64")).any() if here.dtype.kind == "f" else (here != 0).any()

    # the reads ran in the two worker processes, not here
    workers = client.run(os.getpid)
    assert len(workers) == 2 and os.getpid() not in workers.values()
    ran_on = {t["worker"] for t in stream.data}
    assert ran_on and ran_on <= set(workers), "every task ran on a worker"
    assert len(stream.data) >= var.data.npartitions


def test_the_lazy_mosaic_reader_pickles(cached):
    var = _main(cached.datasets["hrl_2018"])
    graph = dict(var.data.__dask_graph__())
    readers = [getattr(v, "value", v) for v in graph.values()]
    readers = [r for r in readers if type(r).__name__ == "_Reader"]
    assert readers, "the graph holds the mosaic reader"
    again = pickle.loads(pickle.dumps(readers[0]))
    np.testing.assert_array_equal(again[:, :10, :10], readers[0][:, :10, :10])


def test_xarray_dataset_computes_on_the_cluster_as_a_whole(cached, client):
    ds = cached.datasets["ndvi_alps"]
    mean_here = float(ds["NDVI"].mean().compute(scheduler="sync"))
    mean_there = float(ds["NDVI"].mean().compute())  # the Client is the default scheduler while it lives
    assert mean_there == pytest.approx(mean_here, rel=1e-6)
    assert Path(cached.cache).is_dir()
