"""The machines of a distributed training run: TensorFlow servers on localhost, or a real cluster.

The paper's tables (a million videos and a million search tokens at 256 dimensions) and its
billions of examples need more than one machine. TensorFlow's own engine runs that:
parameter servers hold the variables (the big tables sharded across them), workers run the
training steps, and a coordinator (the chief: the process that calls `model.fit`) hands steps
to the workers (`tf.distribute.ParameterServerStrategy`). Every task but the coordinator is a
plain `tf.distribute.Server`: it runs whatever the coordinator sends it.

`LocalCluster` starts those servers as processes of this machine on free localhost ports, for
trying the distributed path and for tests; each child is tied to its parent (it dies with it)
and is ended by its own process id. On a real cluster each task runs `python -m
tfrs_youtube.cluster` with its `TF_CONFIG` (one pod or machine per task) and the chief runs
`tfrs-youtube train --cluster tf-config`; `cluster_resolver` reads either.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import tensorflow as tf

# Threads per server. A parameter server with one inter-op thread hangs before the first step
# (it waits on itself); two are enough for a local cluster.
SERVER_THREADS = 2


class ClusterError(ValueError):
    """A cluster task could not start, or was lost."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    # Linux: the child gets SIGKILL when the process that started it dies, however it dies, so
    # a killed coordinator leaves no servers behind.
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class LocalCluster:
    """`workers` workers and `ps` parameter servers as processes of this machine; this process is
    the chief (the coordinator).

    Use as a context manager: the servers start on entry and are killed on exit, by their own
    process ids, whether training finished or failed.

    Args:
      workers: worker tasks (at least 1).
      ps: parameter-server tasks (at least 1).
      log_dir: where each task's output goes (`<job>-<index>.log`); by default it is discarded.
    """

    def __init__(self, workers: int = 2, ps: int = 2, log_dir: str | None = None):
        if workers < 1 or ps < 1:
            raise ValueError(f"a cluster needs at least one worker and one parameter server, got "
                             f"workers={workers}, ps={ps}")
        self.spec = {"chief": [f"localhost:{free_port()}"],
                     "worker": [f"localhost:{free_port()}" for _ in range(workers)],
                     "ps": [f"localhost:{free_port()}" for _ in range(ps)]}
        self.log_dir = log_dir
        self.processes: dict[tuple[str, int], subprocess.Popen] = {}

    @property
    def num_workers(self) -> int:
        return len(self.spec["worker"])

    @property
    def num_ps(self) -> int:
        return len(self.spec["ps"])

    def start(self) -> "LocalCluster":
        try:
            for job in ("ps", "worker"):
                for index in range(len(self.spec[job])):
                    self.start_task(job, index)
            for (job, index), _ in self.processes.items():
                self._wait_listening(job, index)
        except BaseException:
            self.stop()
            raise
        return self

    def start_task(self, job: str, index: int) -> subprocess.Popen:
        """Starts (or restarts, after a loss) one server task."""
        old = self.processes.get((job, index))
        if old is not None and old.poll() is None:
            raise ClusterError(f"{job}:{index} is already running (pid {old.pid})")
        out = subprocess.DEVNULL
        if self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
            out = open(os.path.join(self.log_dir, f"{job}-{index}.log"), "ab")
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
                   CUDA_VISIBLE_DEVICES="")
        process = subprocess.Popen(
            [sys.executable, "-m", "tfrs_youtube.cluster", "--cluster", json.dumps(self.spec), "--job", job,
             "--index", str(index)], stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)
        if out is not subprocess.DEVNULL:
            out.close()
        self.processes[(job, index)] = process
        return process

    def _wait_listening(self, job: str, index: int, timeout_s: float = 60.0) -> None:
        host, port = self.spec[job][index].rsplit(":", 1)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            process = self.processes[(job, index)]
            if process.poll() is not None:
                raise ClusterError(f"{job}:{index} exited with code {process.returncode} before it listened"
                                   + (f" (see {self.log_dir})" if self.log_dir else ""))
            try:
                with socket.create_connection((host, int(port)), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise ClusterError(f"{job}:{index} did not listen on {self.spec[job][index]} within {timeout_s:.0f} s")

    def kill(self, job: str, index: int) -> None:
        """SIGKILLs one task (what a lost machine looks like to the others)."""
        process = self.processes[(job, index)]
        process.kill()
        process.wait()

    def pids(self) -> dict[str, int]:
        return {f"{job}:{index}": p.pid for (job, index), p in self.processes.items()}

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
        for process in self.processes.values():
            process.wait()

    def resolver(self) -> tf.distribute.cluster_resolver.ClusterResolver:
        return tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(self.spec), task_type="chief", task_id=0, rpc_layer="grpc")

    def __enter__(self) -> "LocalCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def cluster_resolver(kind: str, local: LocalCluster | None = None) -> tf.distribute.cluster_resolver.ClusterResolver:
    """The chief's view of the cluster: "local" (a started `LocalCluster`) or "tf-config" (the
    `TF_CONFIG` environment variable of a real cluster, this process being its chief)."""
    if kind == "local":
        if local is None:
            raise ValueError("a local cluster resolver needs the started LocalCluster")
        return local.resolver()
    if kind == "tf-config":
        if "TF_CONFIG" not in os.environ:
            raise ClusterError("--cluster tf-config: TF_CONFIG is not set (it names every task of the cluster and "
                               "this one's type and index; see docs/scale.md)")
        try:
            config = json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as err:
            raise ClusterError(f"TF_CONFIG is not JSON: {err}") from None
        task = config.get("task", {})
        if not config.get("cluster", {}).get("ps") or not config.get("cluster", {}).get("worker"):
            raise ClusterError("TF_CONFIG's cluster needs 'worker' and 'ps' tasks")
        if task.get("type") not in ("chief", None):
            raise ClusterError(f"TF_CONFIG names this task {task.get('type')}:{task.get('index')}; training runs on "
                               f"the chief, and the other tasks run `python -m tfrs_youtube.cluster`")
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    raise ValueError(f"cluster must be 'local' or 'tf-config', got {kind!r}")


def serve(spec: dict, job: str, index: int) -> None:
    """Runs one worker or parameter-server task until it is killed."""
    if job not in ("worker", "ps"):
        raise ValueError(f"a server task is a worker or a ps, got {job!r}")
    server = tf.distribute.Server(
        tf.train.ClusterSpec(spec), job_name=job, task_index=index, protocol="grpc", start=True,
        config=tf.compat.v1.ConfigProto(inter_op_parallelism_threads=SERVER_THREADS))
    server.join()


def main(argv=None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Run one worker or parameter-server task of a training cluster. "
                                                 "Without --cluster, the task and cluster come from TF_CONFIG.")
    parser.add_argument("--cluster", help="the cluster spec as JSON ({job: [host:port, ...]})")
    parser.add_argument("--job", choices=("worker", "ps"))
    parser.add_argument("--index", type=int)
    args = parser.parse_args(argv)
    if args.cluster:
        spec, job, index = json.loads(args.cluster), args.job, args.index
    else:
        config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        if not config:
            parser.error("give --cluster, --job and --index, or set TF_CONFIG")
        spec, job, index = config["cluster"], config["task"]["type"], int(config["task"]["index"])
    serve(spec, job, index)


if __name__ == "__main__":
    main()
