"""Training runs on disk (`runs`): an interrupted run's `.partial` folder, with or without its
record, never blocks training, and is named as such by export and train (issue 22's hostile
probe, defect 1 and defect 7's `.partial` hint). Runs through the command line, resumption
included, are in tests/test_cli_commands.py; on a cluster, in tests/test_distributed.py."""

from __future__ import annotations

import os

import pytest


def _config(**changes):
    from tests.conftest import tiny_config

    config = tiny_config()
    config.candidate_epochs = 1
    for key, value in changes.items():
        setattr(config, key, value)
    return config


@pytest.mark.slow
def test_a_partial_folder_without_its_record_never_blocks_training(tiny_examples, tmp_path):
    """`mkdir RUN.partial` is the state a kill right after the folder appeared used to leave:
    without --resume training said "add --resume", with it `No such file ... config.json`."""
    from tfrs_youtube.run_training import train_run
    from tfrs_youtube.runs import load_run

    messages = []
    for resume in (False, True):
        out = tmp_path / f"run-{resume}"
        os.makedirs(f"{out}.partial")
        train_run(_config(), tiny_examples.directory, str(out), stage="candidate", resume=resume, verbose=0,
                  say=messages.append)
        assert os.path.isfile(out / "run.json") and not os.path.exists(f"{out}.partial")
    assert any("nothing to resume" in m for m in messages)
    assert load_run(str(tmp_path / "run-True"), say=messages.append).info["stages"].keys() == {"candidate"}


def test_a_partial_run_is_named_as_such_by_export_and_train(tmp_path):
    from tfrs_youtube.run_training import train_run
    from tfrs_youtube.runs import RunError, load_run

    partial = tmp_path / "run.partial"
    partial.mkdir()
    (partial / "run.json").write_text("{}")
    with pytest.raises(RunError, match=r"interrupted training run.*train --resume --out .*run` "):
        load_run(str(partial))
    with pytest.raises(RunError, match=r"must not end in \.partial.*--out .*run --resume"):
        train_run(_config(), str(tmp_path), str(partial))
