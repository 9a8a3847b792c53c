"""`tfrs-youtube export`: a trained run -> TF Serving's `<base>/<name>/<version>/` (ScaNN + portable twin)."""

from __future__ import annotations

import os

import numpy as np

from tfrs_youtube.commands import note


def add_parser(sub) -> None:
    export = sub.add_parser("export", help="export a trained run as a two-stage SavedModel (+ portable twin)",
                            description=__doc__)
    export.add_argument("--run", required=True, metavar="RUN_DIR", help="a run folder written by `train`")
    export.add_argument("--name", help="model name (default: the run folder's name)")
    export.add_argument("--base-dir", default="saved_models", help="TF Serving's model base directory (%(default)s)")
    export.add_argument("--data", help="the run's data, if it moved since training")
    export.set_defaults(func=run)


def export_run(loaded, base_dir: str, name: str) -> dict[str, str]:
    """Exports a loaded run (`runs.load_run`) with `export_two_stage`, as the demo does."""
    from tfrs_youtube.export import export_two_stage
    from tfrs_youtube.pipeline import as_tensors
    from tfrs_youtube.serving import TwoStageRecommender

    recommender = TwoStageRecommender(loaded.candidate, loaded.ranker, loaded.log.videos, loaded.config.serving)
    builder = loaded.examples.builder
    test = builder.retrieval_examples("test")
    if len(test["user_id"]):
        users, times = builder.user_codes.get_indexer(test["user_id"]), test["time"].astype(np.int64)
    else:  # no held-out targets: every user, as of the end of the log
        users = np.arange(len(loaded.log.users))
        times = np.full(len(users), int(loaded.log.watches["time"].max()), np.int64)
    requests = builder.requests(users[:1000], times[:1000])
    user_vectors = recommender.user_embedding(as_tensors(recommender.user_request(requests)))["user_embedding"].numpy()
    info = loaded.info
    metadata = {"config": loaded.config.to_dict(),
                "run": {"directory": loaded.directory, "data": info["data"], "dataset": info["dataset"],
                        "data_fingerprint": info["data_fingerprint"],
                        "stages": {s: {k: v for k, v in d.items() if k != "history"}
                                   for s, d in info["stages"].items()}}}
    return export_two_stage(recommender, base_dir, name, metadata=metadata,
                            warmup_requests=[{k: v[:1] for k, v in requests.items()}],
                            recall_user_vectors=user_vectors)


def run(args) -> int:
    from tfrs_youtube.runs import RunError, load_run, read_info

    # Checked before the data is read and the models rebuilt: a candidate-only run cannot serve.
    if os.path.isfile(os.path.join(args.run, "run.json")) and "ranker" not in read_info(args.run)["stages"]:
        raise RunError(f"{args.run} has no trained ranker: train --stage ranker --out {args.run} first")
    loaded = load_run(args.run, args.data, say=note)
    name = args.name or os.path.basename(os.path.normpath(args.run))
    paths = export_run(loaded, args.base_dir, name)
    for variant, path in paths.items():
        note(f"exported {variant}: {path}")
        print(path)
    return 0
