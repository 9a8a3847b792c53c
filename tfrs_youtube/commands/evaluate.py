"""`tfrs-youtube evaluate`: held-out metrics as JSON.

With `--data`: builds a data set's examples and trains candidate generation on them with its
preset, and scores the held-out targets (HR/NDCG/MAP@K beside most-popular and chance). With `--run`: scores
a run trained by `tfrs-youtube train`, both stages: retrieval HR/NDCG/MAP@K, the ranker's AUC,
weighted per-user loss and calibration deciles on held-out impressions, and the served top-K.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from tfrs_youtube.commands import note


def add_parser(sub) -> None:
    ev = sub.add_parser("evaluate", help="held-out metrics as JSON: of a trained run (--run), or train "
                                         "candidate generation on a data set and score it (--data)",
                        description=__doc__)
    ev.add_argument("--run", metavar="RUN_DIR", help="a run folder written by `train` (both stages' metrics)")
    ev.add_argument("--data", help="a MovieLens 100K/1M directory or an event log: build its examples with its preset, "
                                   "train candidate generation and score it")
    ev.add_argument("--examples", help="with --run: the run's examples folder, if it moved")
    ev.add_argument("--json", help="also write the report here")
    ev.add_argument("--index", choices=("exact", "scann"), default="exact")
    ev.add_argument("--split", choices=("test", "validation"), default="test",
                    help="retrieval's held-out targets (ranking and the served lists use the test period)")
    ev.add_argument("--ks", default="10,50,100")
    ev.add_argument("--keep-watched", action="store_true", help="rank videos the user already watched too")
    ev.add_argument("--epochs", type=int, help="override the preset's epochs (--data only)")
    ev.add_argument("--seed", type=int, default=0, help="(--data only)")
    ev.add_argument("--verbose", type=int, default=1, help="(--data only)")
    ev.set_defaults(func=run)


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in text.split(","))
    except ValueError:
        raise ValueError(f"--ks must be comma-separated integers, got {text!r}") from None
    if not ks or min(ks) < 1:
        raise ValueError(f"--ks must be positive, got {text!r}")
    return ks


def run(args) -> int:
    if args.run is None and args.data is None:
        raise ValueError("give --run RUN_DIR (a trained run) or --data DIR (train and score candidate generation)")
    ks = _ks(args.ks)
    report = run_report(args, ks) if args.run else data_report(args, ks)
    from tfrs_youtube.files import finite_json

    # Strict JSON: a figure that could not be measured (NaN, infinite) is null.
    text = json.dumps(finite_json(report), indent=2, default=lambda v: float(np.asarray(v)), allow_nan=False)
    if args.json:
        from tfrs_youtube.files import write_text

        write_text(args.json, text)
    print(text)
    return 0


def data_report(args, ks) -> dict:
    """Builds examples of a data set with its preset, trains the candidate generator on them and
    scores its held-out targets."""
    from tfrs_youtube.commands.data import example_config
    from tfrs_youtube.reports import retrieval_report
    from tfrs_youtube.system import temporary_examples
    from tfrs_youtube.training import train

    config = example_config(None, args.data)
    config.seed = args.seed
    if args.epochs:
        config.candidate_epochs = args.epochs
    examples = temporary_examples(args.data, config, say=note)
    for table, text in examples.notes.items():
        if table in ("searches", "impressions"):
            note(f"{examples.name} {table}: {text}")
    models, info = train(examples, config, stages=("candidate",), verbose=args.verbose, say=note)
    return {"dataset": examples.name, "split": args.split, "index": args.index, "train_s": info["candidate"]["train_s"],
            "watched_excluded": not args.keep_watched,
            "metrics": retrieval_report(models.candidate, examples, args.split, ks, index=args.index,
                                        exclude_watched=not args.keep_watched, seed=config.seed)}


def run_report(args, ks) -> dict:
    """Both stages of a trained run on its held-out examples (the functions `train_two_stage` reports with)."""
    from tfrs_youtube.reports import ranking_report, retrieval_report, two_stage_report
    from tfrs_youtube.runs import load_run
    from tfrs_youtube.serving import TwoStageRecommender

    loaded = load_run(args.run, args.examples, say=note)
    models, examples = loaded.models, loaded.examples
    report = {"run": loaded.directory, "dataset": examples.name, "stages": sorted(loaded.info["stages"]),
              "split": args.split, "index": args.index, "watched_excluded": not args.keep_watched}
    note("scoring retrieval")
    report["retrieval"] = retrieval_report(models.candidate, examples, args.split, ks, index=args.index,
                                           exclude_watched=not args.keep_watched, seed=loaded.config.seed)
    if loaded.has_ranker and examples.num_records("ranking", "test"):
        note("scoring the ranker on held-out impressions")
        report["ranking"] = ranking_report(models, examples, loaded.config)
        note("scoring the served top-K lists")
        recommender = TwoStageRecommender(models.candidate, models.ranker, loaded.config.serving)
        report["two_stage"] = two_stage_report(recommender, examples)
    return report
