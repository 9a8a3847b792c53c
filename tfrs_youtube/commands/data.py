"""`tfrs-youtube data synth|movielens|examples`: write an event log (tables + dataset.json) to a
folder, or build the examples of one (the Beam pipeline) into an examples folder."""

from __future__ import annotations

import dataclasses
import os

from tfrs_youtube.commands import note

VARIANTS = {"100k": "ml-100k", "1m": "ml-1m"}


def add_parser(sub) -> None:
    data = sub.add_parser("data", help="write an event log: synthetic, or converted from MovieLens",
                          description=__doc__)
    kinds = data.add_subparsers(dest="kind", required=True, metavar="{synth,movielens,examples}")
    synth = kinds.add_parser("synth", help="simulate a YouTube-like service's event log",
                             description="Simulates users, videos, watches, searches and impressions "
                                         "(tfrs_youtube.data.synthetic) and writes them as an event log.")
    from tfrs_youtube.data.synthetic import SyntheticConfig

    defaults = SyntheticConfig()
    synth.add_argument("--users", type=int, default=defaults.num_users, help="number of users (%(default)s)")
    synth.add_argument("--videos", type=int, default=defaults.num_videos, help="number of videos (%(default)s)")
    synth.add_argument("--days", type=float, default=defaults.days, help="length of the log in days (%(default)s)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--out", default=os.path.join("datasets", "synthetic"), help="output folder (%(default)s)")
    synth.add_argument("--shards", type=int, default=1, help="files per table (%(default)s)")
    synth.add_argument("--format", choices=("csv", "parquet"), default="csv", help="table files (%(default)s)")
    synth.add_argument("--force", action="store_true", help="replace an existing output folder")
    synth.set_defaults(func=synthesize)

    ml = kinds.add_parser("movielens", help="convert MovieLens 100K or 1M to an event log",
                          description="Reads the official MovieLens files (or downloads and verifies the "
                                      "archive) and writes them as an event log. MovieLens data may not be "
                                      "redistributed: keep it out of version control.")
    ml.add_argument("--variant", required=True, choices=sorted(VARIANTS), help="100k or 1m")
    ml.add_argument("--path", help="the extracted official folder (default: download into --download-dir)")
    ml.add_argument("--download-dir", default="datasets", help="where the archive goes without --path (%(default)s)")
    ml.add_argument("--out", help="output folder (default: datasets/movielens-<variant>)")
    ml.add_argument("--impressions-per-watch", type=int, default=0,
                    help="derive this many unclicked impressions per rating from the past, so the ranker "
                         "has data (0: none, MovieLens records none)")
    ml.add_argument("--impressions-seed", type=int, default=0)
    ml.add_argument("--force", action="store_true", help="replace an existing output folder")
    ml.set_defaults(func=convert_movielens)

    ex = kinds.add_parser(
        "examples", help="build the examples of an event log (Apache Beam) into an examples folder",
        description="Runs the example pipeline: the log's tables (CSV or Parquet, one file or many) are validated, "
                    "grouped by user and cut into retrieval examples and ranking pages (label and context "
                    "selection), written as sharded TFRecords with their vocabularies, label counts and a spec. "
                    "`train --data EXAMPLES` trains on the folder. Beam's DirectRunner runs it here with "
                    "--workers processes; anything after `--` goes to Beam as pipeline options, e.g. "
                    "`-- --runner=FlinkRunner --flink_master=HOST:8081`.")
    ex.add_argument("--data", required=True, help="an event log folder (tfrs-youtube data ...) or a MovieLens folder")
    ex.add_argument("--out", required=True, help="the examples folder to create")
    ex.add_argument("--config", help="a TrainConfig file (JSON/YAML): its `examples` part and `seed` decide the "
                                     "examples (default: the data set's preset)")
    ex.add_argument("--workers", type=int, default=1, help="DirectRunner processes (%(default)s: this process)")
    ex.add_argument("--force", action="store_true", help="replace an existing output folder")
    ex.set_defaults(func=build)


def _check_out(out: str, force: bool) -> None:
    # Checked before any work, so a mistake costs nothing; new_dir checks again at the rename.
    if os.path.exists(out) and not force:
        raise FileExistsError(f"{out} already exists (pass --force to replace it)")


def synthesize(args) -> int:
    from tfrs_youtube.data.directory import write_dataset
    from tfrs_youtube.data.synthetic import SyntheticConfig, generate

    _check_out(args.out, args.force)
    config = SyntheticConfig(num_users=args.users, num_videos=args.videos, days=args.days, seed=args.seed)
    note(f"generating {config.num_users} users, {config.num_videos} videos over {config.days:g} days "
         f"(seed {config.seed})")
    log = generate(config)
    write_dataset(log, args.out, {"source": "synthetic", "synthetic": dataclasses.asdict(config)},
                  replace=args.force, shards=args.shards, format=args.format)
    note(f"{len(log.watches)} watches, {len(log.searches)} searches, {len(log.impressions)} impressions "
         f"-> {args.out}")
    return 0


def convert_movielens(args) -> int:
    from tfrs_youtube.data import movielens, movielens_download
    from tfrs_youtube.data.directory import say_notes, write_dataset

    name = VARIANTS[args.variant]
    out = args.out or os.path.join("datasets", f"movielens-{args.variant}")
    _check_out(out, args.force)
    if args.impressions_per_watch < 0:
        raise ValueError(f"--impressions-per-watch must be >= 0, got {args.impressions_per_watch}")
    path = args.path
    if path is None:
        note(f"downloading and verifying {movielens_download.ARCHIVES[name].url} into {args.download_dir}")
        path = str(movielens_download.download_movielens(name, args.download_dir))
    elif not os.path.isdir(path):
        raise FileNotFoundError(f"MovieLens directory {path} does not exist")
    load = movielens.load_100k if args.variant == "100k" else movielens.load_1m
    log = load(path, args.impressions_per_watch, args.impressions_seed)
    say_notes(log, note)
    write_dataset(log, out, {"source": "movielens", "variant": args.variant, "path": os.path.abspath(path),
                             "impressions_per_watch": args.impressions_per_watch,
                             "impressions_seed": args.impressions_seed}, replace=args.force)
    note(f"{len(log.users)} users, {len(log.videos)} movies, {len(log.watches)} ratings as watches, "
         f"{len(log.impressions)} impressions -> {out}")
    return 0


def example_config(config_path: str | None, data: str):
    """The TrainConfig whose examples part and seed a build uses: the file's, or the preset of
    the data set (MovieLens or not)."""
    from tfrs_youtube import presets
    from tfrs_youtube.config_files import load_train_config
    from tfrs_youtube.data.directory import is_movielens

    if config_path:
        return load_train_config(config_path)
    return presets.movielens() if is_movielens(data) else presets.synthetic_demo()


def build(args) -> int:
    from tfrs_youtube.pipeline import build_examples

    _check_out(args.out, args.force)
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    config = example_config(args.config, args.data)
    build_examples(args.data, args.out, config.examples, seed=config.seed, workers=args.workers,
                   beam_args=getattr(args, "beam_args", ()), replace=args.force, say=note)
    print(args.out)
    return 0
