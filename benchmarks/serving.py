"""Serving latency, ScaNN recall and export size of the two-stage SavedModel, and a load test.

    python benchmarks/serving.py --json OUT.json [--sizes 10000,100000,1000000] [--dims 64,256]
        [--trained-videos 1000000]

For each d in `--dims` a system is trained on a synthetic log of 10,000 videos (embedding width
d; short training: this measures serving, not quality). For each corpus size the trained video
vectors are extended with synthetic ones (a trained vector plus noise, renormalised, so the
corpus keeps the clustered shape real embeddings have; the extra ids are out of vocabulary for
the ranker), and the served chain is built and exported with `export_two_stage` (ScaNN plus the
portable twin on the partitioned index, `ivf.PartitionedIndex`, its probes chosen on 1,000 other
test users' vectors), and once more with exact search (the portable exact model), then loaded
back with `tf.saved_model.load` as a server would. Such a corpus is easy for a partitioned index
(its vectors are near-copies of 10,000 trained ones); `--trained-videos N` adds rows of a harder
one: a system trained on a log of N videos (d = the first of `--dims`), its own vectors the corpus
(`corpus_kind` "trained"; the other rows' is "noisy_copies").

Per row, on real users' requests (batch 1, after warm-up, `--repeats` calls each):
- `scann_recall_at_100`: share of the exact top-100 by dot product found in ScaNN's top-100;
- `retrieve_p50_ms` / `retrieve_p99_ms`: the `retrieve` signature (user tower + top-300; it takes
  the user tower's inputs only);
- `portable_retrieve_p50_ms` (and `exact_retrieve_p50_ms`, the same figure): the same signature
  of the portable exact model (MatMul + TopK), timed in blocks interleaved with ScaNN's and the
  partitioned index's so that all see the same load;
- `ivf_retrieve_p50_ms`, `ivf_recall_at_100`: the portable partitioned index's `retrieve`, and
  its share of the exact top-100 (on the timed users, not the ones its probes were chosen on);
  `ivf_speedup_vs_exact` is the ratio of the two p50s;
- `serving_default_p50_ms` / `_p99_ms`: the whole chain (retrieve 300, rank them, return 25);
- `export_mb`: size of the ScaNN export (`portable_export_mb`, the exact one, and
  `ivf_export_mb` beside it).

The load test (`--load-threads` threads x `--load-requests` requests each, one loaded model: the
largest corpus at the first d) mixes good requests with bad ones (NaN ages, wrong rank, batch
mismatch, wrong dtype, unknown ids); every good answer must equal the answer computed before the
test, every bad one must be refused, and resident memory must stay flat. It reports throughput.

`--inter-op-threads N` sizes TensorFlow's inter-op thread pool as a server would
(`--tensorflow_inter_op_parallelism` in TF Serving); the default, 0, is TensorFlow's own choice.
On this 2-core machine 1 made batch-1 `retrieve` faster in most runs and the load test's
throughput lower (README, Serving).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tfrs_youtube  # noqa: E402,F401  (Keras 2 first)
import tensorflow as tf  # noqa: E402
from tfrs_youtube import (  # noqa: E402
    as_tensors, exact_top_k, export_two_stage, generate_event_log, held_out_requests, item_vectors,
    read_metadata, ServingConfig, SyntheticConfig, take_requests, train_two_stage, TrainConfig,
    TwoStageRecommender,
)

NUM_CANDIDATES, K = 300, 25


def rss_mb() -> float:
    """Current resident set size (Linux /proc), in MB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def train_system(dim: int, seed: int, num_videos: int = 10_000):
    # A log of many videos needs many users for most of them to be watched at all.
    log = generate_event_log(SyntheticConfig(num_users=max(3000, num_videos // 20), num_videos=num_videos, seed=seed))
    config = TrainConfig(candidate_epochs=2, ranker_epochs=1, seed=seed)
    config.examples.split = "time"
    config.embeddings.video_dim = config.embeddings.token_dim = dim
    config.serving = ServingConfig(num_candidates=NUM_CANDIDATES, k=K)
    return train_two_stage(log, config, verbose=0)


def extended_corpus(system, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The trained videos' ids and vectors, then synthetic ones near random trained ones, up to `size`."""
    ids = np.asarray(system.embeddings.video.vocabulary, dtype=object)
    trained = item_vectors(system.candidate_generator)
    if size <= len(ids):
        return ids[:size], trained[:size]
    rng = np.random.default_rng(seed)
    extra = size - len(ids)
    base = rng.integers(0, len(ids), extra)
    vectors = trained[base] + rng.normal(scale=0.5 / np.sqrt(trained.shape[1]), size=(extra, trained.shape[1]))
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return (np.r_[ids, np.array([f"x{j:07d}" for j in range(extra)], dtype=object)],
            np.concatenate([trained, vectors.astype(np.float32)]).astype(np.float32))


CALIBRATION_USERS = 1000


def requests_of(system, n: int) -> tuple[list[dict[str, tf.Tensor]], dict[str, tf.Tensor]]:
    """`n` test users' requests, one at a time, and the next `CALIBRATION_USERS` as one batch (the
    user vectors the partitioned index chooses its probes on: never the measured users)."""
    requests, _ = held_out_requests(system.examples)
    total = len(requests["request_time"])
    if total < n + 20:
        raise ValueError(f"{total} test users: --users {n} leaves fewer than 20 to tune the index on")
    one_by_one = [as_tensors(take_requests(requests, slice(i, i + 1))) for i in range(n)]
    return one_by_one, as_tensors(take_requests(requests, slice(n, n + CALIBRATION_USERS)))


def timed(fn, requests, repeats: int) -> tuple[float, float]:
    for r in requests[:5]:
        fn(**r)  # warm-up
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        fn(**requests[i % len(requests)])
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1e3), float(np.percentile(times, 99) * 1e3)


def timed_interleaved(signatures: dict, requests, repeats: dict[str, int], rounds: int = 10
                      ) -> dict[str, tuple[float, float]]:
    """(p50, p99) in ms of each named signature, timed in `rounds` interleaved blocks: on a shared
    machine the load changes by the second, and a speed-up is only meaningful if every side saw
    the same load.

    Each block starts with a few untimed calls, so that each side is timed warm, as a server
    running it alone would run it: the exact model streams the whole corpus (256 MB at 1M x 64)
    through the caches and evicts the other sides' tables and indexes from them.
    """
    times = {name: [] for name in signatures}
    for block in range(rounds):
        for name, f in signatures.items():
            n = max(1, repeats[name] // rounds)
            for r in requests[-3:]:
                f(**r)  # warm-up, untimed
            for i in range(n):
                request = requests[(block * n + i) % len(requests)]
                started = time.perf_counter()
                f(**request)
                times[name].append(time.perf_counter() - started)
    return {k: (float(np.median(v) * 1e3), float(np.percentile(v, 99) * 1e3)) for k, v in times.items()}


def dir_mb(path: str) -> float:
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files) / 2**20


def bad_variants(request: dict[str, tf.Tensor]) -> list[dict[str, tf.Tensor]]:
    nan = float("nan")
    return [
        dict(request, watch_ages_s=request["watch_ages_s"] * nan),
        dict(request, watch_history=request["watch_history"][:, 0]),
        dict(request, age=tf.concat([request["age"], request["age"]], 0)),
        dict(request, age=tf.constant(["x"])),
    ]


def load_test(model, requests, threads: int, per_thread: int) -> dict:
    """Mixed good and bad requests from `threads` threads against one loaded model."""
    serve = model.signatures["serving_default"]
    expected = [serve(**r)["video_ids"].numpy() for r in requests]
    unknown = dict(requests[0], watch_history=tf.fill(tf.shape(requests[0]["watch_history"]), "no-such-video"))
    unknown_expected = serve(**unknown)["video_ids"].numpy()
    counts = {"good": 0, "wrong_answers": 0, "refused_bad": 0, "accepted_bad": 0, "crashes": 0}
    lock = threading.Lock()
    memory = [rss_mb()]

    def worker(t: int):
        rng = np.random.default_rng(t)
        local = dict.fromkeys(counts, 0)
        for i in range(per_thread):
            j = int(rng.integers(len(requests)))
            kind = rng.random()
            try:
                if kind < 0.7:
                    ok = np.array_equal(serve(**requests[j])["video_ids"].numpy(), expected[j])
                    local["good" if ok else "wrong_answers"] += 1
                elif kind < 0.8:
                    ok = np.array_equal(serve(**unknown)["video_ids"].numpy(), unknown_expected)
                    local["good" if ok else "wrong_answers"] += 1
                else:
                    bad = bad_variants(requests[j])[int(rng.integers(4))]
                    try:
                        serve(**bad)
                        local["accepted_bad"] += 1
                    except (tf.errors.InvalidArgumentError, TypeError, ValueError):
                        local["refused_bad"] += 1
            except Exception:  # noqa: BLE001 - anything else is a crash of the serving path
                local["crashes"] += 1
            if t == 0 and i % 100 == 0:
                memory.append(rss_mb())
        with lock:
            for key, value in local.items():
                counts[key] += value

    started = time.perf_counter()
    workers = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    memory.append(rss_mb())
    total = threads * per_thread
    return dict(counts, threads=threads, requests=total, seconds=round(elapsed, 2),
                throughput_rps=round(total / elapsed, 1), rss_mb_start=round(memory[0], 1),
                rss_mb_end=round(memory[-1], 1), rss_mb_max=round(max(memory), 1),
                rss_growth_after_first_quarter_mb=round(memory[-1] - memory[max(1, len(memory) // 4)], 1))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", required=True)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--dims", default="64,256")
    parser.add_argument("--repeats", type=int, default=300, help="timed calls per signature")
    parser.add_argument("--users", type=int, default=200, help="distinct requests (test users)")
    parser.add_argument("--load-threads", type=int, default=8)
    parser.add_argument("--load-requests", type=int, default=1000, help="requests per thread in the load test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--trained-videos", default="",
                        help="comma-separated corpus sizes of trained-corpus rows (default: none)")
    parser.add_argument("--out-dir", default=None,
                        help="keep the exports here (default: a temporary directory; exports removed once measured)")
    parser.add_argument("--num-leaves", type=int, default=None, help="override ScaNN's leaves (default ~sqrt(N))")
    parser.add_argument("--leaves-to-search", type=int, default=None, help="override the leaves searched")
    parser.add_argument("--reorder", type=int, default=None, help="override the candidates re-scored exactly")
    parser.add_argument("--inter-op-threads", type=int, default=0,
                        help="TensorFlow's inter-op thread pool, as a server sets it (0: TensorFlow's default)")
    args = parser.parse_args(argv)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op_threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    dims = [int(d) for d in args.dims.split(",")]
    args.trained_videos = [int(v) for v in args.trained_videos.split(",") if v]
    tf.keras.utils.set_random_seed(args.seed)
    if args.out_dir:
        return run(args, sizes, dims, args.out_dir, keep_exports=True)
    # A full run exports 3.2 GB (2.2 GB of it the 1M, d = 256 pair): without --out-dir each export
    # is deleted once measured, and the directory when the run ends, even on an error, so that
    # repeated runs on a shared machine do not fill its disk.
    with tempfile.TemporaryDirectory(prefix="tfrs-youtube-serving-") as out_dir:
        return run(args, sizes, dims, out_dir, keep_exports=False)


def recall_at_100(model, user_requests, user_vectors: np.ndarray, ids: np.ndarray, vectors: np.ndarray) -> float:
    """Share of the exact top-100 by dot product found in the loaded model's `retrieve` top-100."""
    retrieved = np.concatenate([model.signatures["retrieve"](**r)["video_ids"].numpy()[:, :100]
                                for r in user_requests])
    exact = exact_top_k(user_vectors, vectors, 100)
    ids = ids.astype(str)
    return float(np.mean([len(set(a.astype(str)) & set(ids[e])) / 100 for a, e in zip(retrieved, exact)]))


def measure_corpus(args, system, requests, calibration, ids, vectors, out_dir, name, keep_exports, kind) -> tuple:
    """One row: ScaNN, the partitioned index and exact search over the corpus (ids, vectors)."""
    size, dim = len(ids), vectors.shape[1]
    started = time.perf_counter()
    serving = dataclasses.replace(system.config.serving, num_leaves=args.num_leaves,
                                  leaves_to_search=args.leaves_to_search, reorder=args.reorder,
                                  portable_index="ivf")
    recommender = TwoStageRecommender(system.candidate_generator, system.ranker, serving, corpus_ids=ids,
                                      video_vectors=vectors)
    build_s = time.perf_counter() - started
    # retrieve and user_embedding take the user tower's inputs only.
    user_requests = [recommender.user_request(r) for r in requests]
    user_vectors = np.concatenate([recommender.user_embedding(r)["user_embedding"].numpy() for r in user_requests])
    calibration_vectors = recommender.user_embedding(recommender.user_request(calibration))["user_embedding"].numpy()
    warmup = [{k: v.numpy() for k, v in requests[0].items()}]
    started = time.perf_counter()
    paths = export_two_stage(recommender, out_dir, name, recall_user_vectors=calibration_vectors,
                             warmup_requests=warmup)
    export_s = time.perf_counter() - started
    exact_recommender = TwoStageRecommender(system.candidate_generator, system.ranker,
                                            dataclasses.replace(serving, index="exact"), corpus_ids=ids,
                                            video_vectors=vectors)
    paths["exact"] = export_two_stage(exact_recommender, out_dir, name + "_exact", warmup_requests=warmup)["exact"]
    del exact_recommender
    models = {variant: tf.saved_model.load(path) for variant, path in paths.items()}
    scann_recall = recall_at_100(models["scann"], user_requests, user_vectors, ids, vectors)
    ivf_recall = recall_at_100(models["portable"], user_requests, user_vectors, ids, vectors)
    timing = timed_interleaved({variant: models[variant].signatures["retrieve"] for variant in
                                ("scann", "portable", "exact")}, user_requests,
                               {"scann": args.repeats, "portable": args.repeats, "exact": max(20, args.repeats // 5)})
    chain = timed(models["scann"].signatures["serving_default"], requests, args.repeats)
    ivf_index = read_metadata(paths["portable"])["index"]
    row = {"corpus": size, "dim": dim, "corpus_kind": kind, "scann_recall_at_100": round(scann_recall, 4),
           "retrieve_p50_ms": round(timing["scann"][0], 3), "retrieve_p99_ms": round(timing["scann"][1], 3),
           "portable_retrieve_p50_ms": round(timing["exact"][0], 3),
           "exact_retrieve_p50_ms": round(timing["exact"][0], 3),
           "ivf_retrieve_p50_ms": round(timing["portable"][0], 3),
           "ivf_retrieve_p99_ms": round(timing["portable"][1], 3),
           "ivf_recall_at_100": round(ivf_recall, 4),
           "ivf_speedup_vs_exact": round(timing["exact"][0] / timing["portable"][0], 1),
           "serving_default_p50_ms": round(chain[0], 3), "serving_default_p99_ms": round(chain[1], 3),
           "export_mb": round(dir_mb(paths["scann"]), 1),
           "portable_export_mb": round(dir_mb(paths["exact"]), 1),
           "ivf_export_mb": round(dir_mb(paths["portable"]), 1),
           "speedup_vs_portable": round(timing["exact"][0] / timing["scann"][0], 1),
           "index": {k: v for k, v in recommender.index_settings.items()}, "index_build_s": round(build_s, 1),
           "ivf_index": ivf_index, "export_s": round(export_s, 1)}
    scann_model = models["scann"]
    del models, recommender
    if not keep_exports:
        for path in paths.values():  # <out>/<name>/<version>: the whole model directory
            shutil.rmtree(os.path.dirname(path))
    return row, scann_model


def run(args, sizes: list[int], dims: list[int], out_dir: str, keep_exports: bool) -> dict:
    rows, load = [], None
    for dim in dims:
        print(f"training a d={dim} system", flush=True)
        system = train_system(dim, args.seed)
        requests, calibration = requests_of(system, args.users)
        for size in sizes:
            ids, vectors = extended_corpus(system, size, args.seed)
            row, scann_model = measure_corpus(args, system, requests, calibration, ids, vectors, out_dir,
                                              f"d{dim}_n{size}", keep_exports, "noisy_copies")
            rows.append(row)
            print(json.dumps(row), flush=True)
            if load is None and dim == dims[0] and size == max(sizes):
                print(f"load test: {args.load_threads} threads x {args.load_requests} requests", flush=True)
                load = load_test(scann_model, requests, args.load_threads, args.load_requests)
                print(json.dumps(load), flush=True)
            del scann_model
    for videos in args.trained_videos:
        print(f"training a d={dims[0]} system on a log of {videos} videos", flush=True)
        system = train_system(dims[0], args.seed, num_videos=videos)
        requests, calibration = requests_of(system, args.users)
        ids = np.asarray(system.embeddings.video.vocabulary, dtype=object)
        row, scann_model = measure_corpus(args, system, requests, calibration, ids, item_vectors(
            system.candidate_generator), out_dir, f"trained_d{dims[0]}_n{len(ids)}", keep_exports, "trained")
        rows.append(row)
        print(json.dumps(row), flush=True)
        del scann_model
    result = {"rows": rows, "load_test": load,
              "config": {"num_candidates": NUM_CANDIDATES, "k": K, "repeats": args.repeats, "users": args.users,
                         "serving": dataclasses.asdict(ServingConfig(num_candidates=NUM_CANDIDATES, k=K)),
                         "inter_op_threads": args.inter_op_threads,
                         "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
