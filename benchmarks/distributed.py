"""One process against a local cluster of parameter servers, on the same examples and steps.

    python benchmarks/distributed.py --json OUT.json [--watches 1000000] [--videos 100000]
        [--workers 2] [--ps 2] [--steps N]

A synthetic log of about `--watches` watches over `--videos` videos (users = watches / 40, as in
`benchmarks/scaling.py`) goes through the example pipeline once. The candidate generator (the
demo's settings: batch 512, 256 sampled negatives, row-wise table updates) then trains for the
same number of steps (default: one epoch of the training examples) twice, each in a process of
its own:

- `single`: `model.fit` in one process;
- `cluster`: `tfrs-youtube`'s local cluster (`distributed.Distribution`): this process the
  coordinator, `--workers` workers and `--ps` parameter servers as processes on this machine,
  the video table sharded over the parameter servers; the trained model is checkpointed and
  restored into a single-process model, as `tfrs-youtube export` would read it.

Both are scored on the same held-out next watch of every user (the pipeline's time split:
full-corpus ranking, history excluded): HR@10 with its binomial standard error, HR@100.
`examples_per_s` is training examples over the wall time of `fit`; `peak_rss_gb` each process's
peak resident memory (the cluster's per task: the coordinator is "chief"); `ps_table_bytes`
the bytes of the video table each parameter server holds (its shards; the optimizer's two Adam
moments add twice as much beside them).

OUT.json: {"single": {"HR@10", "HR@10_se", "HR@100", "examples_per_s", "peak_rss_gb"},
"cluster": {"workers", "ps", "HR@10", "HR@10_se", "HR@100", "examples_per_s", "peak_rss_gb":
{task: GB}}, "ps_table_bytes": [bytes per parameter server], ...}. Run it alone: on 2 cores the
cluster's five processes share them, so its examples/s says what the protocol costs here, not
what more machines would give (docs/scale.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)

KS = (10, 100)


def _config():
    from scaling import _config as scaling_config

    return scaling_config()


def _rss_gb(pid: int) -> float:
    """Peak resident memory of a live process (VmHWM), in GB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def _score(candidate, examples) -> dict:
    import numpy as np

    from tfrs_youtube import retrieval_report

    report = retrieval_report(candidate, examples, "test", KS, baselines=False)["tfrs_youtube"]
    users = examples.num_records("retrieval", "test")
    hr = float(report["HR@10"])
    return {"HR@10": round(hr, 4), "HR@10_se": round(float(np.sqrt(hr * (1 - hr) / max(users, 1))), 4),
            "HR@100": round(float(report["HR@100"]), 4), "test_examples": users}


def _fit(models, examples, config, steps: int) -> float:
    from tfrs_youtube import candidate_features, candidate_optimizer
    from tfrs_youtube.training import fit_input

    model = models.candidate
    model.topk = None  # training only: the streaming top-K metric is for validation
    with models.scope():
        model.compile(optimizer=candidate_optimizer(models, config))
    train, _ = fit_input(models, examples, "retrieval", "train", config.batch_size, config.seed,
                               candidate_features(models.embeddings))
    if models.strategy is None:
        train = train.repeat()
    started = time.perf_counter()
    model.fit(train, epochs=1, steps_per_epoch=steps, verbose=2)
    return time.perf_counter() - started


def single(examples_dir: str, steps: int) -> dict:
    import tensorflow as tf

    from tfrs_youtube import build_models, ExampleSet

    config = _config()
    examples = ExampleSet(examples_dir)
    tf.keras.utils.set_random_seed(config.seed)
    models = build_models(examples, config)
    seconds = _fit(models, examples, config, steps)
    return {**_score(models.candidate, examples), "examples_per_s": round(steps * config.batch_size / seconds),
            "train_s": round(seconds, 1), "steps": steps,
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def cluster(examples_dir: str, steps: int, workers: int, ps: int) -> dict:
    import numpy as np
    import tensorflow as tf

    from tfrs_youtube import build_models, ClusterConfig, Distribution, ExampleSet
    from tfrs_youtube.runs import create_variables

    config = _config()
    examples = ExampleSet(examples_dir)
    tf.keras.utils.set_random_seed(config.seed)
    scratch = tempfile.mkdtemp(prefix="tfrs-youtube-distributed-")
    try:
        with Distribution(ClusterConfig(workers=workers, ps=ps)) as distribution:
            models = build_models(examples, config, distribution.strategy)
            seconds = _fit(models, examples, config, steps)
            table = models.embeddings.video.embedding.embeddings
            shards = getattr(table, "variables", [table])
            ps_bytes = [0] * ps
            for shard in shards:
                spec = tf.DeviceSpec.from_string(shard.device)
                if spec.job == "ps":
                    ps_bytes[spec.task] += int(np.prod(shard.shape)) * shard.dtype.size
            rss = {"chief": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
            rss.update({task: _rss_gb(pid) for task, pid in distribution.local.pids().items()})
            checkpoint = tf.train.Checkpoint(embeddings=models.embeddings, candidate=models.candidate)
            path = checkpoint.write(os.path.join(scratch, "model"))
            # One process's model restores the coordinator's checkpoint (the sharded table as one
            # tensor), as evaluation and export do. (Inside the cluster's lifetime: once its
            # coordinator, this process stays connected to it.)
            restored = build_models(examples, config)
            create_variables(restored, examples, ranker=False)
            status = tf.train.Checkpoint(embeddings=restored.embeddings, candidate=restored.candidate).read(path)
            status.assert_existing_objects_matched()
            status.expect_partial()
            score = _score(restored.candidate, examples)
        return {"workers": workers, "ps": ps, **score,
                "examples_per_s": round(steps * config.batch_size / seconds), "train_s": round(seconds, 1),
                "steps": steps, "peak_rss_gb": {k: round(v, 2) for k, v in rss.items()},
                "video_table_shards": len(shards), "ps_table_bytes": ps_bytes,
                "video_table_bytes": int(np.prod(table.shape)) * 4}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _child(*args) -> dict:
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--step", *map(str, args)],
                          stdout=subprocess.PIPE, text=True)
    if done.returncode:
        raise RuntimeError(f"step {args} failed (exit {done.returncode})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", help="where to write the results")
    parser.add_argument("--watches", type=int, default=1_000_000)
    parser.add_argument("--videos", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ps", type=int, default=2)
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: one epoch)")
    parser.add_argument("--step", nargs="+", help=argparse.SUPPRESS)  # one measurement, in a child process
    args = parser.parse_args(argv)
    if args.step:
        kind, examples_dir, steps = args.step[0], args.step[1], int(args.step[2])
        result = single(examples_dir, steps) if kind == "single" else cluster(
            examples_dir, steps, int(args.step[3]), int(args.step[4]))
        print(json.dumps(result), flush=True)
        return result
    if not args.json:
        parser.error("--json is required")

    from scaling import WATCHES_PER_USER, build, write_log

    scratch = tempfile.mkdtemp(prefix="tfrs-youtube-distributed-")
    try:
        log = os.path.join(scratch, "log")
        tables = write_log(log, max(1, args.watches // WATCHES_PER_USER), args.videos, seed=0)
        examples_dir = os.path.join(scratch, "examples")
        built = build(log, examples_dir, workers=1)
        shutil.rmtree(log)
        records = built["records"]["retrieval/train"]
        steps = args.steps or -(-records // _config().batch_size)
        print(json.dumps({"log": tables, "training_examples": records, "steps": steps}), flush=True)
        one = _child("single", examples_dir, steps)
        print(json.dumps({"single": one}), flush=True)
        many = _child("cluster", examples_dir, steps, args.workers, args.ps)
        print(json.dumps({"cluster": many}), flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = {"single": one, "cluster": {k: v for k, v in many.items() if k != "ps_table_bytes"},
              "ps_table_bytes": many["ps_table_bytes"], "watches": tables["watches"], "videos": args.videos,
              "training_examples": records, "steps": steps,
              "batch_size": _config().batch_size, "hr10_difference_in_se": round(
                  abs(one["HR@10"] - many["HR@10"]) / max((one["HR@10_se"] ** 2 + many["HR@10_se"] ** 2) ** 0.5, 1e-9), 2)}
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
