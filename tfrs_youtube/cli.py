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
    from tfrs_youtube.rest import RequestError, parse_request, response_body

    model_dir = args.model
    if not os.path.exists(os.path.join(model_dir, "saved_model.pb")):
        model_dir = latest_version_dir(model_dir)
    model = tf.saved_model.load(model_dir)
    signature = model.signatures[args.signature]
    text = sys.stdin.read() if args.request == "-" else open(args.request).read()
    try:
        inputs, form = parse_request(text, signature)
        outputs = signature(**inputs)
    except RequestError as err:
        print(json.dumps({"error": str(err)}))
        return 2
    except tf.errors.InvalidArgumentError as err:
        print(json.dumps({"error": err.message}))
        return 2
    print(json.dumps(response_body(outputs, form)))
    return 0


def _demo(args) -> int:
    from tfrs_youtube.demo import DemoConfig, run_demo

    config = DemoConfig(datasets_dir=args.datasets_dir, saved_models_dir=args.saved_models_dir)
    if args.quick:
        config.synthetic = config.synthetic.tiny(seed=args.seed)
        config.train.candidate_epochs = config.train.ranker_epochs = 1
        config.train.serving.num_candidates = 100
    config.synthetic.seed = args.seed
    config.train.seed = args.seed
    result = run_demo(config)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result["report"], f, indent=2, default=float)
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
    rec = sub.add_parser("recommend", help="answer a TF Serving REST request body with an exported model")
    rec.add_argument("--model", required=True, help="a version directory, or a model directory (latest version)")
    rec.add_argument("--request", required=True, help='a JSON file ("instances" or "inputs"), or - for stdin')
    rec.add_argument("--signature", default="serving_default")
    rec.set_defaults(func=_recommend)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
