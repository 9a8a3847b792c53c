"""How the example pipeline and training scale with the log and the corpus, on synthetic logs.

    python benchmarks/scaling.py --json OUT.json [--watches 1000000,3000000,10000000]
        [--videos 10000,100000,1000000] [--workers 1,2]

Two sweeps, each step in a process of its own (so that one step's memory is not another's):

- **Log size** (`--watches`): a synthetic log of about that many watches (users = watches / 40,
  the first of `--videos` videos, written as 8 Parquet files per table), through the example
  pipeline once per `--workers` (`pipeline_s`: wall time of `build_examples`), then one epoch of
  the candidate generator on the examples of the first worker count, with the demo's settings
  (batch 512, 256 sampled negatives): `train_examples_per_s` (training examples over the
  epoch's wall time) and `train_peak_rss_gb` (the training process's peak resident memory).
- **Corpus size** (`--videos`): a 5,000-user log with that many videos, its examples, and the
  candidate generator's training step at the same batch and negatives: `ms_per_step` is the
  median of 200 timed steps after 20 warm-up steps (`ms_per_step_se` its standard error).

OUT.json holds {"rows": [{"watches", "videos", "workers", "pipeline_s", "train_examples_per_s",
"train_peak_rss_gb", "ms_per_step", ...}, ...]}; a key that a row does not measure is null.
Run it alone: the machine's other work moves every figure.
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

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, REPO)

WATCHES_PER_USER = 40
TABLE_SHARDS = 8
CORPUS_USERS = 5000
TIMED_STEPS, WARMUP_STEPS = 200, 20


def _config(seed: int = 0):
    from tfrs_youtube import presets

    config = presets.synthetic_demo(seed)
    config.candidate_epochs = 1
    if os.environ.get("TFRS_YOUTUBE_EMBEDDING_OPTIMIZER"):  # --embedding-optimizer, passed to each step
        config.candidate.embedding_optimizer = os.environ["TFRS_YOUTUBE_EMBEDDING_OPTIMIZER"]
    return config


def write_log(out: str, users: int, videos: int, seed: int) -> dict:
    """A synthetic log as Parquet shards; its table sizes."""
    from tfrs_youtube import generate_event_log, SyntheticConfig, write_dataset

    log = generate_event_log(SyntheticConfig(num_users=users, num_videos=videos, seed=seed))
    write_dataset(log, out, {"source": "synthetic"}, shards=TABLE_SHARDS, format="parquet")
    return {name: len(table) for name, table in log.tables().items()}


def build(data: str, out: str, workers: int) -> dict:
    from tfrs_youtube import build_examples

    config = _config()
    started = time.perf_counter()
    examples = build_examples(data, out, config.examples, seed=config.seed, workers=workers, say=None)
    return {"pipeline_s": time.perf_counter() - started, "records": examples.spec["records"]}


class _StepTimer:
    """Wall time of each training batch (a Keras callback)."""

    def __new__(cls):
        import tensorflow as tf

        class Timer(tf.keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.times = []

            def on_train_batch_begin(self, batch, logs=None):
                self.started = time.perf_counter()

            def on_train_batch_end(self, batch, logs=None):
                self.times.append(time.perf_counter() - self.started)

        return Timer()


def _compiled_candidate_generator(examples_dir: str, repeat: bool):
    """The trainer's candidate generator on these examples, compiled as the trainer compiles it,
    without the validation metric (what scales is training); with its training data."""
    from tfrs_youtube import build_models, candidate_features, candidate_optimizer, dataset, ExampleSet

    examples = ExampleSet(examples_dir)
    config = _config()
    models = build_models(examples, config)
    model = models.candidate
    model.topk = None
    model.compile(optimizer=candidate_optimizer(models, config))
    train = dataset(examples, "retrieval", "train", config.batch_size, shuffle=True, seed=config.seed,
                    features=candidate_features(models.embeddings), repeat=repeat)
    return examples, model, train


def train_epoch(examples_dir: str) -> dict:
    """One epoch of the candidate generator; examples/s and this process's peak memory."""
    examples, model, train = _compiled_candidate_generator(examples_dir, repeat=False)
    started = time.perf_counter()
    model.fit(train, epochs=1, verbose=2)  # training only: validation is not what scales
    seconds = time.perf_counter() - started
    n = examples.num_records("retrieval", "train")
    return {"train_examples_per_s": n / seconds, "train_s": seconds, "train_examples": n,
            "train_peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def step_time(examples_dir: str) -> dict:
    """Median wall time of a candidate-generator training step (after warm-up)."""
    import numpy as np

    _, model, data = _compiled_candidate_generator(examples_dir, repeat=True)
    timer = _StepTimer()
    model.fit(data, steps_per_epoch=WARMUP_STEPS + TIMED_STEPS, epochs=1, verbose=0, callbacks=[timer])
    times = np.array(timer.times[WARMUP_STEPS:]) * 1e3
    # The standard error of a median, by the normal approximation: 1.2533 x sd / sqrt(n).
    return {"ms_per_step": float(np.median(times)), "ms_per_step_se": float(1.2533 * times.std(ddof=1)
                                                                           / np.sqrt(len(times)))}


def _child(step: str, *args) -> dict:
    """Runs one step of this benchmark in a fresh process and returns its JSON."""
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--step", step, *map(str, args)],
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"step {step} {args} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json")
    parser.add_argument("--watches", default="1000000,3000000,10000000")
    parser.add_argument("--videos", default="10000,100000,1000000")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--embedding-optimizer", default=None,
                        help="the tables' optimizer (CandidateConfig.embedding_optimizer; default: the config's)")
    parser.add_argument("--work-dir", default=None, help="where logs and examples go (default: a temporary folder)")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.step:  # a child process: one step, its JSON on the last line of stdout
        fn = {"log": lambda out, u, v, s: write_log(out, int(u), int(v), int(s)),
              "build": lambda data, out, w: build(data, out, int(w)), "train": train_epoch, "steps": step_time}
        print(json.dumps(fn[args.step](*rest)))
        return {}
    if not args.json:
        parser.error("--json is required")
    if args.embedding_optimizer:
        os.environ["TFRS_YOUTUBE_EMBEDDING_OPTIMIZER"] = args.embedding_optimizer  # the steps' processes inherit it
    watches = [int(w) for w in args.watches.split(",") if w]
    videos = [int(v) for v in args.videos.split(",") if v]
    workers = [int(w) for w in args.workers.split(",") if w]
    work = args.work_dir or tempfile.mkdtemp(prefix="tfrs-youtube-scaling-")
    rows = []
    try:
        for n in watches:
            data = os.path.join(work, f"log-{n}")
            sizes = _child("log", data, n // WATCHES_PER_USER, videos[0], args.seed)
            print(json.dumps({"log": n, "tables": sizes}), flush=True)
            trained = None
            for w in workers:
                out = os.path.join(work, f"examples-{n}-{w}")
                built = _child("build", data, out, w)
                if trained is None:
                    trained = _child("train", out)
                row = {"watches": sizes["watches"], "videos": videos[0], "workers": w,
                       "pipeline_s": round(built["pipeline_s"], 1),
                       "train_examples_per_s": round(trained["train_examples_per_s"]),
                       "train_peak_rss_gb": round(trained["train_peak_rss_gb"], 2), "ms_per_step": None,
                       "impressions": sizes["impressions"], "train_examples": trained["train_examples"]}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if w != workers[0]:
                    shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(data, ignore_errors=True)
            shutil.rmtree(os.path.join(work, f"examples-{n}-{workers[0]}"), ignore_errors=True)
        for v in videos:
            data, out = os.path.join(work, f"corpus-{v}"), os.path.join(work, f"corpus-examples-{v}")
            sizes = _child("log", data, CORPUS_USERS, v, args.seed)
            built = _child("build", data, out, workers[0])
            steps = _child("steps", out)
            row = {"watches": sizes["watches"], "videos": v, "workers": workers[0],
                   "pipeline_s": round(built["pipeline_s"], 1), "train_examples_per_s": None,
                   "train_peak_rss_gb": None, "ms_per_step": round(steps["ms_per_step"], 2),
                   "ms_per_step_se": round(steps["ms_per_step_se"], 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
            shutil.rmtree(data, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    steps = {r["videos"]: r["ms_per_step"] for r in rows if r["ms_per_step"] is not None}
    result = {"rows": rows, "config": {"seed": args.seed, "watches_per_user": WATCHES_PER_USER,
                                       "corpus_users": CORPUS_USERS, "batch_size": 512, "sampled_negatives": 256,
                                       "embedding_optimizer": _config().candidate.embedding_optimizer}}
    if len(steps) > 1:
        result["ms_per_step_ratio_largest_to_smallest_corpus"] = round(steps[max(steps)] / steps[min(steps)], 2)
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result["rows"]))
    return result


if __name__ == "__main__":
    main()
