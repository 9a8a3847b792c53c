"""The `tfrs-youtube` command: `demo` runs the main job, `recommend` serves a request."""

from __future__ import annotations

import argparse
import json
import os
import sys


def _recommend(args) -> int:
    # Only TensorFlow and ScaNN's ops are needed to serve: the model carries everything else.
    import scann  # noqa: F401  (registers ScaNN's TF ops before the graph is loaded)
    import tensorflow as tf

    from tfrs_youtube.export import latest_version_dir
    from tfrs_youtube.rest import RequestError, error_summary, parse_request, response_body

    model_dir = args.model
    if not os.path.exists(os.path.join(model_dir, "saved_model.pb")):
        model_dir = latest_version_dir(model_dir)
    model = tf.saved_model.load(model_dir)
    if args.signature not in model.signatures:
        print(json.dumps({"error": f"unknown signature {args.signature!r} (the model has "
                                   f"{sorted(model.signatures)})"}))
        return 2
    signature = model.signatures[args.signature]
    text = sys.stdin.read() if args.request == "-" else open(args.request).read()
    try:
        inputs, form = parse_request(text, signature)
        outputs = signature(**inputs)
    except RequestError as err:
        print(json.dumps({"error": str(err)}))
        return 2
    except tf.errors.InvalidArgumentError as err:
        print(json.dumps({"error": error_summary(err)}))
        return 2
    print(json.dumps(response_body(outputs, form)))
    return 0


def _demo(args) -> int:
    from tfrs_youtube.demo import DemoConfig, run_demo

    from tfrs_youtube import presets

    config = DemoConfig(datasets_dir=args.datasets_dir, saved_models_dir=args.saved_models_dir,
                        train=presets.synthetic_demo(args.seed))
    if args.quick:
        config.synthetic = config.synthetic.tiny(seed=args.seed)
        config.train.candidate_epochs = config.train.ranker_epochs = 1
        config.train.serving.num_candidates = 100
    config.synthetic.seed = args.seed
    result = run_demo(config)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result["report"], f, indent=2, default=float)
    return 0


def _evaluate(args) -> int:
    """Trains the candidate generator on a data set and scores its held-out targets."""
    import numpy as np

    from tfrs_youtube import presets
    from tfrs_youtube.data.examples import ExampleBuilder
    from tfrs_youtube.data.schema import EventLog
    from tfrs_youtube.training import evaluate_candidates, train_candidate_generator

    if os.path.exists(os.path.join(args.data, "users.csv")):
        log, config = EventLog.read_csv(args.data), presets.synthetic_demo(args.seed)
    else:
        from tfrs_youtube.data.movielens import load_movielens

        log, config = load_movielens(args.data), presets.movielens(args.seed)
    # Say what the data set lacks or what was derived rather than observed, every time it is loaded.
    for table in ("searches", "impressions"):
        if table in log.notes:
            print(f"{log.name} {table}: {log.notes[table]}", file=sys.stderr)
    if args.epochs:
        config.candidate_epochs = args.epochs
    builder = ExampleBuilder(log, config.examples)
    run = train_candidate_generator(builder, config, verbose=args.verbose)
    ks = tuple(int(k) for k in args.ks.split(","))
    report = {"dataset": log.name, "split": args.split, "index": args.index, "train_s": run.train_s,
              "watched_excluded": not args.keep_watched,
              "metrics": evaluate_candidates(run, builder, args.split, ks, index=args.index,
                                             exclude_watched=not args.keep_watched)}
    text = json.dumps(report, indent=2, default=lambda v: float(np.asarray(v)))
    if args.json:
        with open(args.json, "w") as f:
            f.write(text)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    import tfrs_youtube  # noqa: F401  (selects Keras 2 before anything loads Keras)

    parser = argparse.ArgumentParser(prog="tfrs-youtube", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train both stages on the synthetic log, export, serve three users")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quick", action="store_true", help="a tiny log and one epoch (seconds, for smoke tests)")
    demo.add_argument("--datasets-dir", default="datasets")
    demo.add_argument("--saved-models-dir", default="saved_models")
    demo.add_argument("--json", help="also write the evaluation report here")
    demo.set_defaults(func=_demo)
    ev = sub.add_parser("evaluate", help="train candidate generation on a data set; HR/NDCG/MAP@K as JSON")
    ev.add_argument("--data", required=True, help="a MovieLens 100K/1M directory, or an event log of CSV tables")
    ev.add_argument("--json", help="also write the report here")
    ev.add_argument("--index", choices=("exact", "scann"), default="exact")
    ev.add_argument("--split", choices=("test", "validation"), default="test")
    ev.add_argument("--ks", default="10,50,100")
    ev.add_argument("--keep-watched", action="store_true", help="rank videos the user already watched too")
    ev.add_argument("--epochs", type=int, help="override the preset's epochs")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--verbose", type=int, default=1)
    ev.set_defaults(func=_evaluate)
    rec = sub.add_parser("recommend", help="answer a TF Serving REST request body with an exported model")
    rec.add_argument("--model", required=True, help="a version directory, or a model directory (latest version)")
    rec.add_argument("--request", required=True, help='a JSON file ("instances" or "inputs"), or - for stdin')
    rec.add_argument("--signature", default="serving_default")
    rec.set_defaults(func=_recommend)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
