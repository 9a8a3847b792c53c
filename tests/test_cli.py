"""The `tfrs-youtube evaluate` path: a data directory in, a JSON report of retrieval metrics out."""

import json
import subprocess
import sys

import pytest

from conftest import MOVIELENS_FIXTURES as FIXTURES  # noqa: E402  (laid out from *.fixture)


@pytest.mark.slow
@pytest.mark.parametrize("index", ["exact", "scann"])
def test_evaluate_writes_a_json_report(tmp_path, index):
    fixture = "ml-100k-mini"
    out = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "tfrs_youtube", "evaluate", "--data", str(FIXTURES / fixture),
                           "--epochs", "1", "--ks", "1,3", "--index", index, "--verbose", "0", "--json", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["index"] == index and report["split"] == "test" and report["watched_excluded"]
    assert set(report["metrics"]) == {"tfrs_youtube", "most_popular", "random"}
    for metrics in report["metrics"].values():
        assert set(metrics) == {"HR@1", "NDCG@1", "MAP@1", "HR@3", "NDCG@3", "MAP@3"}
        assert all(0.0 <= v <= 1.0 for v in metrics.values())
        assert metrics["HR@1"] <= metrics["HR@3"]


def test_evaluate_names_a_directory_without_data(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tfrs_youtube", "evaluate", "--data", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert str(tmp_path) in done.stderr and ("u.data" in done.stderr or "ratings.dat" in done.stderr)


def test_evaluate_says_when_nothing_is_left_to_train_on(tmp_path):
    # The 1M fixture has at most two ratings a user: both are held out.
    done = subprocess.run([sys.executable, "-m", "tfrs_youtube", "evaluate", "--data", str(FIXTURES / "ml-1m-mini")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "ml-1m: no training examples" in done.stderr
