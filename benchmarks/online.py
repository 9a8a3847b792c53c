"""The online experiment: what simulated users would watch from each system's page.

    python benchmarks/online.py --json OUT.json [--seed S] [--users N] [--videos N] [--k 10]
        [--requests N] [--epochs-scale F]

Protocol (`tfrs_youtube.online`): the synthetic log of `--users` users and `--videos` videos
(`SyntheticConfig`, seed `--seed`) is cut in time as the demo cuts it (`presets.synthetic_demo`:
nothing after the cut trains either stage); both stages train on the log before the cut and are
exported as the demo exports them (a SavedModel loaded back for serving). Then each user (or
`--requests` of them) makes one request at a moment drawn after the cut, built from the log
before it, and each system serves a page of K videos: the two-stage `serving_default`,
retrieval alone (`retrieve`, watched videos dropped, the first K), most popular, random, and the
two ceilings the simulator's truth gives (the best K of the same N retrieved candidates, the
best K of the corpus). The simulator scores every page by its expected watch time and clicks.

OUT.json: {"systems": {name: {"watch_time_s", "watch_time_se", "clicks", "clicks_se"}},
"paired_vs_retrieval_only": {name: {"diff_s", "diff_se"}}, "gap_closed", "requests", "k", "cut",
"seed", "offline": the trained system's offline report (AUC, HR@K, ...), "config", "seconds"}.
`gap_closed` = (two_stage - retrieval_only) / (candidate_oracle - retrieval_only).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tfrs_youtube  # noqa: E402,F401  (Keras 2 first)
import tensorflow as tf  # noqa: E402

from tfrs_youtube import (  # noqa: E402
    check_two_stage_export, export_with_warmup, presets, run_online_experiment, Simulator, SyntheticConfig,
    temporary_examples, train_two_stage,
)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", required=True, help="where to write the figures")
    parser.add_argument("--seed", type=int, default=0, help="the log's and the training's seed (%(default)s)")
    defaults = SyntheticConfig()
    parser.add_argument("--users", type=int, default=defaults.num_users, help="simulated users (%(default)s)")
    parser.add_argument("--videos", type=int, default=defaults.num_videos, help="simulated videos (%(default)s)")
    parser.add_argument("--k", type=int, default=10, help="videos per page (%(default)s)")
    parser.add_argument("--requests", type=int, help="held-out requests (default: one per user)")
    parser.add_argument("--epochs-scale", type=float, default=1.0,
                        help="multiply both stages' epochs (a tiny run for tests: e.g. 0.25)")
    parser.add_argument("--verbose", type=int, default=0)
    args = parser.parse_args(argv)
    if args.k < 1:
        parser.error(f"--k must be >= 1, got {args.k}")

    started = time.perf_counter()
    simulator = Simulator(SyntheticConfig(num_users=args.users, num_videos=args.videos, seed=args.seed))
    log = simulator.event_log()
    config = presets.synthetic_demo(args.seed)
    config.serving.k = args.k
    config.serving.num_candidates = min(config.serving.num_candidates, args.videos)
    config.candidate_epochs = max(1, round(config.candidate_epochs * args.epochs_scale))
    config.ranker_epochs = max(1, round(config.ranker_epochs * args.epochs_scale))
    examples = temporary_examples(log, config, say=print if args.verbose else None)
    system = train_two_stage(None, config, verbose=args.verbose, examples=examples)
    export_dir = tempfile.mkdtemp(prefix="tfrs-youtube-online-")
    try:
        paths = export_with_warmup(system.recommender, examples, export_dir, "online", portable=False)
        model = tf.saved_model.load(paths["scann"])
        check_two_stage_export(model)
        report = run_online_experiment(simulator, log, examples, model, args.k, args.requests, args.seed)
    finally:
        shutil.rmtree(export_dir, ignore_errors=True)
    report["offline"] = {key: system.report[key] for key in ("ranking", "two_stage") if key in system.report}
    report["offline"].get("ranking", {}).pop("calibration", None)
    report.update(config=config.to_dict(), users=args.users, videos=args.videos,
                  seconds=time.perf_counter() - started)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps({"systems": report["systems"], "paired_vs_retrieval_only": report["paired_vs_retrieval_only"],
                      "gap_closed": report["gap_closed"]}, indent=2))
    return report


if __name__ == "__main__":
    main()
