"""Training both stages on one event log, and the figures that say how well they did.

`train_two_stage` is the library's main job: examples from the log, shared embeddings, the
candidate generator, the ranker, the served chain, and an evaluation of each on held-out later
events next to the baselines a user would otherwise pick (chance, most popular).
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pandas as pd
import tensorflow as tf

from tfrs_youtube.candidate import CandidateConfig, CandidateGenerator
from tfrs_youtube.data.examples import ExampleBuilder, ExampleConfig
from tfrs_youtube.data.schema import EventLog
from tfrs_youtube.evaluation import (DEFAULT_KS, auc, calibration_deciles, evaluate_popularity, evaluate_random,
                                     evaluate_retrieval, max_calibration_error, observed_watch_time,
                                     weighted_per_user_loss)
from tfrs_youtube.features.embeddings import EmbeddingConfig, FeatureEmbeddings
from tfrs_youtube.pipeline import as_tensors, predict, to_dataset, to_page_dataset
from tfrs_youtube.ranking import Ranker, RankerConfig
from tfrs_youtube.serving import ServingConfig, TwoStageRecommender


@dataclasses.dataclass
class TrainConfig:
    """Everything that decides a trained system; round-trips through JSON."""

    examples: ExampleConfig = dataclasses.field(default_factory=ExampleConfig)
    embeddings: EmbeddingConfig = dataclasses.field(default_factory=EmbeddingConfig)
    candidate: CandidateConfig = dataclasses.field(default_factory=CandidateConfig)
    ranker: RankerConfig = dataclasses.field(default_factory=RankerConfig)
    serving: ServingConfig = dataclasses.field(default_factory=ServingConfig)
    candidate_epochs: int = 5
    ranker_epochs: int = 4
    batch_size: int = 512
    seed: int = 0

    _PARTS = {"examples": ExampleConfig, "embeddings": EmbeddingConfig, "candidate": CandidateConfig,
              "ranker": RankerConfig, "serving": ServingConfig}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        data = dict(data)
        for key, part in cls._PARTS.items():
            if key in data:
                data[key] = part(**data[key])
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_dict(json.loads(text))


@dataclasses.dataclass
class TrainedSystem:
    """The trained models, the served chain and the evaluation report."""

    config: TrainConfig
    builder: ExampleBuilder
    embeddings: FeatureEmbeddings
    candidate_generator: CandidateGenerator
    ranker: Ranker
    recommender: TwoStageRecommender
    report: dict


@dataclasses.dataclass
class CandidateRun:
    """A trained candidate generator with the examples it was trained and tested on."""

    model: CandidateGenerator
    embeddings: FeatureEmbeddings
    train: dict
    validation: dict
    test: dict
    train_s: float


def train_candidate_generator(builder: ExampleBuilder, config: TrainConfig, embeddings: FeatureEmbeddings | None = None,
                              verbose: int = 1, callbacks: list | None = None) -> CandidateRun:
    """Fits the candidate generator on the builder's training watches (validation: the next ones).

    `callbacks` go to `model.fit` (e.g. checkpoints to resume from, TensorBoard; see `runs`).
    """
    tf.keras.utils.set_random_seed(config.seed)
    train = builder.retrieval_examples("train")
    validation = builder.retrieval_examples("validation")
    test = builder.retrieval_examples("test")
    if len(train["video_id"]) == 0:
        raise ValueError(f"{builder.log.name}: no training examples: every watch is held out "
                         f"(split {builder.config.split!r}); users need more watches than the held-out ones")
    if embeddings is None:
        embeddings = FeatureEmbeddings.from_examples(builder.log, config.embeddings, label_videos=train["video_id"],
                                                     example_age_s=train["example_age_s"])
    model = CandidateGenerator(config.candidate, embeddings)  # samples by the embeddings' label frequencies
    model.compile(optimizer=tf.keras.optimizers.Adam(config.candidate.learning_rate))
    started = time.perf_counter()
    model.fit(to_dataset(train, config.batch_size, shuffle=True, seed=config.seed),
              validation_data=to_dataset(validation, 4096) if len(validation["video_id"]) else None,
              epochs=config.candidate_epochs, verbose=verbose, callbacks=list(callbacks or []))
    return CandidateRun(model, embeddings, train, validation, test, time.perf_counter() - started)


def evaluate_candidates(run: CandidateRun, builder: ExampleBuilder, split: str = "test", ks=DEFAULT_KS,
                        baselines: bool = True, seed: int = 0, index: str = "exact",
                        exclude_watched: bool = True) -> dict:
    """Full-corpus HR/NDCG/MAP@K of a split's targets, each user's whole history excluded (unless
    `exclude_watched` is False), by exact search or by ScaNN (`index`), with most-popular and
    chance beside it."""
    examples = run.test if split == "test" else run.validation
    item_ids = np.asarray(run.embeddings.video.vocabulary, dtype=object)
    item_vectors = run.model.video_vectors(tf.constant(item_ids.astype(str))).numpy()
    user_vectors = predict(run.model.user_tower, examples)
    exclude = builder.watched(split) if exclude_watched else None
    report = {"tfrs_youtube": evaluate_retrieval(user_vectors, item_vectors, item_ids, examples["video_id"],
                                                 exclude, ks, index=index)}
    if baselines:
        report["most_popular"] = evaluate_popularity(item_ids, run.train["video_id"], examples["video_id"],
                                                     exclude, ks)
        report["random"] = evaluate_random(item_ids, examples["video_id"], exclude, ks, seed=seed)
    return report


@dataclasses.dataclass
class Examples:
    """Everything derived from config + data before any fitting: the builder, the candidate
    generator's training watches, and the ranker's fit / calibration / test impressions."""

    builder: ExampleBuilder
    train: dict
    rank_train: dict
    rank_calibration: dict
    rank_test: dict

    @property
    def has_impressions(self) -> bool:
        return len(self.rank_train["video_id"]) > 0


def prepare(log: EventLog, config: TrainConfig) -> tuple[Examples, FeatureEmbeddings]:
    """The examples and the shared embeddings both stages train from (deterministic in config and
    log, so a saved run rebuilds them exactly: `runs.load_run`)."""
    builder = ExampleBuilder(log, config.examples)
    train = builder.retrieval_examples("train")
    rank_train_rows, rank_test_rows = builder.impression_split()
    rank_train_rows, rank_calibration_rows = split_calibration(builder, rank_train_rows,
                                                               config.ranker.calibration_fraction)
    examples = Examples(builder, train, builder.ranking_examples(rank_train_rows),
                        builder.ranking_examples(rank_calibration_rows), builder.ranking_examples(rank_test_rows))
    continuous = {"example_age_s": train["example_age_s"]}
    if examples.has_impressions:
        continuous.update({k: examples.rank_train[k] for k in ("time_since_topic_watch_s", "previous_impressions",
                                                               "video_age_s")})
    embeddings = FeatureEmbeddings.from_examples(log, config.embeddings, label_videos=train["video_id"], **continuous)
    return examples, embeddings


def add_retrieval_scores(candidate: CandidateGenerator, examples: Examples) -> None:
    """The candidate generator's score of each impression, as of the impression (a request, so
    example age 0): one of the ranker's features (paper 4.1)."""
    item_ids = np.asarray(candidate.embeddings.video.vocabulary, dtype=object)
    item_vectors = candidate.video_vectors(tf.constant(item_ids.astype(str))).numpy()
    vectors = dict(zip(item_ids, item_vectors))
    for part in (examples.rank_train, examples.rank_calibration, examples.rank_test):
        if len(part["video_id"]) and "retrieval_score" not in part:
            part["example_age_s"] = np.zeros(len(part["video_id"]), np.float32)
            users = predict(candidate.user_tower, part)
            part["retrieval_score"] = np.einsum(
                "ij,ij->i", users, np.stack([vectors[v] for v in part["video_id"]])).astype(np.float32)


def train_two_stage(log: EventLog, config: TrainConfig | None = None, verbose: int = 1) -> TrainedSystem:
    """Trains candidate generation and ranking on `log` and evaluates them on later events."""
    config = config or TrainConfig()
    say = print if verbose else (lambda *a, **k: None)
    examples, embeddings = prepare(log, config)
    builder, train = examples.builder, examples.train
    rank_train, rank_calibration, rank_test = examples.rank_train, examples.rank_calibration, examples.rank_test
    say(f"examples: {len(train['video_id'])} train watches; {len(rank_train['video_id'])} train / "
        f"{len(rank_calibration['video_id'])} calibration / {len(rank_test['video_id'])} test impressions")

    report: dict = {"dataset": log.name, "users": len(log.users), "videos": len(log.videos)}
    say("training the candidate generator")
    run = train_candidate_generator(builder, config, embeddings, verbose)
    candidate, train, test = run.model, run.train, run.test
    report["candidate_train_s"] = run.train_s
    report["retrieval"] = evaluate_candidates(run, builder, seed=config.seed)
    item_ids = np.asarray(embeddings.video.vocabulary, dtype=object)
    user_vectors = predict(candidate.user_tower, test)
    add_retrieval_scores(candidate, examples)
    if examples.has_impressions:
        embeddings.adapt_continuous(retrieval_score=rank_train["retrieval_score"])

    say("training the ranker")
    ranker = Ranker(config.ranker, embeddings)
    ranker.compile(optimizer=tf.keras.optimizers.Adam(config.ranker.learning_rate))
    if examples.has_impressions:
        started = time.perf_counter()
        train_ranker(ranker, rank_train, rank_calibration, config.ranker_epochs, config.batch_size, config.seed,
                     verbose)
        report["ranker_train_s"] = time.perf_counter() - started
        report["ranking"] = ranking_report(ranker, rank_test, train["video_id"])

    say("building the ScaNN index")
    recommender = TwoStageRecommender(candidate, ranker, log.videos, config.serving)
    report["two_stage"] = two_stage_report(recommender, builder, test, train["video_id"], item_ids)
    report["scann"] = dict(recommender.index_settings, recall_at_n=recommender.index_recall(user_vectors[:1000]))
    return TrainedSystem(config, builder, embeddings, candidate, ranker, recommender, report)


def split_calibration(builder: ExampleBuilder, rows: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Training impression rows -> (fit rows, calibration rows): the latest `fraction` of them
    (by time) are held out from fitting, to pick the epoch and to calibrate exp(logit)."""
    if fraction <= 0 or len(rows) == 0:
        return rows, rows[:0]
    times = builder.impression_time[rows]
    cut = np.quantile(times, 1.0 - fraction)
    return rows[times < cut], rows[times >= cut]


def train_ranker(ranker: Ranker, train: dict[str, np.ndarray], calibration: dict[str, np.ndarray] | None,
                 epochs: int, batch_size: int = 512, seed: int = 0, verbose: int = 1,
                 callbacks: list | None = None) -> tf.keras.callbacks.History:
    """`model.fit` on impressions, validated on the calibration slice with the paper's metric.

    Keeps the epoch with the lowest validation weighted per-user loss (early stopping with
    patience 1), then fits the watch-time calibration on the same slice. The slice must be held
    out from `train` (see `split_calibration`); without one, all `epochs` run uncalibrated.
    """
    tf.keras.utils.set_random_seed(seed)
    # The ranker knows the videos it fits on (shown, or watched before a fitted impression); the
    # calibration slice's new videos stay unknown to it, as videos uploaded after training will be.
    # (pd.unique hashes; np.unique would sort the tens of millions of history entries.)
    seen = pd.unique(np.r_[np.asarray(train["video_id"], dtype=object),
                           np.asarray(train["watch_history"], dtype=object).ravel()])
    ranker.set_known_videos([v for v in seen if v != ""])
    if getattr(ranker, "optimizer", None) is None:
        ranker.compile(optimizer=tf.keras.optimizers.Adam(ranker.config.learning_rate))
    callbacks = list(callbacks or [])
    validation = None
    if calibration is not None and len(calibration["clicked"]):
        validation = to_page_dataset(calibration)
        callbacks.append(tf.keras.callbacks.EarlyStopping(monitor="val_weighted_per_user_loss", mode="min",
                                                          patience=1, restore_best_weights=True))
    history = ranker.fit(to_dataset(train, batch_size, shuffle=True, seed=seed), validation_data=validation,
                         epochs=epochs, verbose=verbose, callbacks=callbacks)
    if validation is not None:
        ranker.calibrate(calibration)
    return history


def ranking_report(ranker: Ranker, examples: dict[str, np.ndarray], train_labels: np.ndarray) -> dict:
    """AUC, weighted per-user loss and calibration on held-out impressions, beside popularity
    and chance."""
    pages = examples["page"]
    clicked, watch = examples["clicked"], examples["watch_time_s"]
    popularity = {v: c for v, c in zip(*np.unique(train_labels, return_counts=True))}
    scorers = {
        "tfrs_youtube": predict(ranker, examples),
        "most_popular": np.array([popularity.get(v, 0) for v in examples["video_id"]], np.float64),
        "random": np.random.default_rng(0).random(len(clicked)),
    }
    logits = scorers["tfrs_youtube"]
    clicked_watch = observed_watch_time(examples)
    # Errors clustered by video: impressions of one hit video are not independent draws.
    calibration = calibration_deciles(np.exp(logits), clicked_watch,
                                      clusters=np.asarray(examples["video_id"]).astype(str))
    return {
        name: {"auc": auc(clicked, s), "weighted_per_user_loss": weighted_per_user_loss(pages, clicked, watch, s)}
        for name, s in scorers.items()
    } | {"mean_expected_watch_time_s": float(np.exp(logits).mean()),
         "mean_observed_watch_time_s": float(clicked_watch.mean()),
         "calibration": calibration, "max_calibration_error": max_calibration_error(calibration)}


def _first_k_unwatched(ranked: np.ndarray, history: np.ndarray, k: int) -> np.ndarray:
    """Per row, the first k ids of `ranked` (a row per user, or one shared row) not in the history."""
    out = np.empty((len(history), k), dtype=object)
    for i, seen in enumerate(history):
        row, seen = (ranked[i] if ranked.ndim == 2 else ranked), set(seen)
        out[i] = [v for v in row if v not in seen][:k]
    return out


def two_stage_report(recommender: TwoStageRecommender, builder: ExampleBuilder, test: dict,
                     train_labels: np.ndarray, item_ids: np.ndarray) -> dict:
    """The served top-K lists (ScaNN -> ranker) against retrieval's order and most-popular.

    Two views of each user's held-out future, from the moment of their test request: did the
    list contain the next watch (HR@K), and what share of all their later watch time went to
    videos on the list (watch-time recall@K, the quantity the ranker is trained to order by).
    """
    users = builder.user_codes.get_indexer(test["user_id"])
    times = test["time"].astype(np.int64)
    request = builder.requests(users, times)
    served, retrieved = [], []
    for i in range(0, len(users), 1024):
        chunk = as_tensors({k: v[i:i + 1024] for k, v in request.items()})
        served.append(recommender.recommend(chunk)["video_ids"].numpy().astype(str))
        retrieved.append(recommender.retrieve(recommender.user_request(chunk))["video_ids"].numpy().astype(str))
    served = np.concatenate(served)
    k = served.shape[1]
    history = request["watch_history"]
    popular = pd.Series(train_labels).value_counts().index.to_numpy(dtype=str)[: k + history.shape[1]]
    lists = {"tfrs_youtube": served,
             "retrieval_order": _first_k_unwatched(np.concatenate(retrieved), history, k),
             "most_popular": _first_k_unwatched(popular, history, k)}

    log = builder.log
    future = log.watches.merge(pd.DataFrame({"user_id": test["user_id"], "t": times, "row": np.arange(len(users))}),
                               on="user_id")
    future = future[future["time"] >= future["t"]]
    total = future.groupby("row")["watch_time_s"].sum().reindex(np.arange(len(users)), fill_value=0.0)
    report = {}
    for name, ids in lists.items():
        hits = np.array([t in set(row) for t, row in zip(test["video_id"].astype(str), ids)])
        listed = [set(row) for row in ids]  # once per user, not once per future watch
        on_list = np.array([v in listed[r] for v, r in zip(future["video_id"], future["row"])], bool)
        covered = future[on_list].groupby("row")["watch_time_s"].sum().reindex(total.index, fill_value=0.0)
        share = (covered / total.where(total > 0)).dropna()
        report[name] = {f"HR@{k}": float(hits.mean()), f"watch_time_recall@{k}": float(share.mean())}
    return report
