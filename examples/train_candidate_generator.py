"""Train the candidate generator on MovieLens 100K with `model.fit` and print HR@10.

    python examples/train_candidate_generator.py --data /path/to/ml-100k
    TFRS_YOUTUBE_MOVIELENS_100K=/path/to/ml-100k python examples/train_candidate_generator.py

Protocol (`tfrs_youtube.presets.movielens`): per user, ratings sorted by time; the last is the
test target, the one before it the validation target, every earlier one a training label with
the history before it. Every movie is ranked, the user's history excluded.

TFRS_YOUTUBE_EXAMPLE_SIZE=small trains one epoch, and without a data path falls back to the tiny
hand-written MovieLens-format fixture of tests/fixtures (a smoke test, not a benchmark).
"""

import argparse
import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import tfrs_youtube  # noqa: F401  (first: selects Keras 2)
from tfrs_youtube import build_examples, build_models, fit_candidate_generator, presets, retrieval_report

SMALL = os.environ.get("TFRS_YOUTUBE_EXAMPLE_SIZE") == "small"
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "ml-100k-mini"


def temporary_dir(prefix: str) -> Path:
    """A temporary directory, removed when the script exits."""
    target = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, target, ignore_errors=True)
    return target


def fixture_dir() -> str:
    """The fixture's `<file>.fixture` files under their MovieLens names, in a temporary directory."""
    target = temporary_dir("ml-100k-mini-")
    for source in FIXTURE.glob("*.fixture"):
        shutil.copyfile(source, target / source.name[: -len(".fixture")])
    return str(target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.environ.get("TFRS_YOUTUBE_MOVIELENS_100K"),
                        help="the MovieLens 100K directory (default: $TFRS_YOUTUBE_MOVIELENS_100K)")
    parser.add_argument("--epochs", type=int, default=1 if SMALL else 10)
    args = parser.parse_args()
    data = args.data
    if not data:
        if not SMALL:
            print("error: no MovieLens 100K directory: pass --data DIR or set TFRS_YOUTUBE_MOVIELENS_100K "
                  "(download: https://grouplens.org/datasets/movielens/100k/)", file=sys.stderr)
            return 2
        print("small mode without MovieLens: using the tiny MovieLens-format fixture of tests/fixtures")
        data = fixture_dir()

    # 1. The examples, by the Beam pipeline: each rating is a watch; every later rating is a label
    #    whose history holds only the ratings before it. They are written as sharded TFRecords,
    #    with the vocabularies (ids -> integer indices) and label counts, to a folder (here a
    #    temporary one; `tfrs-youtube data examples` writes one from the command line).
    config = presets.movielens(seed=0)
    config.candidate_epochs = args.epochs
    examples = build_examples(data, str(temporary_dir("examples-") / "movielens"), config.examples, seed=config.seed)
    print(f"{examples.name}: {examples.spec['users']} users, {len(examples.vocabulary('video'))} movies, "
          f"{examples.num_records('retrieval', 'train')} training labels")

    # 2. Shared embedding tables (from the examples' vocabularies; label counts for log Q;
    #    quantiles of the continuous features) and the candidate generator that reads them.
    models = build_models(examples, config)

    # 3. `model.fit` with a log-Q-corrected sampled softmax (tfrs.tasks.Retrieval), streaming the
    #    training shards, validated on each user's second-to-last rating.
    fit_candidate_generator(models, examples, config, verbose=2)

    # 4. Full-corpus HR@10 on each user's last rating, watched movies excluded.
    report = retrieval_report(models.candidate, examples, "test", ks=(10, 50, 100), seed=config.seed)
    print(f"{'system':<14}{'HR@10':>8}{'NDCG@10':>9}{'HR@100':>8}")
    for name, m in report.items():
        print(f"{name:<14}{m['HR@10']:>8.3f}{m['NDCG@10']:>9.3f}{m['HR@100']:>8.3f}")
    print(f"HR@10 = {report['tfrs_youtube']['HR@10']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
