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

While training, everything lives in `RUN_DIR.partial` beside RUN_DIR, plus `backup/<stage>/`:
Keras' `BackupAndRestore` state (weights, optimizer slots, epoch) saved at every epoch end.
`RUN_DIR.partial` itself appears by rename with its config and run record inside, so it is
never a folder that cannot be resumed. RUN_DIR appears, by rename, only when the requested
stages are done, so it is never half a run. After an interruption (Ctrl-C, a killed process)
`train_run(..., resume=True)` reopens the partial run, restores finished stages from their
checkpoints and continues the unfinished one after its last saved epoch. What resumption
restores is the model and optimizer state and the epoch counter; the data order (the shuffle
restarts its seeded sequence), random draws (sampled negatives, unknown-video and history
dropping) and the ranker's early-stopping memory of its best epoch restart with the process, so
a resumed run matches the uninterrupted one exactly only where those play no part (one batch per
epoch, no sampled negatives or dropout, no calibration slice): `tests/test_runs.py` checks that
case.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import os
import shutil
import uuid

import tensorflow as tf

from tfrs_youtube import faults
from tfrs_youtube.distributed import ClusterConfig, Distribution, lost_task_error
from tfrs_youtube.export import library_versions
from tfrs_youtube.files import read_json, replace_dir, write_text
from tfrs_youtube.inputs import dataset
from tfrs_youtube.pipeline import ExampleSet, build_examples
from tfrs_youtube.pipeline.example_set import is_example_set
from tfrs_youtube.training import (Models, TrainConfig, build_models, fit_candidate_generator, fit_ranker,
                                   ranking_features, candidate_features)

FORMAT = 2
STAGES = ("candidate", "ranker")
PARTIAL_SUFFIX = ".partial"
EXAMPLES_SUBDIR = "examples"
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


def _write_json(path: str, value) -> None:
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


def _save_stage(directory: str, stage: str, models: Models) -> None:
    """Writes `checkpoints/<stage>/` whole: into a temporary folder, then renamed into place."""
    final = os.path.join(directory, "checkpoints", stage)
    tmp = final + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    _checkpoint(models, stage).write(os.path.join(tmp, "model"))
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
    if faults.enabled():  # after BackupAndRestore: a kill at an epoch's end finds that epoch saved
        callbacks.append(tf.keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: faults.point(f"train:{stage}-epoch-{epoch + 1}")))
    if logdir:
        # Per-epoch scalars only: no graph (subclassed models) and no profiler.
        callbacks.append(tf.keras.callbacks.TensorBoard(os.path.join(logdir, stage), write_graph=False,
                                                        profile_batch=0))
    return callbacks


def examples_dir(directory: str, info: dict) -> str:
    """Where a run's examples are: its own folder, or the one it was given."""
    return os.path.join(directory, EXAMPLES_SUBDIR) if info.get("own_examples") else info["examples"]


# --------------------------------------------------------------------------------------------
# Training


def train_run(config: TrainConfig, data_dir: str, run_dir: str, stage: str = "both", logdir: str | None = None,
              resume: bool = False, verbose: int = 1, say=print, workers: int = 1,
              cluster: ClusterConfig | None = None) -> str:
    """Trains the asked stages into `run_dir` (see the module docstring); returns its path.

    `data_dir` is an examples folder (`tfrs-youtube data examples`), or an event log or MovieLens
    folder, whose examples the run then builds into itself with `workers` processes. With
    `cluster`, the stages train across processes (`distributed`); the checkpoints are the same,
    so evaluation, export and resumption read them in one process or on another cluster.

    Raises `RunError` for an unusable combination of run directory, config and data (before
    anything is written), and `Interrupted` when training stops part-way (Ctrl-C), saying
    where to resume from.
    """
    if stage not in ("candidate", "ranker", "both"):
        raise RunError(f"unknown stage {stage!r} (candidate, ranker or both)")
    run_dir = os.path.abspath(run_dir)
    if run_dir.endswith(PARTIAL_SUFFIX):
        raise RunError(f"--out {run_dir}: a run folder's name must not end in {PARTIAL_SUFFIX} (training writes "
                       f"RUN_DIR{PARTIAL_SUFFIX} itself); to continue that interrupted run, pass --out "
                       f"{run_dir[:-len(PARTIAL_SUFFIX)]} --resume")
    work = partial_dir(run_dir)
    stages = STAGES if stage == "both" else (stage,)
    data_dir = os.path.abspath(data_dir)
    if not os.path.isdir(data_dir):
        raise RunError(f"data directory {data_dir} does not exist")
    for stale in glob.glob(glob.escape(work) + ".new-*"):  # a start killed before its rename
        shutil.rmtree(stale, ignore_errors=True)
    if os.path.isdir(work) and not _has_record(work):
        # A partial folder without its config and run record (made by hand, or by a version that
        # created the folder before writing them): nothing in it can be resumed, so start over.
        say(f"{work} holds no run record (config.json, run.json): nothing to resume; starting afresh")
        shutil.rmtree(work)
    resuming = resume and os.path.isdir(work)
    if os.path.isdir(work) and not resume and not _resumable(work):
        # Killed before anything worth keeping was saved (no examples built, no epoch): start over.
        say(f"{work} holds nothing trained yet (an interrupted start): starting afresh")
        shutil.rmtree(work)
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

    created = not os.path.isdir(work)
    if created:
        _create_partial(work, run_dir, config, data_dir)
    try:
        info = read_info(work)
        if info.get("own_examples") and not is_example_set(os.path.join(work, EXAMPLES_SUBDIR)):
            say(f"building the examples of {data_dir} into the run")
            build_examples(data_dir, os.path.join(work, EXAMPLES_SUBDIR), config.examples, seed=config.seed,
                           workers=workers, say=say)
        examples = _open_examples(work, info)
        examples.check(config.examples, config.seed)
        if "ranker" in stages and not examples.has_impressions():
            raise RunError(f"{examples.name} has no impressions to train the ranker on: use --stage candidate, or "
                           f"derive impressions (tfrs-youtube data movielens --impressions-per-watch K)")
        if cluster is None:
            _train_stages(work, info, config, examples, stages, logdir, verbose, say)
        else:
            _train_distributed(work, info, config, examples, stages, logdir, verbose, say, cluster)
    except BaseException as err:
        if created and not _resumable(work):
            shutil.rmtree(work, ignore_errors=True)  # nothing trained yet: leave nothing behind
            raise
        if isinstance(err, KeyboardInterrupt):
            raise Interrupted(f"interrupted: {_progress(work)} saved in {work}; rerun the same command with "
                              f"--resume to continue") from None
        say(f"training failed; {_progress(work)} saved in {work} (rerun with --resume once fixed)")
        raise
    shutil.rmtree(os.path.join(work, "backup"), ignore_errors=True)  # resumption state: done with
    replace_dir(work, run_dir)
    say(f"trained {', '.join(stages)} -> {run_dir}")
    return run_dir


def _create_partial(work: str, run_dir: str, config: TrainConfig, data_dir: str) -> None:
    """`RUN_DIR.partial` with its config and run record, by rename: it is never there without
    them, however early a kill comes."""
    tmp = f"{work}.new-{uuid.uuid4().hex[:8]}"
    try:
        if os.path.exists(run_dir):  # --stage ranker: start from a copy of the finished run
            shutil.copytree(run_dir, tmp)
            info = read_info(tmp)
        else:
            os.makedirs(tmp)
            own = not is_example_set(data_dir)
            info = {"format": FORMAT, "data": data_dir, "own_examples": own,
                    "examples": None if own else data_dir, "stages": {}, "library_versions": library_versions()}
        faults.point("train:partial-folder")  # the folder exists, without its record
        write_text(os.path.join(tmp, "config.json"), config.to_json())
        _write_json(os.path.join(tmp, "run.json"), info)
        os.rename(tmp, work)
        faults.point("train:partial-created")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _open_examples(directory: str, info: dict) -> ExampleSet:
    examples = ExampleSet(examples_dir(directory, info))
    digest = info.get("examples_fingerprint")
    if digest is None:
        info["examples_fingerprint"] = examples.fingerprint()
        _write_json(os.path.join(directory, "run.json"), info)
    elif digest != examples.fingerprint():
        raise RunError(f"the examples at {examples.directory} differ from those the run at {directory} was "
                       f"trained on (fingerprint {digest[:12]})")
    return examples


def _train_distributed(work: str, info: dict, config: TrainConfig, examples: ExampleSet, stages: tuple[str, ...],
                       logdir: str | None, verbose: int, say, cluster: ClusterConfig) -> None:
    with Distribution(cluster) as distribution:
        described = distribution.describe()
        say(f"training on a {described['cluster']} cluster: {described['workers']} workers, {described['ps']} "
            f"parameter servers" + (f" (pids {distribution.local.pids()})" if distribution.local else ""))
        info["cluster"] = described
        try:
            _train_stages(work, info, config, examples, stages, logdir, verbose, say, distribution.strategy)
        except Exception as err:
            lost = lost_task_error(err, distribution.strategy)
            if lost is None:
                raise
            raise RunError(f"{lost}; {_progress(work)} saved in {work}: rerun with --resume to continue") from err


def _train_stages(work: str, info: dict, config: TrainConfig, examples: ExampleSet, stages: tuple[str, ...],
                  logdir: str | None, verbose: int, say, strategy=None) -> None:
    done = info["stages"]
    models = build_models(examples, config, strategy)
    if "candidate" in stages and "candidate" not in done:
        epoch = saved_epoch(os.path.join(work, "backup", "candidate"))
        faults.point("train:before-candidate")
        say("training the candidate generator" + (f" (resuming after epoch {epoch})" if epoch else ""))
        figures = fit_candidate_generator(models, examples, config, verbose,
                                          callbacks=_stage_callbacks(work, "candidate", logdir))
        _save_stage(work, "candidate", models)
        done["candidate"] = {"epochs": config.candidate_epochs, **figures, "resumed_after_epoch": epoch}
        done.pop("ranker", None)  # a new candidate generator invalidates an older ranker
        _write_json(os.path.join(work, "run.json"), info)
        shutil.rmtree(os.path.join(work, "backup", "candidate"), ignore_errors=True)
    else:
        _restore_into(models, examples, work, "candidate")
    if "ranker" not in stages:
        return
    epoch = saved_epoch(os.path.join(work, "backup", "ranker"))
    faults.point("train:before-ranker")
    say("training the ranker" + (f" (resuming after epoch {epoch})" if epoch else ""))
    figures = fit_ranker(models, examples, config, verbose, callbacks=_stage_callbacks(work, "ranker", logdir))
    _save_stage(work, "ranker", models)
    done["ranker"] = {"epochs": config.ranker_epochs, **figures, "resumed_after_epoch": epoch}
    _write_json(os.path.join(work, "run.json"), info)


def _has_record(work: str) -> bool:
    """Whether a partial run has what resuming reads first: its config and run record."""
    return all(os.path.isfile(os.path.join(work, name)) for name in ("config.json", "run.json"))


def _resumable(work: str) -> bool:
    """Whether a partial run holds anything worth resuming from (built examples count: they
    may have taken longest)."""
    return (os.path.isdir(os.path.join(work, "checkpoints")) or is_example_set(os.path.join(work, EXAMPLES_SUBDIR))
            or any(saved_epoch(os.path.join(work, "backup", s)) for s in STAGES))


def _progress(work: str) -> str:
    done = list(read_info(work)["stages"])
    parts = [f"stage {s} finished" for s in done]
    if is_example_set(os.path.join(work, EXAMPLES_SUBDIR)):
        parts.insert(0, "the examples")
    for s in STAGES:
        epoch = saved_epoch(os.path.join(work, "backup", s))
        if epoch and s not in done:
            parts.append(f"{s} epoch {epoch}")
    return ", ".join(parts) or "nothing trained yet"


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


# --------------------------------------------------------------------------------------------
# Loading


def _create_variables(models: Models, examples: ExampleSet, ranker: bool) -> None:
    """Calls the models once, so that every variable exists to restore into."""
    batch = next(iter(dataset(examples, "retrieval", "train", 1, features=candidate_features(models.embeddings))))
    models.candidate.user_tower(batch)
    if ranker:
        page = next(iter(dataset(examples, "ranking", "fit", 1, features=ranking_features(models.embeddings))))
        if models.ranker.config.use_retrieval_score:
            page["retrieval_score"] = tf.zeros(tf.shape(page["video_id"]), tf.float32)
        models.ranker(page)


def _restore_into(models: Models, examples: ExampleSet, directory: str, stage: str) -> None:
    _create_variables(models, examples, ranker=stage == "ranker")
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
    info = _existing_run(run_dir)
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
    _restore_into(models, examples, run_dir, "ranker" if has_ranker else "candidate")
    return LoadedRun(run_dir, config, info, examples, models, has_ranker)
