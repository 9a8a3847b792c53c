"""A training run on disk: what `tfrs-youtube train` writes and `evaluate` / `export` read back.

RUN_DIR holds:

- `config.json`: the complete `TrainConfig` (every default spelled out);
- `run.json`: the examples folder it trained on and their fingerprint, the stages done (epochs,
  seconds, the Keras history), library versions;
- `examples/`: the examples, when the run was given an event log rather than an examples
  folder (`tfrs-youtube data examples`); a run given a folder records where it is;
- `checkpoints/candidate/`, `checkpoints/ranker/`: a `tf.train.Checkpoint` of the models after
  each stage (candidate: the candidate generator with the shared embeddings; ranker: both).

Why checkpoints of models rebuilt from config + examples, rather than SavedModels: evaluation
and export need the live Python models (`reports` and `TwoStageRecommender` take them), and a
subclassed TFRS model has no Keras config to re-create it from a SavedModel. Everything a model
is made of is either derived deterministically from the config and the examples (vocabularies,
catalog, label frequencies, the adapted quantiles) or a variable, which the checkpoint holds.
Loading rebuilds the models as training built them (`training.build_models`), checks that the
examples still have the recorded fingerprint, and restores every variable, asserting that each
one found its value.

Training (`run_training`) writes the run as `RUN_DIR.partial` beside RUN_DIR (`partial_dir`),
which becomes RUN_DIR when the requested stages are done.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import tensorflow as tf

from tfrs_youtube.files import read_json, replace_dir, write_text
from tfrs_youtube.inputs import dataset
from tfrs_youtube.pipeline import ExampleSet
from tfrs_youtube.training import Models, TrainConfig, build_models, candidate_features, ranking_features

FORMAT = 2
STAGES = ("candidate", "ranker")
PARTIAL_SUFFIX = ".partial"
EXAMPLES_SUBDIR = "examples"


class RunError(ValueError):
    """A run directory is missing, incomplete or does not fit the given config or data."""


@dataclasses.dataclass
class LoadedRun:
    """A run rebuilt from its directory: config, examples and the trained models."""

    directory: str
    config: TrainConfig
    info: dict
    examples: ExampleSet
    models: Models
    has_ranker: bool


# --------------------------------------------------------------------------------------------
# Files of a run


def partial_dir(run_dir: str) -> str:
    return os.path.abspath(run_dir).rstrip(os.sep) + PARTIAL_SUFFIX


def read_info(directory: str) -> dict:
    return read_json(os.path.join(directory, "run.json"), "a training run's record")


def read_config(directory: str) -> TrainConfig:
    from tfrs_youtube.config_files import config_from_dict

    # Through the file checker, so that a hand-edited config.json is checked key by key.
    path = os.path.join(directory, "config.json")
    return config_from_dict(read_json(path, "a TrainConfig"), where=path)


def write_json(path: str, value) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=True, default=_plain))


def _plain(value):
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _checkpoint(models: Models, stage: str) -> tf.train.Checkpoint:
    """The candidate stage saves the whole generator (with its optimizer: it can train on); the
    ranker stage the ranker and the generator's user tower, all that serving reads of it, so its
    checkpoint holds the same objects whether the generator was trained or restored there."""
    if stage == "candidate":
        return tf.train.Checkpoint(embeddings=models.embeddings, candidate=models.candidate)
    return tf.train.Checkpoint(embeddings=models.embeddings, user_tower=models.candidate.user_tower,
                               ranker=models.ranker)


def save_stage(directory: str, stage: str, models: Models) -> None:
    """Writes `checkpoints/<stage>/` whole: into a temporary folder, then renamed into place."""
    final = os.path.join(directory, "checkpoints", stage)
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _checkpoint(models, stage).write(os.path.join(tmp, "model"))
    replace_dir(tmp, final)


def examples_dir(directory: str, info: dict) -> str:
    """Where a run's examples are: its own folder, or the one it was given."""
    return os.path.join(directory, EXAMPLES_SUBDIR) if info.get("own_examples") else info["examples"]


def existing_run(run_dir: str) -> dict:
    if not os.path.isfile(os.path.join(run_dir, "run.json")):
        raise RunError(f"{run_dir} exists and is not a training run (no run.json)")
    return read_info(run_dir)


# --------------------------------------------------------------------------------------------
# Loading


def create_variables(models: Models, examples: ExampleSet, ranker: bool) -> None:
    """Calls the models once, so that every variable exists to restore into."""
    batch = next(iter(dataset(examples, "retrieval", "train", 1, features=candidate_features(models.embeddings))))
    models.candidate.user_tower(batch)
    if ranker:
        page = next(iter(dataset(examples, "ranking", "fit", 1, features=ranking_features(models.embeddings))))
        if models.ranker.config.use_retrieval_score:
            page["retrieval_score"] = tf.zeros(tf.shape(page["video_id"]), tf.float32)
        models.ranker(page)


def restore_into(models: Models, examples: ExampleSet, directory: str, stage: str) -> None:
    create_variables(models, examples, ranker=stage == "ranker")
    status = _checkpoint(models, stage).read(os.path.join(directory, "checkpoints", stage, "model"))
    status.assert_existing_objects_matched()  # every variable of the rebuilt models got its value
    status.expect_partial()  # the optimizer's slots are saved too; evaluation and export need none


def load_run(run_dir: str, examples_path: str | None = None, say=print) -> LoadedRun:
    """Rebuilds a finished run's models from its config and examples and restores their variables.

    `examples_path` overrides where the examples are (e.g. after moving them); they must be the
    same examples (their fingerprint is checked).
    """
    run_dir = os.path.abspath(run_dir)
    if run_dir.endswith(PARTIAL_SUFFIX):
        finished = run_dir[:-len(PARTIAL_SUFFIX)]
        raise RunError(f"{run_dir} is an interrupted training run, not a finished one: finish it with "
                       f"`tfrs-youtube train --resume --out {finished}` (same --config and --data), then use "
                       f"{finished}")
    if not os.path.isdir(run_dir):
        hint = f" (an interrupted run is at {partial_dir(run_dir)}: train --resume)" if os.path.isdir(
            partial_dir(run_dir)) else ""
        raise RunError(f"run directory {run_dir} does not exist{hint}")
    info = existing_run(run_dir)
    if info.get("format") != FORMAT:
        raise RunError(f"{run_dir}: run format {info.get('format')!r}, this version reads {FORMAT}; train it again")
    if "candidate" not in info["stages"]:
        raise RunError(f"{run_dir} has no trained stage")
    config = read_config(run_dir)
    if examples_path:
        info = dict(info, own_examples=False, examples=os.path.abspath(examples_path))
    examples = ExampleSet(examples_dir(run_dir, info))
    if examples.fingerprint() != info.get("examples_fingerprint"):
        raise RunError(f"the examples at {examples.directory} differ from those the run at {run_dir} was trained on")
    for table, note in examples.notes.items():
        if table in ("searches", "impressions"):
            say(f"{examples.name} {table}: {note}")
    models = build_models(examples, config)
    has_ranker = "ranker" in info["stages"]
    restore_into(models, examples, run_dir, "ranker" if has_ranker else "candidate")
    return LoadedRun(run_dir, config, info, examples, models, has_ranker)
