"""`train_two_stage`: the library's main job in one call, from an event log to a served chain.

Examples from the log (the Beam pipeline, `pipeline.build_examples`), both stages trained by the
one trainer (`training.train`), the served chain (`serving.TwoStageRecommender`), and an
evaluation of each stage on held-out later events next to the baselines a user would otherwise
pick (`reports`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import weakref

from tfrs_youtube.pipeline import ExampleSet, build_examples
from tfrs_youtube.reports import ranking_report, retrieval_report, held_out_requests, two_stage_report
from tfrs_youtube.serving import TwoStageRecommender
from tfrs_youtube.training import Models, TrainConfig, train


@dataclasses.dataclass
class TrainedSystem:
    """The examples, the trained models, the served chain and the evaluation report."""

    config: TrainConfig
    examples: ExampleSet
    models: Models
    recommender: TwoStageRecommender
    report: dict

    @property
    def embeddings(self):
        return self.models.embeddings

    @property
    def candidate_generator(self):
        return self.models.candidate

    @property
    def ranker(self):
        return self.models.ranker


def temporary_examples(data, config: TrainConfig, workers: int = 1, say=print) -> ExampleSet:
    """Examples of `data` in a temporary folder, deleted when the returned set is."""
    parent = tempfile.mkdtemp(prefix="tfrs-youtube-examples-")
    try:
        examples = build_examples(data, os.path.join(parent, "examples"), config.examples, seed=config.seed,
                                  workers=workers, say=say)
    except BaseException:
        shutil.rmtree(parent, ignore_errors=True)
        raise
    weakref.finalize(examples, shutil.rmtree, parent, ignore_errors=True)
    return examples


def evaluate(models: Models, examples: ExampleSet, config: TrainConfig, recommender: TwoStageRecommender | None,
             stages=("candidate", "ranker")) -> dict:
    """Every figure of the trained stages on the held-out examples (see `reports`)."""
    report = {"dataset": examples.name, "users": examples.spec["users"],
              "videos": models.embeddings.video.vocabulary_size}
    report["retrieval"] = retrieval_report(models.candidate, examples, seed=config.seed)
    if "ranker" in stages and examples.has_impressions():
        report["ranking"] = ranking_report(models, examples, config)
    if recommender is not None:
        report["two_stage"] = two_stage_report(recommender, examples)
        requests, _ = held_out_requests(examples)
        from tfrs_youtube import requests as request_tools

        first = request_tools.take(recommender.user_request(requests), slice(0, 1000))
        vectors = recommender.user_embedding(request_tools.as_tensors(first))["user_embedding"].numpy()
        report["scann"] = dict(recommender.index_settings, recall_at_n=recommender.index_recall(vectors))
    return report


def train_two_stage(data, config: TrainConfig | None = None, verbose: int = 1, examples: ExampleSet | None = None,
                    workers: int = 1) -> TrainedSystem:
    """Trains candidate generation and ranking on `data` (an event log, in memory or a folder)
    or on `examples` already built, and evaluates them on later events."""
    config = config or TrainConfig()
    say = print if verbose else None
    if examples is None:
        examples = temporary_examples(data, config, workers, say=say)
    stages = ("candidate", "ranker") if examples.has_impressions() else ("candidate",)
    models, info = train(examples, config, stages, verbose=verbose, say=say or (lambda *a: None))
    recommender = TwoStageRecommender(models.candidate, models.ranker, config.serving)
    report = evaluate(models, examples, config, recommender, stages)
    report.update({f"{stage}_train_s": figures["train_s"] for stage, figures in info.items()})
    return TrainedSystem(config, examples, models, recommender, report)
