"""`tfrs-youtube train`: fit candidate generation and/or ranking on an event log into a run folder."""

from __future__ import annotations

from tfrs_youtube.commands import note


def add_parser(sub) -> None:
    train = sub.add_parser(
        "train", help="train the candidate generator and/or the ranker into a run folder",
        description="Trains on an event log (or a MovieLens folder) with a TrainConfig from a JSON or YAML "
                    "file, checkpointing every epoch. The run folder appears only when training is done "
                    "(RUN_DIR.partial until then); after an interruption, rerun with --resume. `evaluate "
                    "--run` and `export --run` read the run folder.")
    train.add_argument("--config", required=True, help="TrainConfig as .json/.yaml/.yml (any subset of its keys; "
                                                       "'preset: movielens' or 'synthetic_demo' as a base)")
    train.add_argument("--data", required=True, help="an examples folder (tfrs-youtube data examples), or an event log "
                                                     "or MovieLens folder, whose examples the run then builds")
    train.add_argument("--out", required=True, metavar="RUN_DIR", help="the run folder to create")
    train.add_argument("--stage", choices=("candidate", "ranker", "both"), default="both",
                       help="ranker: retrain the ranker of an existing run on its candidate generator (%(default)s)")
    train.add_argument("--logdir", help="write TensorBoard scalars (losses, metrics) here, per stage")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run after its last saved epoch")
    train.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1, help="Keras progress: 0, 1 (bars), 2")
    train.add_argument("--workers", type=int, default=None,
                       help="example pipeline processes, when --data is a log (default 1); with --cluster local, "
                            "also the cluster's training workers (default 2)")
    train.add_argument("--cluster", choices=("local", "tf-config"),
                       help="train across processes with parameter servers holding the sharded tables: 'local' starts "
                            "them on this machine, 'tf-config' joins the cluster that TF_CONFIG describes as its chief "
                            "(docs/scale.md)")
    train.add_argument("--ps", type=int, default=2, help="parameter servers of a --cluster local (%(default)s)")
    train.set_defaults(func=run)


def run(args) -> int:
    from tfrs_youtube.config_files import load_train_config
    from tfrs_youtube.run_training import train_run

    config = load_train_config(args.config)  # before anything heavy: a bad key fails fast
    cluster = None
    if args.cluster:
        from tfrs_youtube.distributed import ClusterConfig

        cluster = ClusterConfig(cluster=args.cluster, workers=args.workers or 2, ps=args.ps)
    elif args.ps != 2:
        raise ValueError("--ps needs --cluster local")
    train_run(config, args.data, args.out, stage=args.stage, logdir=args.logdir, resume=args.resume,
              verbose=args.verbose, say=note, workers=args.workers or 1, cluster=cluster)
    return 0
