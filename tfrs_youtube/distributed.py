"""Training across processes: the same models and `model.fit`, on `tf.distribute`.

Two strategies, for two sizes of table:

- **Parameter servers** (`ParameterServerStrategy`, the default). The big id tables are split
  row-wise over the parameter servers (a `ShardedVariable`: only tables above
  `min_shard_bytes` are split; the small ones and the dense layers each live whole on one
  server), so no process holds a whole table and the corpus can outgrow one machine's memory.
  Workers pull the rows a step reads and push that step's sparse updates; the coordinator
  (this process) schedules steps asynchronously and retries a step on another worker when its
  worker is lost.
- **Mirrored workers** (`MultiWorkerMirroredStrategy`). Every worker holds every variable and
  its optimizer slots, and the workers all-reduce their gradients every step: synchronous,
  the same numbers on every worker, but each worker must fit the whole model, and in-batch
  negatives come from each worker's own share of the batch. For tables that fit every worker.
  Every worker runs the same program with its own `TF_CONFIG` (`ClusterConfig(cluster=
  "tf-config", strategy="multi_worker_mirrored")`); worker 0 is the chief, whose checkpoints
  count.

The models are built inside the strategy's scope by the one trainer (`training.train`), which
reads its input through `training_input` here: under parameter servers each worker reads the
whole training split in its own shuffled order, repeating, and an epoch is a number of steps.
The coordinator checkpoints as a single process does (`runs`): a sharded table is saved as one
tensor, so evaluation and export restore it into the single-process models unchanged.

What does not run across processes, and what is done instead: validation during `fit` (TFRS's
streaming top-K metric cannot be sent to parameter-server workers, and mirrored workers would
sum it) and the ranker's early stopping on it; the models are evaluated after training, in one
process.
"""

from __future__ import annotations

import dataclasses

import tensorflow as tf

from tfrs_youtube.cluster import ClusterError, LocalCluster, cluster_resolver

STRATEGIES = ("parameter_server", "multi_worker_mirrored")


@dataclasses.dataclass
class ClusterConfig:
    """Where training runs.

    Args:
      cluster: "local" (servers started on this machine) or "tf-config" (a real cluster
        described by `TF_CONFIG`; this process is its chief).
      workers, ps: the local cluster's worker and parameter-server tasks.
      strategy: "parameter_server" or "multi_worker_mirrored" (see the module docstring).
      min_shard_bytes: a variable at least this large is split over the parameter servers
        (into at most one shard per server).
      log_dir: where a local cluster's tasks write their logs (default: discarded).
    """

    cluster: str = "local"
    workers: int = 2
    ps: int = 2
    strategy: str = "parameter_server"
    min_shard_bytes: int = 256 << 10
    log_dir: str | None = None

    def __post_init__(self):
        if self.cluster not in ("local", "tf-config"):
            raise ValueError(f"cluster must be 'local' or 'tf-config', got {self.cluster!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.strategy == "multi_worker_mirrored" and self.cluster != "tf-config":
            raise ValueError("strategy 'multi_worker_mirrored' runs one copy of the training program per worker, "
                             "each with its TF_CONFIG: use cluster='tf-config' in every copy (docs/distributed.md)")


def parameter_server_strategy(resolver, num_ps: int, min_shard_bytes: int) -> tf.distribute.Strategy:
    """`ParameterServerStrategy` that shards only the variables of at least `min_shard_bytes`,
    into at most `num_ps` shards (a `FixedShardsPartitioner` would split every Dense kernel too)."""
    partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=min_shard_bytes, max_shards=num_ps)
    return tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner)


class Distribution:
    """A started cluster and its strategy: a context manager that ends the local cluster's
    processes on exit (finished or failed)."""

    def __init__(self, config: ClusterConfig):
        self.config = config
        self.local: LocalCluster | None = None
        self.strategy: tf.distribute.Strategy | None = None
        self.spec: dict = {}

    def __enter__(self) -> "Distribution":
        c = self.config
        if c.strategy == "multi_worker_mirrored":
            self.strategy = tf.distribute.MultiWorkerMirroredStrategy(
                cluster_resolver=tf.distribute.cluster_resolver.TFConfigClusterResolver())
            self.spec = self.strategy.cluster_resolver.cluster_spec().as_dict()
            return self
        if c.cluster == "local":
            self.local = LocalCluster(c.workers, c.ps, log_dir=c.log_dir).start()
        try:
            resolver = cluster_resolver(c.cluster, self.local)
            self.spec = resolver.cluster_spec().as_dict()
            num_ps = len(self.spec.get("ps", []))
            self.strategy = parameter_server_strategy(resolver, num_ps, c.min_shard_bytes)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.local is not None:
            self.local.stop()

    def describe(self) -> dict:
        workers = len(self.spec.get("worker", [])) + len(self.spec.get("chief", [])) * (
            self.config.strategy == "multi_worker_mirrored")
        return {"cluster": self.config.cluster, "strategy": self.config.strategy, "workers": workers,
                "ps": len(self.spec.get("ps", []))}


def is_parameter_server(strategy) -> bool:
    return isinstance(strategy, tf.distribute.ParameterServerStrategy)


def training_input(make_dataset, strategy):
    """What `model.fit` reads under `strategy`: `make_dataset(None)` in one process (or on each
    mirrored worker, which split its records); under parameter servers a `DatasetCreator` that
    each worker calls for its own repeating stream, `make_dataset((index, workers))`.

    The workers run one traced copy of the input function, and its input context reports a
    single input pipeline (so `shard` on it would do nothing); the coordinator's worker index,
    resolved on each worker, gives each its share of every pass over the data, so that an epoch
    of steps reads each record about once, as in one process.
    """
    if not is_parameter_server(strategy):
        return split_between_workers(make_dataset(None), strategy)
    num_workers = strategy.extended._num_workers  # no public accessor in TF 2.20

    def per_worker(context: tf.distribute.InputContext) -> tf.data.Dataset:
        index = tf.distribute.coordinator.experimental_get_current_worker_index()
        return make_dataset((index, num_workers))

    return tf.keras.utils.experimental.DatasetCreator(per_worker)


def split_between_workers(data: tf.data.Dataset, strategy) -> tf.data.Dataset:
    """`data` as mirrored workers read it: split between them record by record (a split of the
    examples may hold fewer shards than there are workers, so splitting by file would fail). In
    one process, `data` itself."""
    if strategy is None or is_parameter_server(strategy):
        return data
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.with_options(options)


def lost_task_error(err: BaseException, strategy) -> ClusterError | None:
    """A clear error for a run stopped by a lost parameter server (the strategy retries a lost
    worker's steps itself; a lost server takes its variables with it), or None."""
    if not is_parameter_server(strategy):
        return None
    if isinstance(err, (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
                        tf.errors.NotFoundError)) or "PSUnavailableError" in type(err).__name__:
        return ClusterError(f"a parameter server was lost ({type(err).__name__}: {str(err).splitlines()[0][:200]}); "
                            f"the variables it held are gone, so training stopped")
    return None
