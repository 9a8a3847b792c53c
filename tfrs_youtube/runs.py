"""A training run on disk: what `tfrs-youtube train` writes and `evaluate` / `export` read back.

RUN_DIR holds:

- `config.json`: the complete `TrainConfig` (every default spelled out);
- `run.json`: the data directory and its fingerprint, the stages done (epochs, seconds, the
  Keras history), library versions;
- `vocabularies.json`: the row order of every embedding table;
- `checkpoints/candidate/`, `checkpoints/ranker/`: a `tf.train.Checkpoint` of the models after
  each stage (candidate: the candidate generator with the shared embeddings; ranker: both).

Why checkpoints of models rebuilt from config + data, rather than SavedModels (`save_ranker`):
evaluation and export need the live Python models (`evaluate_candidates`, `ranking_report` and
`TwoStageRecommender` take them), and a subclassed TFRS model has no Keras config to re-create
it from a SavedModel. Everything a model is made of is either derived deterministically from
the config and the data (vocabularies, label frequencies, example splits) or a variable, which
the checkpoint holds (weights, quantiles, calibration, the ranker's known-video mask). Loading
rebuilds the models as training built them, checks that the data still has the recorded
fingerprint and gives the same vocabularies, and restores every variable, asserting that each
one found its value.

While training, everything lives in `RUN_DIR.partial` beside RUN_DIR, plus `backup/<stage>/`:
Keras' `BackupAndRestore` state (weights, optimizer slots, epoch) saved at every epoch end.
RUN_DIR appears, by rename, only when the requested stages are done, so it is never half a run.
After an interruption (Ctrl-C, a killed process) `train_run(..., resume=True)` reopens the
partial run, restores finished stages from their checkpoints and continues the unfinished one
after its last saved epoch. What resumption restores is the model and optimizer state and the
epoch counter; the data order (the shuffle restarts its seeded sequence), random draws (sampled
negatives, unknown-video and history dropping) and the ranker's early-stopping memory of its best epoch
restart with the process, so a resumed run matches the uninterrupted one exactly only where
those play no part (one batch per epoch, no sampled negatives or dropout, no calibration slice):
`tests/test_cli_commands.py` checks that case.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time

import numpy as np
import tensorflow as tf

from tfrs_youtube.candidate import CandidateGenerator
from tfrs_youtube.data import directory as datadir
from tfrs_youtube.data.schema import EventLog
from tfrs_youtube.features.embeddings import FeatureEmbeddings
from tfrs_youtube.export import library_versions
from tfrs_youtube.files import replace_dir, write_text
from tfrs_youtube.pipeline import as_tensors
from tfrs_youtube.ranking import Ranker
from tfrs_youtube.training import (CandidateRun, Examples, TrainConfig, add_retrieval_scores, prepare,
                                   train_candidate_generator, train_ranker)

FORMAT = 1
STAGES = ("candidate", "ranker")
PARTIAL_SUFFIX = ".partial"
# Config keys that decide the candidate stage: `--stage ranker` on an existing run must not
# change them, because it builds on that run's trained candidate generator.
CANDIDATE_KEYS = ("examples", "embeddings", "candidate", "candidate_epochs", "batch_size", "seed")


class RunError(ValueError):
    """A run directory is missing, incomplete or does not fit the given config or data."""


class Interrupted(RunError):
    """Training stopped before it finished; the partial run can be resumed."""

    exit_code = 130  # the shell's code for Ctrl-C


@dataclasses.dataclass
class LoadedRun:
    """A run rebuilt from its directory: config, data, examples and the trained models."""

    directory: str
    config: TrainConfig
    info: dict
    log: EventLog
    examples: Examples
    embeddings: FeatureEmbeddings
    candidate: CandidateGenerator
    ranker: Ranker | None

    def candidate_run(self) -> CandidateRun:
        """The candidate stage as `evaluate_candidates` takes it."""
        b = self.examples.builder
        return CandidateRun(self.candidate, self.embeddings, self.examples.train, b.retrieval_examples("validation"),
                            b.retrieval_examples("test"), self.info["stages"]["candidate"]["train_s"])


# --------------------------------------------------------------------------------------------
# Files of a run


def partial_dir(run_dir: str) -> str:
    return os.path.abspath(run_dir).rstrip(os.sep) + PARTIAL_SUFFIX


def read_info(directory: str) -> dict:
    with open(os.path.join(directory, "run.json")) as f:
        return json.load(f)


def read_config(directory: str) -> TrainConfig:
    from tfrs_youtube.config_files import config_from_dict

    # Through the file checker rather than `from_json`, so lists become the tuples they were.
    with open(os.path.join(directory, "config.json")) as f:
        return config_from_dict(json.load(f), where=os.path.join(directory, "config.json"))


def _write_json(path: str, value) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=True, default=_plain))


def _plain(value):
    return value.tolist() if hasattr(value, "tolist") else str(value)


def _checkpoint(embeddings, candidate, ranker=None) -> tf.train.Checkpoint:
    """The candidate stage saves the whole generator (with its optimizer: it can train on); the
    ranker stage the ranker and the generator's user tower, all that serving reads of it, so its
    checkpoint holds the same objects whether the generator was trained or restored there."""
    if ranker is None:
        return tf.train.Checkpoint(embeddings=embeddings, candidate=candidate)
    return tf.train.Checkpoint(embeddings=embeddings, user_tower=candidate.user_tower, ranker=ranker)


def _save_stage(directory: str, stage: str, checkpoint: tf.train.Checkpoint) -> None:
    """Writes `checkpoints/<stage>/` whole: into a temporary folder, then renamed into place."""
    final = os.path.join(directory, "checkpoints", stage)
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    checkpoint.write(os.path.join(tmp, "model"))
    replace_dir(tmp, final)


def saved_epoch(backup_dir: str) -> int | None:
    """The last epoch (1-based count) that `BackupAndRestore` saved under `backup_dir`, if any."""
    found = tf.train.latest_checkpoint(os.path.join(backup_dir, "chief"))
    if found is None:
        return None
    reader = tf.train.load_checkpoint(found)
    key = next((k for k in reader.get_variable_to_shape_map() if k.startswith("ckpt_saved_epoch")), None)
    return None if key is None else int(reader.get_tensor(key)) + 1


class _UnbuiltModelWarning(logging.Filter):
    """Drops Keras' warning that `BackupAndRestore` wants a built model: the training functions
    build their models inside `fit`, and a checkpoint restores variables created after the read
    (deferred restoration), which the resumption test checks."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "To use the BackupAndRestore callback" not in record.getMessage()


def _stage_callbacks(directory: str, stage: str, logdir: str | None) -> list:
    logger = logging.getLogger("tensorflow")
    if not any(isinstance(f, _UnbuiltModelWarning) for f in logger.filters):
        logger.addFilter(_UnbuiltModelWarning())
    callbacks = [tf.keras.callbacks.BackupAndRestore(os.path.join(directory, "backup", stage),
                                                     # Deleted by us once the stage's checkpoint is
                                                     # written: Keras would delete it before that.
                                                     delete_checkpoint=False)]
    if logdir:
        # Per-epoch scalars only: no graph (subclassed models) and no profiler.
        callbacks.append(tf.keras.callbacks.TensorBoard(os.path.join(logdir, stage), write_graph=False,
                                                        profile_batch=0))
    return callbacks


def _history(model) -> dict:
    history = getattr(model, "history", None)
    return {k: [float(x) for x in v] for k, v in getattr(history, "history", {}).items()}


# --------------------------------------------------------------------------------------------
# Training


def train_run(config: TrainConfig, data_dir: str, run_dir: str, stage: str = "both", logdir: str | None = None,
              resume: bool = False, verbose: int = 1, say=print) -> str:
    """Trains the asked stages into `run_dir` (see the module docstring); returns its path.

    Raises `RunError` for an unusable combination of run directory, config and data (before
    anything is written), and `Interrupted` when training stops part-way (Ctrl-C), saying
    where to resume from.
    """
    if stage not in ("candidate", "ranker", "both"):
        raise RunError(f"unknown stage {stage!r} (candidate, ranker or both)")
    run_dir = os.path.abspath(run_dir)
    work = partial_dir(run_dir)
    stages = STAGES if stage == "both" else (stage,)
    data_dir = os.path.abspath(data_dir)
    resuming = resume and os.path.isdir(work)
    if os.path.isdir(work) and not resume:
        raise RunError(f"an interrupted run is at {work}: add --resume to continue it, or delete it")
    if resuming:
        key = _first_difference(_plain_dict(read_config(work)), _plain_dict(config))
        if key:
            raise RunError(f"the config differs from the interrupted run's at {work} (key {key!r})")
    elif os.path.exists(run_dir):
        existing = _existing_run(run_dir)
        if stage != "ranker":
            if resume and set(stages) <= set(existing.get("stages", {})):
                say(f"{run_dir} has already finished {', '.join(stages)}; nothing to resume")
                return run_dir
            raise RunError(f"{run_dir} already exists (choose a new --out, or --stage ranker to retrain "
                           f"its ranker)")
        if "candidate" not in existing.get("stages", {}):
            raise RunError(f"{run_dir} has no trained candidate generator: train --stage candidate first")
        key = _first_difference(_plain_dict(read_config(run_dir)), _plain_dict(config), CANDIDATE_KEYS)
        if key:
            raise RunError(f"config key {key!r} differs from the run's; it decides the trained candidate "
                           f"generator, so train --stage both into a new --out instead")
    elif stage == "ranker":
        raise RunError(f"{run_dir} does not exist: --stage ranker continues a run trained with --stage candidate")

    log = datadir.read_dataset(data_dir)
    datadir.say_notes(log, say)
    examples, embeddings = prepare(log, config)
    if len(examples.train["video_id"]) == 0:
        raise RunError(f"{log.name}: no training examples: every watch is held out (split "
                       f"{config.examples.split!r}); users need more watches than the held-out ones")
    if "ranker" in stages and not examples.has_impressions:
        raise RunError(f"{log.name} has no impressions to train the ranker on: use --stage candidate, or "
                       f"derive impressions (tfrs-youtube data movielens --impressions-per-watch K)")
    digest = datadir.fingerprint(data_dir)

    created = not os.path.isdir(work)
    if created:
        if os.path.exists(run_dir):  # --stage ranker: start from a copy of the finished run
            shutil.copytree(run_dir, work)
        else:
            os.makedirs(work)
            _write_json(os.path.join(work, "vocabularies.json"), embeddings.vocabularies)
            _write_json(os.path.join(work, "run.json"), {
                "format": FORMAT, "data": data_dir, "data_fingerprint": digest, "dataset": log.name,
                "stages": {}, "library_versions": library_versions()})
        write_text(os.path.join(work, "config.json"), config.to_json())
    info = read_info(work)
    _check_data(info, digest, embeddings, work)
    try:
        _train_stages(work, info, config, examples, embeddings, stages, logdir, verbose, say)
    except BaseException as err:
        if created and not _resumable(work):
            shutil.rmtree(work, ignore_errors=True)  # nothing saved yet: leave nothing behind
        elif isinstance(err, KeyboardInterrupt):
            raise Interrupted(f"interrupted: {_progress(work)} saved in {work}; rerun the same command with "
                              f"--resume to continue") from None
        else:
            say(f"training failed; {_progress(work)} saved in {work} (rerun with --resume once fixed)")
        raise
    shutil.rmtree(os.path.join(work, "backup"), ignore_errors=True)  # resumption state: done with
    replace_dir(work, run_dir)
    say(f"trained {', '.join(stages)} -> {run_dir}")
    return run_dir


def _train_stages(work: str, info: dict, config: TrainConfig, examples: Examples, embeddings: FeatureEmbeddings,
                  stages: tuple[str, ...], logdir: str | None, verbose: int, say) -> None:
    done = info["stages"]
    if "candidate" in stages and "candidate" not in done:
        epoch = saved_epoch(os.path.join(work, "backup", "candidate"))
        say("training the candidate generator" + (f" (resuming after epoch {epoch})" if epoch else ""))
        run = train_candidate_generator(examples.builder, config, embeddings, verbose,
                                        callbacks=_stage_callbacks(work, "candidate", logdir))
        candidate = run.model
        _save_stage(work, "candidate", _checkpoint(embeddings, candidate))
        done["candidate"] = {"epochs": config.candidate_epochs, "train_s": run.train_s,
                             "history": _history(candidate), "resumed_after_epoch": epoch}
        done.pop("ranker", None)  # a new candidate generator invalidates an older ranker
        _write_json(os.path.join(work, "run.json"), info)
        shutil.rmtree(os.path.join(work, "backup", "candidate"), ignore_errors=True)
    else:
        candidate = restore_candidate(work, examples, embeddings, config)
    if "ranker" not in stages:
        return
    epoch = saved_epoch(os.path.join(work, "backup", "ranker"))
    say("training the ranker" + (f" (resuming after epoch {epoch})" if epoch else ""))
    add_retrieval_scores(candidate, examples)
    embeddings.adapt_continuous(retrieval_score=examples.rank_train["retrieval_score"])
    ranker = Ranker(config.ranker, embeddings)
    ranker.compile(optimizer=tf.keras.optimizers.Adam(config.ranker.learning_rate))
    started = time.perf_counter()
    history = train_ranker(ranker, examples.rank_train, examples.rank_calibration, config.ranker_epochs,
                           config.batch_size, config.seed, verbose, callbacks=_stage_callbacks(work, "ranker", logdir))
    _save_stage(work, "ranker", _checkpoint(embeddings, candidate, ranker))
    done["ranker"] = {"epochs": config.ranker_epochs, "train_s": time.perf_counter() - started,
                      "history": {k: [float(x) for x in v] for k, v in history.history.items()},
                      "resumed_after_epoch": epoch}
    _write_json(os.path.join(work, "run.json"), info)


def _resumable(work: str) -> bool:
    return os.path.isdir(os.path.join(work, "checkpoints")) or any(
        saved_epoch(os.path.join(work, "backup", s)) for s in STAGES)


def _progress(work: str) -> str:
    done = list(read_info(work)["stages"])
    parts = [f"stage {s} finished" for s in done]
    for s in STAGES:
        epoch = saved_epoch(os.path.join(work, "backup", s))
        if epoch and s not in done:
            parts.append(f"{s} epoch {epoch}")
    return ", ".join(parts) or "nothing"


def _first_difference(a: dict, b: dict, keys=None, prefix: str = "") -> str | None:
    for key in keys or sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            found = _first_difference(x, y, None, f"{prefix}{key}.")
            if found:
                return found
        elif x != y:
            return prefix + key
    return None


def _plain_dict(config: TrainConfig) -> dict:
    return json.loads(config.to_json())  # tuples and lists alike, as in config.json


def _existing_run(run_dir: str) -> dict:
    if not os.path.isfile(os.path.join(run_dir, "run.json")):
        raise RunError(f"{run_dir} exists and is not a training run (no run.json)")
    return read_info(run_dir)


def _check_data(info: dict, digest: str, embeddings: FeatureEmbeddings, directory: str) -> None:
    if info["data_fingerprint"] != digest:
        raise RunError(f"the data differs from the data the run at {directory} was trained on "
                       f"({info['data']}, fingerprint {info['data_fingerprint'][:12]})")
    with open(os.path.join(directory, "vocabularies.json")) as f:
        saved = json.load(f)
    for name, vocabulary in embeddings.vocabularies.items():
        if saved.get(name) != list(vocabulary):
            raise RunError(f"the data gives a different {name!r} vocabulary than the run at {directory}")


# --------------------------------------------------------------------------------------------
# Loading


def _one_row(examples: dict) -> dict:
    return {k: v[:1] for k, v in examples.items()}


def restore_candidate(directory: str, examples: Examples, embeddings: FeatureEmbeddings,
                      config: TrainConfig) -> CandidateGenerator:
    """The candidate generator as its stage left it (before any ranker fine-tuning)."""
    candidate = CandidateGenerator(config.candidate, embeddings)
    candidate.user_tower(as_tensors(_one_row(examples.train)))  # create the variables to restore into
    _restore(_checkpoint(embeddings, candidate), directory, "candidate")
    return candidate


def _restore(checkpoint: tf.train.Checkpoint, directory: str, stage: str) -> None:
    status = checkpoint.read(os.path.join(directory, "checkpoints", stage, "model"))
    status.assert_existing_objects_matched()  # every variable of the rebuilt models got its value
    status.expect_partial()  # the optimizer's slots are saved too; evaluation and export need none


def load_run(run_dir: str, data_dir: str | None = None, say=print) -> LoadedRun:
    """Rebuilds a finished run's models from its config and data and restores their variables.

    `data_dir` overrides the recorded data directory (e.g. after moving the data); it must hold
    the same data (fingerprint and vocabularies are checked).
    """
    run_dir = os.path.abspath(run_dir)
    if not os.path.isdir(run_dir):
        hint = f" (an interrupted run is at {partial_dir(run_dir)}: train --resume)" if os.path.isdir(
            partial_dir(run_dir)) else ""
        raise RunError(f"run directory {run_dir} does not exist{hint}")
    info = _existing_run(run_dir)
    if info.get("format") != FORMAT:
        raise RunError(f"{run_dir}: run format {info.get('format')!r}, this version reads {FORMAT}")
    if "candidate" not in info["stages"]:
        raise RunError(f"{run_dir} has no trained stage")
    config = read_config(run_dir)
    data_dir = data_dir or info["data"]
    log = datadir.read_dataset(data_dir)
    datadir.say_notes(log, say)
    examples, embeddings = prepare(log, config)
    _check_data(info, datadir.fingerprint(data_dir), embeddings, run_dir)
    candidate = CandidateGenerator(config.candidate, embeddings)
    candidate.user_tower(as_tensors(_one_row(examples.train)))
    ranker = None
    if "ranker" in info["stages"]:
        # Variables first, values second: the ranker's quantiles and layers exist once it has
        # scored a row (its retrieval score is a placeholder until the restored generator's).
        ranker = Ranker(config.ranker, embeddings)
        row = _one_row(examples.rank_train)
        row.update(example_age_s=np.zeros(1, np.float32), retrieval_score=np.zeros(1, np.float32))
        ranker(as_tensors(row))
        _restore(_checkpoint(embeddings, candidate, ranker), run_dir, "ranker")
        add_retrieval_scores(candidate, examples)
    else:
        _restore(_checkpoint(embeddings, candidate), run_dir, "candidate")
    return LoadedRun(run_dir, config, info, log, examples, embeddings, candidate, ranker)
