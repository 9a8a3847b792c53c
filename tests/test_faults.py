"""The fault suite: `train` and `export` killed with SIGKILL at the points where a kill leaves a
different state on disk, and the next command recovering from each.

Real subprocesses of the CLI, killed by their own pid: from outside (during imports), or by
themselves at a named point (`tfrs_youtube.faults`, the environment variable
`TFRS_YOUTUBE_KILL_AT`), which makes the timing exact and the suite deterministic. After every
kill the next command, with or without --resume, succeeds or says in one line what to do; in
the end the run is complete, every numbered version of both exported models loads, a version
number names the same run in both directories, and no temporary folder is left.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tfrs_youtube.export import PORTABLE_SUFFIX, read_metadata, versions

pytestmark = pytest.mark.slow
KILLED = -signal.SIGKILL


def _cli(*args, kill_at: str | None = None, kill_after_s: float | None = None, timeout: float = 300):
    """Runs `python -m tfrs_youtube ARGS`; returns (exit code, stderr). `kill_at` names a fault
    point; `kill_after_s` kills it from here after that long."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TFRS_YOUTUBE_KILL_AT", None)
    if kill_at:
        env["TFRS_YOUTUBE_KILL_AT"] = kill_at
    process = subprocess.Popen([sys.executable, "-m", "tfrs_youtube", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        if kill_after_s is not None:
            time.sleep(kill_after_s)
            os.kill(process.pid, signal.SIGKILL)
        _, err = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:  # never leave it behind
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode, err


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("tfrs-youtube ")]


def _leftovers(*folders) -> list[str]:
    """Temporary folders and files of an interrupted command (hidden `.x.tmp-...`, `.tmp-...`,
    `RUN.partial.new-...`)."""
    found = []
    for folder in folders:
        for path in glob.glob(os.path.join(folder, "**", "*"), recursive=True) + glob.glob(
                os.path.join(folder, "**", ".*"), recursive=True):
            name = os.path.basename(path)
            if ".tmp" in name or ".new-" in name or ".old-" in name:
                found.append(path)
    return found


@pytest.fixture(scope="module")
def killed_run(tiny_examples, tmp_path_factory):
    """A run trained through five kills: (its folder, the stderr of each step)."""
    from tests.conftest import tiny_config

    base = tmp_path_factory.mktemp("faults")
    config = tiny_config()
    config.candidate_epochs, config.ranker_epochs = 2, 1
    (base / "config.json").write_text(config.to_json())
    out = str(base / "run")
    train = ["train", "--config", str(base / "config.json"), "--data", tiny_examples.directory, "--out", out,
             "--verbose", "0"]
    steps = {}

    def step(name, *extra, kill_at=None, expect=KILLED):
        code, err = _cli(*train, *extra, kill_at=kill_at)
        steps[name] = err
        assert code == expect, (name, code, err[-2000:])
        return err

    # The partial folder exists, without its record (inside its temporary name): a new start.
    step("partial folder", kill_at="train:partial-folder")
    assert glob.glob(out + ".partial.new-*") and not os.path.exists(out + ".partial")
    step("partial created", kill_at="train:partial-created")
    assert os.path.isfile(os.path.join(out + ".partial", "run.json")) and not glob.glob(out + ".partial.new-*")
    # Nothing trained yet: without --resume it starts afresh, as it does after each of these.
    step("before the first epoch", kill_at="train:before-candidate")
    step("mid-stage", kill_at="train:candidate-epoch-1")
    # An epoch is saved: without --resume, one line saying how to continue.
    err = step("no --resume after an epoch", expect=1)
    assert _errors(err) == [f"tfrs-youtube train: error: an interrupted run is at {out}.partial: add --resume to "
                            f"continue it, or delete it"]
    step("between stages", "--resume", kill_at="train:before-ranker")
    step("resumed", "--resume", expect=0)
    return out, steps


def test_train_killed_anywhere_resumes_to_a_complete_run(killed_run):
    out, steps = killed_run
    assert "resuming after epoch 1" in steps["between stages"]
    info = json.load(open(os.path.join(out, "run.json")))
    assert set(info["stages"]) == {"candidate", "ranker"}
    assert info["stages"]["candidate"]["resumed_after_epoch"] == 1
    assert not os.path.exists(out + ".partial") and not _leftovers(os.path.dirname(out))
    code, err = _cli("train", "--config", os.path.join(os.path.dirname(out), "config.json"), "--data", out,
                     "--out", out, "--resume")
    assert code == 0 and "nothing to resume" in err


def test_export_killed_anywhere_leaves_loadable_aligned_versions(killed_run, tmp_path):
    import scann  # noqa: F401  (ScaNN's ops, to load the ScaNN model)
    import tensorflow as tf

    out, _ = killed_run
    base, name = str(tmp_path / "models"), "tiny"
    export = ["export", "--run", out, "--base-dir", base, "--name", name]
    scann_dir, portable_dir = os.path.join(base, name), os.path.join(base, name + PORTABLE_SUFFIX)
    code, _ = _cli(*export, kill_after_s=1.0)  # during the imports
    assert code == KILLED and not os.path.exists(base)
    for point in (f"export:saved:{name}", f"export:saved:{name}{PORTABLE_SUFFIX}"):  # one save done, the other not
        code, _ = _cli(*export, kill_at=point)
        assert code == KILLED and _leftovers(base) and not versions(scann_dir) and not versions(portable_dir)
    # The first variant's version is in place, its twin's is not.
    code, _ = _cli(*export, kill_at="export:first-version")
    assert code == KILLED and versions(scann_dir) == [1] and versions(portable_dir) == []
    code, err = _cli(*export)
    assert code == 0, err[-2000:]
    # The next version number is past both directories': 2 names the same export in each.
    assert versions(scann_dir) == [1, 2] and versions(portable_dir) == [2]
    assert not _leftovers(base)
    fingerprints = set()
    for version_dir in [os.path.join(scann_dir, "1"), os.path.join(scann_dir, "2"), os.path.join(portable_dir, "2")]:
        model = tf.saved_model.load(version_dir)
        assert "serving_default" in model.signatures
        fingerprints.add(read_metadata(version_dir)["run"]["examples_fingerprint"])
    assert len(fingerprints) == 1
    assert read_metadata(os.path.join(portable_dir, "2"))["scann_variant"] == name
