"""`tfrs-youtube export`: a trained run -> TF Serving's `<base>/<name>/<version>/` (ScaNN + portable twin).

A run that trained only the candidate stage (MovieLens: no impressions to rank with) exports a
retrieval-only model: `retrieve` and `user_embedding`, with `serving_default` = `retrieve`."""

from __future__ import annotations

import os

from tfrs_youtube.commands import note


def add_parser(sub) -> None:
    export = sub.add_parser("export", help="export a trained run as a two-stage SavedModel (+ portable twin); "
                                           "retrieval-only for a run without a ranker",
                            description=__doc__)
    export.add_argument("--run", required=True, metavar="RUN_DIR", help="a run folder written by `train`")
    export.add_argument("--name", help="model name (default: the run folder's name)")
    export.add_argument("--base-dir", default="saved_models", help="TF Serving's model base directory (%(default)s)")
    export.add_argument("--examples", help="the run's examples folder, if it moved since training")
    export.set_defaults(func=run)


def export_run(loaded, base_dir: str, name: str) -> dict[str, str]:
    """Exports a loaded run (`runs.load_run`) with `export_with_warmup`, as the demo does; a run
    without a trained ranker exports retrieval-only."""
    from tfrs_youtube.export import export_with_warmup
    from tfrs_youtube.serving import TwoStageRecommender

    models = loaded.models
    # A candidate-only run's `models.ranker` is built but untrained (its variables were never
    # restored): serving it would rank by random weights, so it is left out.
    recommender = TwoStageRecommender(models.candidate, models.ranker if loaded.has_ranker else None,
                                      loaded.config.serving)
    info = loaded.info
    metadata = {"config": loaded.config.to_dict(),
                "run": {"directory": loaded.directory, "data": info["data"], "dataset": loaded.examples.name,
                        "examples_fingerprint": info["examples_fingerprint"],
                        "stages": {s: {k: v for k, v in d.items() if k != "history"}
                                   for s, d in info["stages"].items()}}}
    return export_with_warmup(recommender, loaded.examples, base_dir, name, metadata)


def run(args) -> int:
    from tfrs_youtube import faults
    from tfrs_youtube.runs import load_run

    faults.point("export:start")  # TensorFlow and the package imported, nothing read or written

    loaded = load_run(args.run, args.examples, say=note)  # refuses a missing, partial or untrained run
    if not loaded.has_ranker:
        note(f"{args.run} has no trained ranker: exporting a retrieval-only model (signatures retrieve and "
             f"user_embedding; serving_default = retrieve)")
    name = args.name or os.path.basename(os.path.normpath(args.run))
    paths = export_run(loaded, args.base_dir, name)
    for variant, path in paths.items():
        note(f"exported {variant}: {path}")
        print(path)
    return 0
