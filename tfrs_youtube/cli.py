"""The `tfrs-youtube` command: `data` writes an event log, `train` fits both stages into a run
folder, `evaluate` scores a run (or a data set), `export` writes TF Serving's layout, `recommend`
answers a request with an exported model, and `demo` does all of it on synthetic data."""

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
    try:
        text = sys.stdin.read() if args.request == "-" else open(args.request, encoding="utf-8").read()
    except UnicodeDecodeError as err:
        print(json.dumps({"error": f"request file {args.request}: not a text file (byte {err.start} is not "
                                   f"UTF-8); expected a JSON request body"}))
        return 2
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
                        train=presets.synthetic_demo(args.seed), workers=args.workers)
    if args.quick:
        config.synthetic = config.synthetic.tiny(seed=args.seed)
        config.train.candidate_epochs = config.train.ranker_epochs = 1
        config.train.serving.num_candidates = 100
    config.synthetic.seed = args.seed
    result = run_demo(config)
    if args.json:
        from tfrs_youtube.files import finite_json, write_text

        write_text(args.json, json.dumps(finite_json(result["report"]), indent=2, default=float, allow_nan=False))
    return 0


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one line on stderr (argparse would print the usage block first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# Errors that mean bad input (a missing file, a bad config key, malformed data, an unusable run
# folder): reported as one line. Anything else is a bug and keeps its traceback.
_USER_ERRORS = (OSError, ValueError)


def build_parser() -> argparse.ArgumentParser:
    from tfrs_youtube.commands import data, evaluate, export, train

    parser = _Parser(prog="tfrs-youtube", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{data,train,evaluate,export,recommend,demo}")
    data.add_parser(sub)
    train.add_parser(sub)
    evaluate.add_parser(sub)
    export.add_parser(sub)
    rec = sub.add_parser("recommend", help="answer a TF Serving REST request body with an exported model")
    rec.add_argument("--model", required=True, help="a version directory, or a model directory (latest version)")
    rec.add_argument("--request", required=True, help='a JSON file ("instances" or "inputs"), or - for stdin')
    rec.add_argument("--signature", default="serving_default")
    rec.set_defaults(func=_recommend)
    demo = sub.add_parser("demo", help="train both stages on the synthetic log, export, serve three users")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quick", action="store_true", help="a tiny log and one epoch (seconds, for smoke tests)")
    demo.add_argument("--datasets-dir", default="datasets")
    demo.add_argument("--saved-models-dir", default="saved_models")
    demo.add_argument("--json", help="also write the evaluation report here")
    demo.add_argument("--workers", type=int, default=1, help="example pipeline processes (%(default)s)")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    import tfrs_youtube  # noqa: F401  (selects Keras 2 before anything loads Keras)

    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after `--` is for Apache Beam (`data examples -- --runner=FlinkRunner ...`).
    beam_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    args = build_parser().parse_args(argv)
    args.beam_args = beam_args
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"tfrs-youtube {args.command}: interrupted", file=sys.stderr)
        return 130
    except _USER_ERRORS as err:
        if os.environ.get("TFRS_YOUTUBE_TRACEBACK"):
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        if isinstance(err, OSError) and err.filename and err.filename not in message:
            message += f": {err.filename}"
        print(f"tfrs-youtube {args.command}: error: {message}", file=sys.stderr)
        return getattr(err, "exit_code", 1)  # run_training.Interrupted: 130, as for Ctrl-C


if __name__ == "__main__":
    sys.exit(main())
