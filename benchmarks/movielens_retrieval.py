"""Candidate generation on MovieLens, beside the baselines a user would otherwise pick.

    python benchmarks/movielens_retrieval.py --data DIR --json OUT.json [--ablations]

Protocol: per user, watches (ratings) sorted by time, ties in file order; the last is the test
target, the one before it the validation target, every earlier one a training label with the
history before it. All items are ranked, the user's history excluded. Reported: HR@10, NDCG@10,
HR@50, HR@100 and training time for tfrs_youtube, the TFRS basic two-tower model and
most-popular. `--ablations` adds the variants of the README's table, scored on the validation
target (tuning never looks at the test target).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tfrs_youtube  # noqa: E402,F401  (Keras 2 first)
from tfrs_youtube.baselines import train_and_evaluate_two_tower  # noqa: E402
from tfrs_youtube import presets  # noqa: E402
from tfrs_youtube.data.examples import ExampleBuilder  # noqa: E402
from tfrs_youtube.data.movielens import load_movielens  # noqa: E402
from tfrs_youtube.evaluation import evaluate_popularity  # noqa: E402
from tfrs_youtube.training import TrainConfig, evaluate_candidates, train_candidate_generator  # noqa: E402

KS = (10, 50, 100)
REPORTED = ("HR@10", "NDCG@10", "HR@50", "HR@100")


movielens_config = presets.movielens


ABLATIONS = {
    "default": {},
    "depth 0": {"candidate.depth": 0},
    "depth 1": {"candidate.depth": 1},
    "depth 3": {"candidate.depth": 3},
    "depth 4": {"candidate.depth": 4},
    "no log Q correction": {"candidate.log_q_correction": False},
    "256 sampled negatives": {"candidate.num_sampled_negatives": 256},
    "no watch history": {"candidate.use_watches": False},
    "no geography": {"candidate.use_geography": False},
    "no demographics": {"candidate.use_demographics": False},
    "no example age": {"candidate.use_example_age": False},
}


def with_changes(config: TrainConfig, changes: dict) -> TrainConfig:
    config = TrainConfig.from_dict(config.to_dict())
    for path, value in changes.items():
        part, field = path.split(".")
        setattr(getattr(config, part), field, value)
    return config


def pick(metrics: dict) -> dict:
    return {k: round(float(metrics[k]), 4) for k in REPORTED if k in metrics} | (
        {"train_s": round(float(metrics["train_s"]), 1)} if "train_s" in metrics else {})


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a MovieLens 100K or 1M directory")
    parser.add_argument("--json", required=True, help="where to write the results")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ablations", action="store_true", help="also run the ablation variants (validation)")
    parser.add_argument("--verbose", type=int, default=1)
    args = parser.parse_args(argv)

    log = load_movielens(args.data)
    config = movielens_config(args.seed)
    builder = ExampleBuilder(log, config.examples)
    run = train_candidate_generator(builder, config, verbose=args.verbose)
    ours = evaluate_candidates(run, builder, "test", KS, baselines=False)["tfrs_youtube"]
    ours["train_s"] = run.train_s
    exclude = builder.watched("test")
    item_ids = np.asarray(run.embeddings.video.vocabulary, dtype=object)
    test = dict(run.test, watch_history=exclude)
    systems = {
        "tfrs_youtube": pick(ours),
        "tfrs_two_tower": pick(train_and_evaluate_two_tower(run.train, test, item_ids, seed=args.seed, ks=KS)),
        "most_popular": pick(evaluate_popularity(item_ids, run.train["video_id"], run.test["video_id"], exclude, KS)),
    }
    result = {"dataset": log.name, "users": int(len(log.users)), "items": int(len(log.videos)),
              "protocol": "leave-last-out by time (ties in file order); validation = second to last; "
                          "full-corpus ranking, history excluded",
              "config": config.to_dict(), "systems": systems}
    if args.ablations:
        rows = []
        for name, changes in ABLATIONS.items():
            variant = with_changes(config, changes)
            started = time.perf_counter()
            variant_run = train_candidate_generator(builder, variant, verbose=0)
            validation = evaluate_candidates(variant_run, builder, "validation", KS, baselines=False)["tfrs_youtube"]
            rows.append({"variant": name, "changes": changes, **pick(validation),
                         "train_s": round(variant_run.train_s, 1), "total_s": round(time.perf_counter() - started, 1)})
            print(json.dumps(rows[-1]), flush=True)
        result["ablations_on_validation"] = rows
    with open(args.json, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({"dataset": result["dataset"], "systems": systems}, indent=2))
    return result


if __name__ == "__main__":
    main()
