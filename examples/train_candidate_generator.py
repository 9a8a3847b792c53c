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
import tensorflow as tf
from tfrs_youtube import presets
from tfrs_youtube.candidate import CandidateGenerator
from tfrs_youtube.data.examples import ExampleBuilder
from tfrs_youtube.data.movielens import load_movielens
from tfrs_youtube.features.embeddings import FeatureEmbeddings
from tfrs_youtube.pipeline import to_dataset
from tfrs_youtube.training import CandidateRun, evaluate_candidates

SMALL = os.environ.get("TFRS_YOUTUBE_EXAMPLE_SIZE") == "small"
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "ml-100k-mini"


def fixture_dir() -> str:
    """The fixture's `<file>.fixture` files under their MovieLens names, in a temporary directory
    that is removed when the script exits."""
    target = Path(tempfile.mkdtemp(prefix="ml-100k-mini-"))
    atexit.register(shutil.rmtree, target, ignore_errors=True)
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

    # 1. The event log and the examples: each rating is a watch; labels are later ratings.
    log = load_movielens(data)
    config = presets.movielens(seed=0)
    builder = ExampleBuilder(log, config.examples)
    train, validation = builder.retrieval_examples("train"), builder.retrieval_examples("validation")
    test = builder.retrieval_examples("test")
    print(f"{log.name}: {len(log.users)} users, {len(log.videos)} movies, {len(train['video_id'])} training labels")

    # 2. Shared embedding tables (vocabularies, label frequencies for log Q, quantiles).
    embeddings = FeatureEmbeddings.from_examples(log, config.embeddings, label_videos=train["video_id"],
                                                 example_age_s=train["example_age_s"])

    # 3. The model, trained with a log-Q-corrected sampled softmax (tfrs.tasks.Retrieval).
    tf.keras.utils.set_random_seed(config.seed)
    model = CandidateGenerator(config.candidate, embeddings)
    model.compile(optimizer=tf.keras.optimizers.Adam(config.candidate.learning_rate))
    model.fit(to_dataset(train, config.batch_size, shuffle=True), validation_data=to_dataset(validation, 4096),
              epochs=args.epochs, verbose=2)

    # 4. Full-corpus HR@10 on each user's last rating, watched movies excluded.
    run = CandidateRun(model, embeddings, train, validation, test, train_s=0.0)
    report = evaluate_candidates(run, builder, "test", ks=(10, 50, 100))
    print(f"{'system':<14}{'HR@10':>8}{'NDCG@10':>9}{'HR@100':>8}")
    for name, m in report.items():
        print(f"{name:<14}{m['HR@10']:>8.3f}{m['NDCG@10']:>9.3f}{m['HR@100']:>8.3f}")
    print(f"HR@10 = {report['tfrs_youtube']['HR@10']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
