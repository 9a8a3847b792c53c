"""Training into a run folder (`runs`), with resumption after an interruption.

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
from tfrs_youtube.files import replace_dir, write_text
from tfrs_youtube.pipeline import ExampleSet, build_examples
from tfrs_youtube.pipeline.example_set import is_example_set
from tfrs_youtube.runs import (EXAMPLES_SUBDIR, FORMAT, PARTIAL_SUFFIX, STAGES, RunError, examples_dir,
                               existing_run, partial_dir, read_config, read_info, restore_into, save_stage,
                               write_json)
from tfrs_youtube.training import TrainConfig, build_models, fit_candidate_generator, fit_ranker

# Config keys that decide the candidate stage: `--stage ranker` on an existing run must not
# change them, because it builds on that run's trained candidate generator.
CANDIDATE_KEYS = ("examples", "embeddings", "candidate", "candidate_epochs", "batch_size", "seed")


class Interrupted(RunError):
    """Training stopped before it finished; the partial run can be resumed."""

    exit_code = 130  # the shell's code for Ctrl-C


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
        existing = existing_run(run_dir)
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
        write_json(os.path.join(tmp, "run.json"), info)
        os.rename(tmp, work)
        faults.point("train:partial-created")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _open_examples(directory: str, info: dict) -> ExampleSet:
    examples = ExampleSet(examples_dir(directory, info))
    digest = info.get("examples_fingerprint")
    if digest is None:
        info["examples_fingerprint"] = examples.fingerprint()
        write_json(os.path.join(directory, "run.json"), info)
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
        save_stage(work, "candidate", models)
        done["candidate"] = {"epochs": config.candidate_epochs, **figures, "resumed_after_epoch": epoch}
        done.pop("ranker", None)  # a new candidate generator invalidates an older ranker
        write_json(os.path.join(work, "run.json"), info)
        shutil.rmtree(os.path.join(work, "backup", "candidate"), ignore_errors=True)
    else:
        restore_into(models, examples, work, "candidate")
    if "ranker" not in stages:
        return
    epoch = saved_epoch(os.path.join(work, "backup", "ranker"))
    faults.point("train:before-ranker")
    say("training the ranker" + (f" (resuming after epoch {epoch})" if epoch else ""))
    figures = fit_ranker(models, examples, config, verbose, callbacks=_stage_callbacks(work, "ranker", logdir))
    save_stage(work, "ranker", models)
    done["ranker"] = {"epochs": config.ranker_epochs, **figures, "resumed_after_epoch": epoch}
    write_json(os.path.join(work, "run.json"), info)


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
