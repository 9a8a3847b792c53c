"""The one trainer: an examples folder and a `TrainConfig` in, both stages trained.

Every caller trains through here: the CLI's runs (`run_training.train_run`, with checkpoints and
resumption as callbacks), the demo and `train_two_stage`, the benchmarks and the examples. The
steps, in order:

1. `build_models`: the shared `FeatureEmbeddings` from the examples' vocabularies and catalog,
   its quantile normalisers adapted on a sample of the training examples (one pass, bounded),
   the candidate generator and the ranker, every seed derived from `TrainConfig.seed`;
2. `fit_candidate_generator`: `model.fit` on the retrieval shards, validated on the next watches;
3. `fit_ranker`: `model.fit` on the fitted pages, early-stopped and calibrated on the
   calibration pages.

Models read examples as they stream from the shards (`inputs.dataset`), so memory does not grow
with the log. Given a `tf.distribute` strategy (`distributed`), the models are built in its
scope and trained across its processes by the same steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time

import numpy as np
import tensorflow as tf

from tfrs_youtube.candidate import CandidateConfig, CandidateGenerator, candidate_features
from tfrs_youtube.distributed import is_parameter_server, training_input
from tfrs_youtube.features.context import IMPRESSION_CONTINUOUS
from tfrs_youtube.features.embeddings import EmbeddingConfig, FeatureEmbeddings
from tfrs_youtube.inputs import dataset
from tfrs_youtube.optimizers import model_optimizer
from tfrs_youtube.pipeline.config import ExampleConfig
from tfrs_youtube.pipeline.example_set import ExampleSet, ExamplesError
from tfrs_youtube.ranking import RETRIEVAL_SCORE, Ranker, RankerConfig, ranking_features
from tfrs_youtube.serving import ServingConfig

# Examples read to adapt the quantile normalisers (each feature's CDF): enough for 100 quantiles
# to be stable, few enough that adapting costs seconds whatever the size of the log.
QUANTILE_SAMPLE_EXAMPLES = 200_000
QUANTILE_SAMPLE_PAGES = 20_000
EVALUATION_BATCH = 4096


@dataclasses.dataclass
class TrainConfig:
    """Everything that decides a trained system; round-trips through JSON. `seed` is the one
    seed: the examples' per-user sampling, every initialiser, the data order and the sampled
    negatives derive from it."""

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

    def __post_init__(self):
        for name in ("candidate_epochs", "ranker_epochs"):  # a stage not to train: --stage, not 0 epochs
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**31:  # numpy and TensorFlow seeds (with room for the derived ones)
            raise ValueError(f"TrainConfig.seed must be in [0, 2^31), got {self.seed}")
        if self.batch_size < 1:
            raise ValueError(f"TrainConfig.batch_size must be >= 1, got {self.batch_size}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        data = dict(data)
        for key, part in cls._PARTS.items():
            if key in data and isinstance(data[key], dict):
                data[key] = part(**data[key])
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_dict(json.loads(text))


@dataclasses.dataclass
class Models:
    """The shared embeddings and the two models that read them (and the `tf.distribute`
    strategy whose scope holds their variables, if any)."""

    embeddings: FeatureEmbeddings
    candidate: CandidateGenerator
    ranker: Ranker
    strategy: tf.distribute.Strategy | None = None

    def scope(self):
        """The strategy's scope (where compiling must happen), or no scope."""
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# Inputs


def pages_per_batch(examples: ExampleSet, batch_size: int) -> int:
    """Pages in a ranking batch of about `batch_size` impressions."""
    pages, impressions = examples.num_records("ranking", "fit"), examples.num_impressions("fit")
    return max(1, round(batch_size * pages / impressions)) if impressions else 1


def with_retrieval_scores(pages: tf.data.Dataset, candidate: CandidateGenerator) -> tf.data.Dataset:
    """Adds u·v, the candidate generator's score of each page's videos as of the page's request
    (example age 0): a ranking feature (paper 4.1), as the served index hands it over."""
    def add(batch):
        user = candidate.user_tower(dict(batch, example_age_s=tf.zeros_like(batch["age"])))
        return dict(batch, **{RETRIEVAL_SCORE: tf.einsum("bd,bnd->bn", user, candidate.video_vectors(batch["video_id"]))})
    return pages.map(add)


def ranking_dataset(examples: ExampleSet, models: Models, config: TrainConfig, split: str, shuffle: bool = False,
                    batch_pages: int | None = None) -> tf.data.Dataset:
    pages = dataset(examples, "ranking", split, batch_pages or pages_per_batch(examples, config.batch_size),
                    shuffle=shuffle, seed=config.seed, features=ranking_features(models.embeddings))
    return with_retrieval_scores(pages, models.candidate) if config.ranker.use_retrieval_score else pages


def _sample(data: tf.data.Dataset, limit: int, batch_size: int):
    return data.take(max(1, -(-limit // batch_size)))


# ---------------------------------------------------------------------------------------------
# Models


def build_models(examples: ExampleSet, config: TrainConfig, strategy: tf.distribute.Strategy | None = None) -> Models:
    """The embeddings (quantiles adapted on a sample of the training examples), the candidate
    generator and the ranker, untrained; deterministic in the examples and the config, so that a
    saved run rebuilds them exactly before restoring their variables. With a `strategy`, their
    variables are created in its scope (the big tables sharded over its parameter servers)."""
    with examples.reading(), (strategy.scope() if strategy is not None else contextlib.nullcontext()):
        models = _build_models(examples, config)
    models.strategy = strategy
    return models


def _build_models(examples: ExampleSet, config: TrainConfig) -> Models:
    examples.check(config.examples, config.seed)
    if examples.num_records("retrieval", "train") == 0:
        raise ExamplesError(f"{examples.name}: no training examples: every watch is held out (split "
                            f"{config.examples.split!r}); users need more watches than the held-out ones "
                            f"(examples in {examples.directory})")
    seed = config.seed
    embeddings = FeatureEmbeddings.from_examples(examples, config.embeddings, seed=seed)
    batch = 8192
    ages, example_ages = [], []
    for features in _sample(dataset(examples, "retrieval", "train", batch, shuffle=True, seed=seed,
                                    features=("age", "example_age_s")), QUANTILE_SAMPLE_EXAMPLES, batch):
        ages.append(features["age"].numpy())
        example_ages.append(features["example_age_s"].numpy())
    embeddings.adapt_continuous(age=np.concatenate(ages), example_age_s=np.concatenate(example_ages))
    if examples.has_impressions():
        derived = {name: [] for name in IMPRESSION_CONTINUOUS}
        click_watch_times = []
        pages = dataset(examples, "ranking", "fit", 512, shuffle=True, seed=seed,
                        features=ranking_features(embeddings))
        for batch_pages in _sample(pages, QUANTILE_SAMPLE_PAGES, 512):
            values = embeddings.candidate_features(batch_pages, batch_pages["video_id"])
            mask = batch_pages["impression_mask"]
            for name in IMPRESSION_CONTINUOUS:
                derived[name].append(tf.boolean_mask(values[name], mask).numpy())
            clicked = mask & (batch_pages["clicked"] > 0)
            click_watch_times.append(tf.boolean_mask(batch_pages["watch_time_s"], clicked).numpy())
        embeddings.adapt_continuous(**{name: np.concatenate(v) for name, v in derived.items()})
        click_watch_times = np.concatenate(click_watch_times)
    candidate = CandidateGenerator(config.candidate, embeddings, seed=seed)
    ranker = Ranker(config.ranker, embeddings, seed=seed)
    ranker.set_known_videos(examples.statistics["ranker_video_counts"])
    if examples.has_impressions() and click_watch_times.size and click_watch_times.mean() > 0:
        ranker.set_watch_time_unit(click_watch_times.mean())
    return Models(embeddings, candidate, ranker)


def candidate_optimizer(models: Models, config: TrainConfig) -> tf.keras.optimizers.legacy.Optimizer:
    """Adam on the user tower, sparse updates on the shared tables (`optimizers`)."""
    return model_optimizer(models.candidate, models.embeddings, config.candidate.learning_rate,
                           config.candidate.embedding_optimizer)


def ranker_optimizer(models: Models, config: TrainConfig) -> tf.keras.optimizers.legacy.Optimizer:
    return model_optimizer(models.ranker, models.embeddings, config.ranker.learning_rate,
                           config.ranker.embedding_optimizer)


def _fit(model, examples: ExampleSet, train, epochs, verbose, callbacks, **kwargs) -> tf.keras.callbacks.History:
    with examples.reading():
        return model.fit(train, epochs=epochs, verbose=verbose, callbacks=list(callbacks or []), **kwargs)


def fit_input(models: Models, examples: ExampleSet, kind: str, split: str, batch_size: int, seed: int,
              features, transform=None) -> tuple[object, dict]:
    """The training split as `model.fit` reads it under the models' strategy, and the `fit`
    arguments that go with it (parameter servers: steps per epoch, since the stream repeats)."""
    remote = is_parameter_server(models.strategy)

    def make(worker):
        data = dataset(examples, kind, split, batch_size, shuffle=True, seed=seed, features=features, repeat=remote,
                       worker=worker)
        return transform(data) if transform is not None else data

    fit_args = {"steps_per_epoch": max(1, -(-examples.num_records(kind, split) // batch_size))} if remote else {}
    return training_input(make, models.strategy), fit_args


def fit_candidate_generator(models: Models, examples: ExampleSet, config: TrainConfig, verbose: int = 1,
                            callbacks: list | None = None) -> dict:
    """`model.fit` of the candidate generator on the training watches, validated on the next
    ones; returns {"train_s", "history"}."""
    tf.keras.utils.set_random_seed(config.seed)
    model = models.candidate
    if getattr(model, "optimizer", None) is None:
        with models.scope():
            model.compile(optimizer=candidate_optimizer(models, config))
    features = candidate_features(models.embeddings)
    train, fit_args = fit_input(models, examples, "retrieval", "train", config.batch_size, config.seed, features)
    validation = None
    # Across processes the streaming top-K metric cannot run (parameter servers) or is summed
    # over the workers (mirrored): evaluate after training, in one process.
    if examples.num_records("retrieval", "validation") and models.strategy is None:
        validation = dataset(examples, "retrieval", "validation", EVALUATION_BATCH, features=features)
    started = time.perf_counter()
    history = _fit(model, examples, train, config.candidate_epochs, verbose, callbacks, validation_data=validation,
                   **fit_args)
    return {"train_s": time.perf_counter() - started, "history": _history(history)}


def fit_ranker(models: Models, examples: ExampleSet, config: TrainConfig, verbose: int = 1,
               callbacks: list | None = None) -> dict:
    """`model.fit` of the ranker on the fitted pages, validated on the calibration pages with the
    paper's metric.

    Keeps the epoch with the lowest validation weighted per-user loss (early stopping with
    patience 1), then fits the watch-time calibration on the same pages. Without a calibration
    slice (`ExampleConfig.calibration_fraction` 0), all epochs run uncalibrated; across processes
    (a `tf.distribute` strategy) all epochs run, then the calibration is fitted.
    """
    tf.keras.utils.set_random_seed(config.seed)
    ranker = models.ranker
    if not examples.has_impressions():
        raise ExamplesError(f"{examples.directory} has no impressions to train the ranker on")
    remote = is_parameter_server(models.strategy)
    if remote and config.ranker.use_retrieval_score:
        raise ValueError("ranker.use_retrieval_score needs the candidate generator inside the ranker's input, which "
                         "parameter-server workers cannot run: train the ranker in one process (--stage ranker)")
    if config.ranker.use_retrieval_score:
        scores = []
        for batch in _sample(ranking_dataset(examples, models, config, "fit", batch_pages=512),
                             QUANTILE_SAMPLE_PAGES, 512):
            scores.append(tf.boolean_mask(batch[RETRIEVAL_SCORE], batch["impression_mask"]).numpy())
        models.embeddings.adapt_continuous(retrieval_score=np.concatenate(scores))
    if getattr(ranker, "optimizer", None) is None:
        with models.scope():
            ranker.compile(optimizer=ranker_optimizer(models, config))
    callbacks = list(callbacks or [])
    validation = calibration = None
    if examples.num_records("ranking", "calibration"):
        calibration = ranking_dataset(examples, models, config, "calibration")
    # Across processes validation cannot run inside `fit` (parameter servers cannot run its
    # metrics; mirrored workers would sum them): every epoch runs, then the calibration is fitted
    # (by each process, on the whole calibration slice).
    if calibration is not None and models.strategy is None:
        validation = calibration
        callbacks.append(tf.keras.callbacks.EarlyStopping(monitor="val_weighted_per_user_loss", mode="min",
                                                          patience=1, restore_best_weights=True))
    scores = (lambda pages: with_retrieval_scores(pages, models.candidate)) if config.ranker.use_retrieval_score else None
    train, fit_args = fit_input(models, examples, "ranking", "fit", pages_per_batch(examples, config.batch_size),
                                      config.seed, ranking_features(models.embeddings), transform=scores)
    started = time.perf_counter()
    history = _fit(ranker, examples, train, config.ranker_epochs, verbose, callbacks, validation_data=validation,
                   **fit_args)
    if calibration is not None:
        ranker.calibrate(calibration)
    return {"train_s": time.perf_counter() - started, "history": _history(history)}


def _history(history) -> dict:
    return {k: [float(x) for x in v] for k, v in getattr(history, "history", {}).items()}


def train(examples: ExampleSet, config: TrainConfig, stages=("candidate", "ranker"), verbose: int = 1,
          callbacks: dict | None = None, say=print, strategy: tf.distribute.Strategy | None = None
          ) -> tuple[Models, dict]:
    """Builds the models and fits the asked stages; returns them with each stage's figures.

    `callbacks` maps a stage to the Keras callbacks of its `fit` (checkpoints, TensorBoard);
    `strategy` (from `distributed.Distribution`) trains them across its processes.
    """
    say = say or (lambda *a, **k: None)
    callbacks = callbacks or {}
    models = build_models(examples, config, strategy)
    info = {}
    if "candidate" in stages:
        say("training the candidate generator")
        info["candidate"] = fit_candidate_generator(models, examples, config, verbose, callbacks.get("candidate"))
    if "ranker" in stages:
        say("training the ranker")
        info["ranker"] = fit_ranker(models, examples, config, verbose, callbacks.get("ranker"))
    return models, info
