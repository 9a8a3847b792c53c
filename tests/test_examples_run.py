"""The examples run as written: every script at small size, every notebook top to bottom.

Scripts run in a subprocess with TFRS_YOUTUBE_EXAMPLE_SIZE=small; notebooks are executed with
nbclient, at small size, from a temporary copy (the committed outputs, from a full-size run by
examples/execute_notebooks.py, are never overwritten). Any error fails the test.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SCRIPTS = {
    # script -> lines its output must contain
    "train_candidate_generator.py": ["HR@10 = "],
    "train_ranker.py": ["weighted per-user loss", "decile", "mean exp(logit)"],
    "export_and_query.py": ["signatures: ['rank', 'retrieve', 'serving_default', 'user_embedding']",
                            "expected watch time", "REST body:", "REST answer:"],
    "custom_dataset.py": ["rejected as expected: table 'watches', column 'watch_time_s', row 3", "top 10:"],
}
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def small_env(**extra) -> dict:
    env = dict(os.environ, TFRS_YOUTUBE_EXAMPLE_SIZE="small", TF_CPP_MIN_LOG_LEVEL="3", **extra)
    return env


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_example_script_runs_at_small_size(script, tmp_path):
    # TMPDIR: the scripts' temporary exports and copies go under pytest's tmp_path, not /tmp.
    done = subprocess.run([sys.executable, str(EXAMPLES / script)], cwd=tmp_path, env=small_env(TMPDIR=str(tmp_path)),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    for expected in SCRIPTS[script]:
        assert expected in done.stdout, f"{script}: {expected!r} not in its output:\n{done.stdout[-3000:]}"


def test_every_script_is_covered():
    assert sorted(p.name for p in EXAMPLES.glob("*.py") if p.name != "execute_notebooks.py") == sorted(SCRIPTS)


def test_candidate_script_without_data_fails_with_one_clear_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TFRS_YOUTUBE_MOVIELENS_100K", "TFRS_YOUTUBE_EXAMPLE_SIZE")}
    done = subprocess.run([sys.executable, str(EXAMPLES / "train_candidate_generator.py")], cwd=tmp_path,
                          env=dict(env, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "TFRS_YOUTUBE_MOVIELENS_100K" in lines[0] and "--data" in lines[0]


def test_there_are_four_notebooks():
    assert [p.name for p in NOTEBOOKS] == ["01_candidate_generation.ipynb", "02_ranking_and_calibration.ipynb",
                                           "03_two_stage_savedmodel.ipynb", "04_paper_experiments.ipynb"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebook_has_outputs_and_no_machine_paths(notebook):
    import nbformat

    text = notebook.read_text()
    assert len(text.encode()) < 1_000_000, f"{notebook.name} is {len(text.encode())} bytes"
    nb = nbformat.reads(text, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count is not None for c in code), "committed without a full run"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, errors[0]
    # Outputs of a full-size run, not of the small CI size (the first cell prints the size).
    assert "example size: full" in "".join(o.get("text", "") for o in code[0].outputs)
    for machine_path in {str(REPO), str(REPO.parent), "/tmp/"}:
        assert machine_path not in json.dumps([c.outputs for c in code]), f"{notebook.name} shows {machine_path}"


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes_at_small_size(notebook, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    for name, value in small_env(TMPDIR=str(tmp_path)).items():
        monkeypatch.setenv(name, value)  # the kernel inherits this process' environment (TMPDIR: its exports)
    copy = tmp_path / notebook.name
    shutil.copyfile(notebook, copy)
    before = notebook.read_bytes()
    nb = nbformat.read(copy, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert notebook.read_bytes() == before  # the committed outputs are untouched
