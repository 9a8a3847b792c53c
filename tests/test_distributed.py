"""Training on a local cluster of real processes (`cluster`, `distributed`, `run_training` with a cluster).

Each test starts TensorFlow servers as processes on localhost ports; every one must be gone when
the test ends. The sizes are tiny: what is checked is the protocol (sharded tables, checkpoints
that one process restores, a lost worker, a lost parameter server, a killed coordinator), not
the figures, which `benchmarks/distributed.py` measures.
"""

import ast
import json
import os
import re
import signal
import subprocess
import sys
import threading
import tempfile
import time

import numpy as np
import pytest
import tensorflow as tf

pytestmark = pytest.mark.slow

CONFIG = {"candidate_epochs": 3, "ranker_epochs": 1, "batch_size": 64, "serving": {"num_candidates": 100}}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is dead too (its parent has not reaped it yet)
        return f.read().split(")")[-1].split()[0] != "Z"


def _wait_gone(pids, timeout_s: float = 20.0) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


def _announced_pids(text: str) -> dict[str, int]:
    found = re.search(r"\(pids (\{[^}]*\})\)", text)
    assert found, f"the cluster's process ids were not announced:\n{text[-2000:]}"
    return ast.literal_eval(found.group(1))


def _config_file(tmp_path, **changes):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**CONFIG, **changes}))
    return path


def test_bad_cluster_settings_are_refused_by_name(monkeypatch):
    from tfrs_youtube.cluster import ClusterError, LocalCluster, cluster_resolver
    from tfrs_youtube.distributed import ClusterConfig

    with pytest.raises(ValueError, match="cluster must be 'local' or 'tf-config'"):
        ClusterConfig(cluster="yarn")
    with pytest.raises(ValueError, match="cluster='tf-config'"):
        ClusterConfig(strategy="multi_worker_mirrored")
    with pytest.raises(ValueError, match="at least one worker and one parameter server"):
        LocalCluster(workers=0, ps=2)
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ClusterError, match="TF_CONFIG is not set"):
        cluster_resolver("tf-config")
    monkeypatch.setenv("TF_CONFIG", "{cluster")
    with pytest.raises(ClusterError, match="TF_CONFIG is not JSON"):
        cluster_resolver("tf-config")
    spec = {"chief": ["a:1"], "worker": ["b:1"], "ps": ["c:1"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": spec, "task": {"type": "worker", "index": 0}}))
    with pytest.raises(ClusterError, match="python -m tfrs_youtube.cluster"):
        cluster_resolver("tf-config")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"]}, "task": {"type": "chief"}}))
    with pytest.raises(ClusterError, match="needs 'worker' and 'ps' tasks"):
        cluster_resolver("tf-config")


def _in_child(check: str, examples) -> None:
    """Runs `check(examples)` of this module in a fresh interpreter: a process that was a cluster's
    coordinator stays connected to it, so the pytest process must not become one."""
    done = subprocess.run([sys.executable, __file__, check, examples.directory], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    assert done.stdout.strip().splitlines()[-1] == f"{check}: ok"


def test_the_video_table_is_split_over_the_parameter_servers_and_restores_whole(tiny_examples):
    _in_child("sharded_table_restores_whole", tiny_examples)


def test_a_worker_killed_mid_run_does_not_stop_it(tiny_examples):
    _in_child("worker_killed_mid_run", tiny_examples)


def sharded_table_restores_whole(tiny_examples):
    from tfrs_youtube.distributed import ClusterConfig, Distribution
    from tfrs_youtube.runs import create_variables
    from tfrs_youtube.training import TrainConfig, build_models, train

    config = TrainConfig(candidate_epochs=1, batch_size=128)
    untrained = build_models(tiny_examples, config).embeddings.video.embedding.embeddings.numpy()
    # The tiny video table is 77 KB: shard anything above 16 KB, so that it splits. (Everything
    # runs inside the cluster's lifetime: once its coordinator, a process stays connected to it.)
    with Distribution(ClusterConfig(workers=2, ps=2, min_shard_bytes=16 << 10)) as distribution, \
            tempfile.TemporaryDirectory(prefix="tfrs-youtube-test-") as scratch:
        pids = list(distribution.local.pids().values())
        models, info = train(tiny_examples, config, stages=("candidate",), verbose=0, say=None,
                             strategy=distribution.strategy)
        assert np.all(np.isfinite(info["candidate"]["history"]["loss"]))
        table = models.embeddings.video.embedding.embeddings
        assert isinstance(table, tf.__internal__.distribute.ShardedVariable)
        devices = sorted(tf.DeviceSpec.from_string(v.device).to_string() for v in table.variables)
        assert [d.split("/device")[0] for d in devices] == ["/job:ps/replica:0/task:0", "/job:ps/replica:0/task:1"]
        rows = [int(v.shape[0]) for v in table.variables]
        assert sum(rows) == table.shape[0] and abs(rows[0] - rows[1]) <= 1  # about 1/P each
        trained = np.concatenate([v.numpy() for v in table.variables])
        assert not np.allclose(trained, untrained)
        path = tf.train.Checkpoint(embeddings=models.embeddings, candidate=models.candidate).write(
            os.path.join(scratch, "model"))

        # One process (no strategy) restores the coordinator's checkpoint: the table whole.
        single = build_models(tiny_examples, config)
        create_variables(single, tiny_examples, ranker=False)
        status = tf.train.Checkpoint(embeddings=single.embeddings, candidate=single.candidate).read(path)
        status.assert_existing_objects_matched()
        status.expect_partial()
        np.testing.assert_array_equal(single.embeddings.video.embedding.embeddings.numpy(), trained)
    assert not _wait_gone(pids), "cluster processes outlived the cluster"


def worker_killed_mid_run(tiny_examples):
    from tfrs_youtube.distributed import ClusterConfig, Distribution
    from tfrs_youtube.training import TrainConfig, train

    config = TrainConfig(candidate_epochs=4, batch_size=32)
    killed = {}

    class KillAWorker(tf.keras.callbacks.Callback):
        """In the second epoch, while steps are in flight, SIGKILLs worker 1."""

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                def kill():
                    distribution.local.processes[("worker", 1)].send_signal(signal.SIGKILL)
                    killed["at"] = time.monotonic()
                threading.Timer(0.3, kill).start()

    with Distribution(ClusterConfig(workers=2, ps=2)) as distribution:
        pids = list(distribution.local.pids().values())
        models, info = train(tiny_examples, config, stages=("candidate",), verbose=0, say=None,
                             strategy=distribution.strategy, callbacks={"candidate": [KillAWorker()]})
        assert killed, "the worker was not killed during training"
        assert distribution.local.processes[("worker", 1)].poll() is not None
    losses = info["candidate"]["history"]["loss"]
    assert len(losses) == 4 and np.all(np.isfinite(losses)), losses
    assert not _wait_gone(pids)


def test_the_cli_trains_on_a_local_cluster_and_the_run_exports_and_answers(tiny_examples, tmp_path):
    from tfrs_youtube.reports import held_out_requests
    from tfrs_youtube.requests import rest_body, take

    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "tfrs_youtube", "train", "--config", _config_file(tmp_path),
                           "--data", tiny_examples.directory, "--out", run, "--cluster", "local", "--workers", "2",
                           "--ps", "2", "--verbose", "0"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    pids = _announced_pids(done.stdout + done.stderr)
    assert sorted(pids) == ["ps:0", "ps:1", "worker:0", "worker:1"]
    assert not _wait_gone(pids.values()), "cluster processes outlived training"
    info = json.loads((run / "run.json").read_text())
    assert info["cluster"] == {"cluster": "local", "strategy": "parameter_server", "workers": 2, "ps": 2}
    assert set(info["stages"]) == {"candidate", "ranker"}

    base = tmp_path / "saved_models"
    done = subprocess.run([sys.executable, "-m", "tfrs_youtube", "export", "--run", run, "--base-dir", base,
                           "--name", "tiny"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    requests, _ = held_out_requests(tiny_examples)
    body = tmp_path / "request.json"
    body.write_text(json.dumps(rest_body(take(requests, slice(0, 2)), np.arange(2))))
    done = subprocess.run([sys.executable, "-m", "tfrs_youtube", "recommend", "--model", base / "tiny_portable",
                           "--request", body], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    predictions = json.loads(done.stdout)["predictions"]
    corpus = set(tiny_examples.vocabulary("video"))
    assert len(predictions) == 2 and all(p["video_ids"] and set(p["video_ids"]) <= corpus for p in predictions)


def test_a_cluster_described_by_tf_config_trains_like_a_real_one(tiny_examples, tmp_path):
    """Each task as on its own machine: the servers run `python -m tfrs_youtube.cluster` with their
    TF_CONFIG, the chief `tfrs-youtube train --cluster tf-config` with its own."""
    from tfrs_youtube.cluster import free_port

    spec = {"chief": [f"localhost:{free_port()}"], "worker": [f"localhost:{free_port()}" for _ in range(2)],
            "ps": [f"localhost:{free_port()}" for _ in range(2)]}

    def env(job, index):
        return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                    TF_CONFIG=json.dumps({"cluster": spec, "task": {"type": job, "index": index}}))

    servers = [subprocess.Popen([sys.executable, "-m", "tfrs_youtube.cluster"], env=env(job, i),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for job in ("ps", "worker") for i in range(2)]
    try:
        run = tmp_path / "run"
        done = subprocess.run([sys.executable, "-m", "tfrs_youtube", "train", "--config",
                               _config_file(tmp_path, candidate_epochs=1), "--data", tiny_examples.directory, "--out",
                               run, "--stage", "candidate", "--cluster", "tf-config", "--verbose", "0"],
                              env=env("chief", 0), capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-4000:]
        assert all(s.poll() is None for s in servers), "a server task stopped during training"
        info = json.loads((run / "run.json").read_text())
        assert info["cluster"] == {"cluster": "tf-config", "strategy": "parameter_server", "workers": 2, "ps": 2}
        assert "candidate" in info["stages"]
    finally:
        for server in servers:
            server.kill()
            server.wait()


def _train_until_an_epoch_is_saved(tiny_examples, tmp_path):
    """Starts `train --cluster local` for a long run and returns once its first epoch is saved:
    (the command, the running coordinator, the file of its output)."""
    command = [sys.executable, "-m", "tfrs_youtube", "train", "--config",
               _config_file(tmp_path, candidate_epochs=15), "--data", tiny_examples.directory, "--out",
               tmp_path / "run", "--stage", "candidate", "--cluster", "local", "--verbose", "0"]
    log = tmp_path / "train.log"
    with open(log, "w") as out:
        coordinator = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    backup = tmp_path / "run.partial" / "backup" / "candidate" / "chief" / "checkpoint"
    deadline = time.monotonic() + 300
    while not backup.exists() and coordinator.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    if not backup.exists():
        coordinator.kill()
        coordinator.wait()
        pytest.fail(f"no epoch was saved:\n{log.read_text()[-3000:]}")
    return command, coordinator, log


def _resumes(command, tmp_path) -> None:
    done = subprocess.run([*command, "--resume"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "resuming after epoch" in done.stdout + done.stderr
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert info["stages"]["candidate"]["resumed_after_epoch"] >= 1
    assert not _wait_gone(_announced_pids(done.stdout + done.stderr).values())


def test_a_killed_coordinator_leaves_no_server_and_the_run_resumes(tiny_examples, tmp_path):
    command, coordinator, log = _train_until_an_epoch_is_saved(tiny_examples, tmp_path)
    coordinator.kill()  # SIGKILL: no handler runs, the servers only see their parent die
    coordinator.wait()
    pids = _announced_pids(log.read_text())
    assert not _wait_gone(pids.values()), "cluster processes outlived their killed coordinator"
    _resumes(command, tmp_path)


def test_a_lost_parameter_server_stops_the_run_with_a_clear_error_and_it_resumes(tiny_examples, tmp_path):
    command, coordinator, log = _train_until_an_epoch_is_saved(tiny_examples, tmp_path)
    pids = _announced_pids(log.read_text())
    os.kill(pids["ps:0"], signal.SIGKILL)
    code = coordinator.wait(timeout=300)
    text = log.read_text()
    assert code == 1, text[-3000:]
    error = [line for line in text.splitlines() if line.startswith("tfrs-youtube train: error:")]
    assert error and "parameter server was lost" in error[0] and "--resume" in error[0], text[-3000:]
    assert not _wait_gone(pids.values())
    _resumes(command, tmp_path)


def test_mirrored_workers_train_the_same_model(tiny_examples, tmp_path):
    """Two copies of one training program, each with its TF_CONFIG, all-reduce every step."""
    from tfrs_youtube.cluster import free_port

    spec = {"worker": [f"localhost:{free_port()}", f"localhost:{free_port()}"]}
    workers = [subprocess.Popen(
        [sys.executable, __file__, "mirrored_worker", tiny_examples.directory], stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2",
                 TF_CONFIG=json.dumps({"cluster": spec, "task": {"type": "worker", "index": i}})))
        for i in range(2)]
    try:
        outputs = [w.communicate(timeout=600)[0] for w in workers]
    finally:
        for w in workers:
            w.kill()
    assert [w.returncode for w in workers] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    results = [json.loads(o.strip().splitlines()[-2]) for o in outputs]
    assert results[0]["losses"] == results[1]["losses"], results  # one model, stepped together
    assert len(results[0]["losses"]["candidate"]) == 2 and np.all(np.isfinite(results[0]["losses"]["candidate"]))
    assert [r["describe"]["workers"] for r in results] == [2, 2]
    assert all(r["table"] == "MirroredVariable" for r in results), results  # a whole copy on each worker


def mirrored_worker(tiny_examples):
    from tfrs_youtube.distributed import ClusterConfig, Distribution
    from tfrs_youtube.training import TrainConfig, train

    config = TrainConfig(candidate_epochs=2, ranker_epochs=1, batch_size=128)
    with Distribution(ClusterConfig(cluster="tf-config", strategy="multi_worker_mirrored")) as distribution:
        models, info = train(tiny_examples, config, verbose=0, say=None, strategy=distribution.strategy)
        print(json.dumps({"losses": {stage: figures["history"]["loss"] for stage, figures in info.items()},
                          "describe": distribution.describe(),
                          "table": type(models.embeddings.video.embedding.embeddings).__name__}), flush=True)


if __name__ == "__main__":
    import tfrs_youtube  # noqa: F401  (Keras 2 first)
    from tfrs_youtube.pipeline import ExampleSet

    globals()[sys.argv[1]](ExampleSet(sys.argv[2]))
    print(f"{sys.argv[1]}: ok", flush=True)
