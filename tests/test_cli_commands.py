"""The command line of a whole workflow: data -> train -> evaluate -> export, `evaluate --data` on
a MovieLens folder, resumption after an interruption, TensorBoard logs, and one clear line (and no
partial output) for bad input.

Most commands run in this process through `cli.main` (TensorFlow is imported once); the bad-input
checks run the real `python -m tfrs_youtube` so that what reaches stderr is exactly what a user
sees. Sizes are tiny: a 150-user log, two epochs per stage.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from conftest import MOVIELENS_FIXTURES

# One batch per epoch (batch larger than the data), no sampled negatives, no unknown-video or
# history dropping and no calibration slice: nothing depends on the data order or on random draws,
# which resumption does not restore (see `run_training`), so resumed and uninterrupted runs must agree.
CONFIG_YAML = """\
preset: synthetic_demo
candidate_epochs: 2
ranker_epochs: 2
batch_size: 16384
examples:
  calibration_fraction: 0.0
candidate:
  num_sampled_negatives: 0
ranker:
  unknown_video_rate: 0.0
  unknown_history_rate: 0.0
serving:
  num_candidates: 50
"""
CONFIG_JSON = {"preset": "synthetic_demo", "candidate_epochs": 2, "ranker_epochs": 2, "batch_size": 16384,
               "examples": {"calibration_fraction": 0.0}, "candidate": {"num_sampled_negatives": 0},
               "ranker": {"unknown_video_rate": 0.0, "unknown_history_rate": 0.0},
               "serving": {"num_candidates": 50}}


def cli(*argv) -> int:
    from tfrs_youtube.cli import main

    return main([str(a) for a in argv])


def cli_process(*argv, cwd=None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the package's own default: what a user gets
    return subprocess.run([sys.executable, "-m", "tfrs_youtube", *map(str, argv)], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env=env)


def leftovers(directory: Path) -> list[str]:
    """Temporary or partial paths that a failed command must not leave behind."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") or p.name.endswith(".partial"))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def event_log(work) -> Path:
    out = work / "synthetic"
    assert cli("data", "synth", "--users", 150, "--videos", 200, "--days", 20, "--seed", 3, "--out", out) == 0
    return out


@pytest.fixture(scope="module")
def config_files(work) -> dict[str, Path]:
    (work / "config.yaml").write_text(CONFIG_YAML)
    (work / "config.json").write_text(json.dumps(CONFIG_JSON))
    return {"yaml": work / "config.yaml", "json": work / "config.json"}


@pytest.fixture(scope="module")
def trained_run(work, event_log, config_files) -> Path:
    run = work / "runs" / "tiny"
    assert cli("train", "--config", config_files["yaml"], "--data", event_log, "--out", run,
               "--logdir", work / "tb", "--verbose", 0) == 0
    return run


# --------------------------------------------------------------------------------------------
# data


def test_data_synth_writes_a_readable_log(event_log, capsys):
    from tfrs_youtube.data.directory import read_dataset, read_info

    log = read_dataset(str(event_log))  # validates every table
    assert len(log.users) == 150 and len(log.videos) == 200
    assert len(log.watches) > 0 and len(log.impressions) > 0 and len(log.searches) > 0
    info = read_info(str(event_log))
    assert info["source"] == "synthetic" and info["synthetic"]["seed"] == 3 and info["synthetic"]["days"] == 20
    assert log.notes["impressions"].startswith("Simulated")  # the notes travel with the data
    assert leftovers(event_log.parent) == []
    # The same arguments give the same log; an existing folder is only replaced with --force.
    again = event_log.parent / "again"
    assert cli("data", "synth", "--users", 150, "--videos", 200, "--days", 20, "--seed", 3, "--out", again) == 0
    assert (again / "watches.csv").read_bytes() == (event_log / "watches.csv").read_bytes()
    capsys.readouterr()
    assert cli("data", "synth", "--users", 20, "--videos", 30, "--out", again) == 1
    assert "already exists" in capsys.readouterr().err
    assert cli("data", "synth", "--users", 20, "--videos", 30, "--out", again, "--force") == 0
    assert len(read_dataset(str(again)).users) == 20 and leftovers(again.parent) == []


MOVIELENS_SOURCES = [pytest.param(MOVIELENS_FIXTURES / "ml-100k-mini", id="fixture")]
if os.environ.get("TFRS_YOUTUBE_MOVIELENS_100K"):
    MOVIELENS_SOURCES.append(pytest.param(Path(os.environ["TFRS_YOUTUBE_MOVIELENS_100K"]), id="official"))


@pytest.mark.parametrize("source", MOVIELENS_SOURCES)
def test_data_movielens_writes_a_log_with_its_notes(source, tmp_path, capsys):
    from tfrs_youtube.data.directory import read_dataset, read_info
    from tfrs_youtube.data.movielens import load_100k

    ratings = len((source / "u.data").read_text().strip().splitlines())
    out = tmp_path / "ml"
    assert cli("data", "movielens", "--variant", "100k", "--path", source, "--out", out,
               "--impressions-per-watch", 1) == 0
    err = capsys.readouterr().err
    assert "ml-100k searches: Absent" in err and "ml-100k impressions: Derived" in err
    log = read_dataset(str(out))
    assert len(log.watches) == ratings and set(log.watches["source"]) == {"external"}
    assert log.impressions["clicked"].sum() == ratings  # each rating is its page's clicked impression
    assert log.notes["impressions"] == load_100k(source, 1).notes["impressions"]
    assert read_info(str(out))["variant"] == "100k" and read_info(str(out))["source"] == "movielens"


def test_data_movielens_without_network_is_one_clear_line(tmp_path, monkeypatch, capsys):
    from tfrs_youtube.data import movielens_download

    def offline(url, destination):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(movielens_download, "_fetch", offline)
    out = tmp_path / "ml"
    assert cli("data", "movielens", "--variant", "1m", "--download-dir", tmp_path / "dl", "--out", out) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("tfrs-youtube data: error: could not download") and "ml-1m.zip" in err[-1]
    assert not out.exists() and not (tmp_path / "dl" / "ml-1m.zip.part").exists()


def test_data_movielens_of_the_wrong_variant_names_the_missing_files(tmp_path, capsys):
    assert cli("data", "movielens", "--variant", "1m", "--path", MOVIELENS_FIXTURES / "ml-100k-mini",
               "--out", tmp_path / "ml") == 1
    assert "missing ['ratings.dat'" in capsys.readouterr().err and not (tmp_path / "ml").exists()


def test_a_failed_write_leaves_no_partial_output(tmp_path, monkeypatch, capsys):
    from tfrs_youtube.data import directory

    real = directory.write_tables

    def fail_half_way(*args, **kwargs):
        real(*args, **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(directory, "write_tables", fail_half_way)
    assert cli("data", "synth", "--users", 20, "--videos", 30, "--out", tmp_path / "log") == 1
    assert "No space left on device" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_data_examples_builds_a_folder_that_train_reads(event_log, config_files, work, capsys):
    from tfrs_youtube.pipeline import ExampleSet
    from tfrs_youtube.runs import read_info

    out = work / "examples"
    capsys.readouterr()
    assert cli("data", "examples", "--data", event_log, "--out", out, "--config", config_files["yaml"]) == 0
    assert capsys.readouterr().out.split() == [str(out)]
    examples = ExampleSet(str(out))
    assert examples.config.calibration_fraction == 0.0 and examples.num_records("retrieval", "train") > 0
    assert examples.spec["source"]["path"] == str(event_log) and len(examples.spec["source"]["fingerprint"]) == 64
    line = _one_line_in_process(capsys, "data", "examples", "--data", event_log, "--out", out)
    assert "already exists" in line
    # A run given an examples folder reads it where it is; one built with other settings is refused.
    run = work / "runs" / "from-examples"
    assert cli("train", "--config", config_files["yaml"], "--data", out, "--out", run, "--stage", "candidate",
               "--verbose", 0) == 0
    assert read_info(run)["examples"] == str(out) and not (run / "examples").exists()
    other = work / "other.yaml"
    other.write_text(CONFIG_YAML.replace("examples:\n  calibration_fraction: 0.0",
                                         "examples:\n  calibration_fraction: 0.0\n  history_length: 20"))
    line = _one_line_in_process(capsys, "train", "--config", other, "--data", out, "--out", work / "runs" / "x")
    assert "examples.history_length = 50, the config asks for 20" in line
    assert not (work / "runs" / "x.partial").exists()


# --------------------------------------------------------------------------------------------
# train -> evaluate -> export


def test_train_writes_a_complete_run(trained_run, event_log, config_files):
    from tfrs_youtube.config_files import load_train_config
    from tfrs_youtube.runs import read_config, read_info

    assert not Path(str(trained_run) + ".partial").exists()
    assert sorted(os.listdir(trained_run)) == ["checkpoints", "config.json", "examples", "run.json"]
    # YAML and JSON spellings of one config are the same config, saved complete.
    assert read_config(trained_run) == load_train_config(str(config_files["yaml"]))
    assert load_train_config(str(config_files["json"])) == read_config(trained_run)
    info = read_info(trained_run)
    assert info["data"] == str(event_log) and set(info["stages"]) == {"candidate", "ranker"}
    assert info["own_examples"] and len(info["examples_fingerprint"]) == 64  # built into the run
    for stage in ("candidate", "ranker"):
        assert len(info["stages"][stage]["history"]["loss"]) == 2  # both epochs ran, none was resumed
        assert info["stages"][stage]["resumed_after_epoch"] is None


def test_evaluate_run_reports_both_stages_as_the_library_does(trained_run, event_log, work, capsys):
    """`evaluate --run` on the restored models gives the figures `train_two_stage` gives on the
    models it has just trained in memory, from the same config and data."""
    from tfrs_youtube.runs import read_config
    from tfrs_youtube.system import train_two_stage

    out = work / "evaluation.json"
    capsys.readouterr()
    assert cli("evaluate", "--run", trained_run, "--json", out) == 0
    printed = json.loads(capsys.readouterr().out)
    report = json.loads(out.read_text())
    assert printed == report and report["stages"] == ["candidate", "ranker"]
    assert set(report["retrieval"]) == {"tfrs_youtube", "most_popular", "random"}
    assert {"HR@10", "NDCG@10", "MAP@10", "HR@100"} <= set(report["retrieval"]["tfrs_youtube"])
    ranking = report["ranking"]
    assert {"auc", "weighted_per_user_loss"} <= set(ranking["tfrs_youtube"])
    assert len(ranking["calibration"]) == 10 and 0.0 <= ranking["tfrs_youtube"]["auc"] <= 1.0

    reference = train_two_stage(str(event_log), read_config(trained_run), verbose=0).report
    for name in ("tfrs_youtube", "most_popular"):
        for metric, value in reference["retrieval"][name].items():
            assert report["retrieval"][name][metric] == pytest.approx(value, abs=1e-6), (name, metric)
    for metric in ("auc", "weighted_per_user_loss"):
        assert ranking["tfrs_youtube"][metric] == pytest.approx(reference["ranking"]["tfrs_youtube"][metric],
                                                                abs=1e-5)
    assert ranking["mean_expected_watch_time_s"] == pytest.approx(
        reference["ranking"]["mean_expected_watch_time_s"], rel=1e-5)


def test_export_run_writes_both_saved_models(trained_run, work, capsys):
    from tfrs_youtube.export import read_metadata

    base = work / "saved_models"
    capsys.readouterr()
    assert cli("export", "--run", trained_run, "--base-dir", base, "--name", "tiny") == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(base / "tiny" / "1"), str(base / "tiny_portable" / "1")]
    metadata = read_metadata(printed[0])
    assert metadata["run"]["directory"] == str(trained_run) and metadata["config"]["candidate_epochs"] == 2
    assert metadata["variant"] == "scann" and read_metadata(printed[1])["variant"] == "portable"
    assert metadata["retrieval_only"] is False
    assert metadata["signatures"] == ["rank", "retrieve", "serving_default", "user_embedding"]
    # The portable twin loads with TensorFlow alone and answers a request.
    model = tf.saved_model.load(printed[1])
    signature = model.signatures["serving_default"]
    assert set(signature.structured_outputs) >= {"video_ids", "expected_watch_time_s"}
    assert leftovers(base / "tiny") == []


# A MovieLens run (no impressions, so no ranker) exports retrieval-only. MovieLens-format files
# written here rather than the ml-100k-mini fixture: its 5 movies are too few for ScaNN, whose
# hashing trains 16 centres per block on the corpus.
MOVIELENS_RUN_YAML = """\
preset: movielens
candidate_epochs: 1
serving:
  num_candidates: 10
"""
RETRIEVAL_ONLY_SERVE = """
    import json, sys
    import numpy as np
    import tensorflow as tf
    if sys.argv[1] == "scann":
        import scann  # noqa: F401  (registers ScaNN's ops)
    from tensorflow_serving.apis import prediction_log_pb2
    assert "tfrs_youtube" not in sys.modules and ("scann" in sys.modules) == (sys.argv[1] == "scann")
    model = tf.saved_model.load(sys.argv[2])
    request = dict(np.load(sys.argv[3]))
    out = {"signatures": sorted(model.signatures), "inputs": {}, "outputs": {}}
    for name in ("serving_default", "retrieve", "user_embedding"):
        signature = model.signatures[name]
        takes = sorted(signature.structured_input_signature[1])
        answer = signature(**{k: tf.constant(request[k]) for k in takes})
        out["inputs"][name] = takes
        out["outputs"][name] = {k: (v.numpy().astype(str) if v.dtype == tf.string else v.numpy()).tolist()
                                for k, v in answer.items()}
    # TF Serving replays the warm-up records at load: each must name a signature and fit its inputs.
    out["warmup"] = []
    for record in tf.data.TFRecordDataset(sys.argv[2] + "/assets.extra/tf_serving_warmup_requests"):
        predict = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in predict.inputs.items()}
        answer = model.signatures[predict.model_spec.signature_name](**inputs)
        out["warmup"].append({"model": predict.model_spec.name, "signature": predict.model_spec.signature_name,
                              "inputs": sorted(inputs), "ids": answer["video_ids"].numpy().astype(str).tolist()})
    print(json.dumps(out))
"""


def _write_movielens_100k_like(directory: Path, users: int = 40, movies: int = 30, per_user: int = 8) -> None:
    """A seeded log in the 100K files' format (the fixture's `u.genre`, invented titles)."""
    rng = np.random.default_rng(0)
    directory.mkdir(parents=True)
    shutil.copyfile(MOVIELENS_FIXTURES / "ml-100k-mini" / "u.genre", directory / "u.genre")
    with open(directory / "u.item", "w", encoding="latin-1") as f:
        for movie in range(1, movies + 1):
            flags = ["0"] * 19
            flags[movie % 19] = "1"
            f.write(f"{movie}|Movie {movie} (1995)|01-Jan-1995||http://example.invalid/movie/{movie}|"
                    + "|".join(flags) + "\n")
    with open(directory / "u.user", "w", encoding="latin-1") as f:
        for user in range(1, users + 1):
            f.write(f"{user}|{20 + user % 40}|{'MF'[user % 2]}|{('student', 'writer', 'engineer')[user % 3]}|"
                    f"{10000 + 997 * user}\n")
    popularity = 1.0 / np.arange(1, movies + 1) ** 0.8
    with open(directory / "u.data", "w", encoding="latin-1") as f:
        for user in range(1, users + 1):
            rated = rng.choice(movies, size=per_user, replace=False, p=popularity / popularity.sum()) + 1
            for i, movie in enumerate(rated):
                f.write(f"{user}\t{movie}\t{rng.integers(1, 6)}\t{880_000_000 + 1000 * user + 60 * i}\n")


def test_a_candidate_only_run_exports_a_retrieval_only_model(work, capsys):
    """MovieLens has no impressions, so its run trains only candidate generation; `export` writes
    the retrieval-only model (ScaNN and portable), each loaded in a process of its own that never
    imports this package (nor, for the portable one, ScaNN)."""
    from tfrs_youtube.export import WARMUP_FILE, read_metadata
    from tfrs_youtube.pipeline import ExampleSet
    from tfrs_youtube.reports import held_out_requests

    source, log, run = work / "ml-files", work / "ml-log", work / "runs" / "ml"
    _write_movielens_100k_like(source)
    (work / "ml.yaml").write_text(MOVIELENS_RUN_YAML)
    assert cli("data", "movielens", "--variant", "100k", "--path", source, "--out", log) == 0
    assert cli("train", "--config", work / "ml.yaml", "--data", log, "--out", run, "--stage", "candidate",
               "--verbose", 0) == 0
    base = work / "ml_models"
    capsys.readouterr()
    assert cli("export", "--run", run, "--base-dir", base) == 0
    captured = capsys.readouterr()
    printed = captured.out.split()
    assert printed == [str(base / "ml" / "1"), str(base / "ml_portable" / "1")]
    assert "exporting a retrieval-only model" in captured.err
    signatures = ["retrieve", "serving_default", "user_embedding"]
    for path, variant in zip(printed, ("scann", "portable")):
        metadata = read_metadata(path)
        assert metadata["retrieval_only"] is True and metadata["signatures"] == signatures
        assert metadata["variant"] == variant and list(metadata["run"]["stages"]) == ["candidate"]
        assert (Path(path) / "assets.extra" / WARMUP_FILE).is_file()

    requests, _ = held_out_requests(ExampleSet(str(run / "examples")))
    requests["watch_history"][0] = ""  # a cold user: no history at all
    requests["watch_ages_s"][0] = 0.0
    np.savez(work / "ml-requests.npz", **{k: (v.astype(str) if v.dtype == object else v) for k, v in requests.items()})
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = {}
    for path, variant in zip(printed, ("scann", "portable")):
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(RETRIEVAL_ONLY_SERVE), variant, path,
                               work / "ml-requests.npz"], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        out[variant] = json.loads(done.stdout.strip().splitlines()[-1])

    movies, users = {str(m) for m in range(1, 31)}, len(requests["age"])
    for variant, answer in out.items():
        assert answer["signatures"] == signatures, variant
        # One set of inputs, the user tower's: no request time, impressions or candidates.
        takes = answer["inputs"]["retrieve"]
        assert answer["inputs"]["serving_default"] == answer["inputs"]["user_embedding"] == takes
        assert "watch_history" in takes and not {"request_time", "impression_history", "candidate_ids"} & set(takes)
        retrieved = answer["outputs"]["retrieve"]
        assert answer["outputs"]["serving_default"] == retrieved, variant  # serving_default is retrieve
        assert len(retrieved["video_ids"]) == users
        for ids, scores in zip(retrieved["video_ids"], retrieved["retrieval_scores"]):
            assert len(ids) == 10 and len(set(ids)) == 10 and set(ids) <= movies, (variant, ids)
            assert scores == sorted(scores, reverse=True)
        vectors = np.asarray(answer["outputs"]["user_embedding"]["user_embedding"])
        assert vectors.shape[0] == users and np.isfinite(vectors).all()
        [warmup] = answer["warmup"]
        assert warmup["model"] == ("ml" if variant == "scann" else "ml_portable")
        assert warmup["signature"] in signatures and warmup["inputs"] == takes and len(warmup["ids"][0]) == 10
    overlap = [len(set(a) & set(b)) / 10 for a, b in zip(out["scann"]["outputs"]["retrieve"]["video_ids"],
                                                          out["portable"]["outputs"]["retrieve"]["video_ids"])]
    assert np.mean(overlap) >= 0.9, overlap

    # A run that is not finished still gets its clear error, not a retrieval-only export. (Not
    # under runs/, where other tests look for leftovers.)
    unfinished = work / "unfinished"
    (unfinished / "half.partial").mkdir(parents=True)
    line = _one_line_in_process(capsys, "export", "--run", unfinished / "half", "--base-dir", base)
    assert "an interrupted run is at" in line and "train --resume" in line
    (unfinished / "untrained").mkdir()
    (unfinished / "untrained" / "run.json").write_text(json.dumps({"format": 2, "stages": {}}))
    line = _one_line_in_process(capsys, "export", "--run", unfinished / "untrained", "--base-dir", base)
    assert line.endswith("has no trained stage")
    assert sorted(os.listdir(base)) == ["ml", "ml_portable"] and leftovers(base / "ml") == []


def test_logdir_has_both_stages_scalars(trained_run, work):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def tags(path: Path) -> set[str]:
        accumulator = EventAccumulator(str(path))
        accumulator.Reload()
        found = set(accumulator.Tags()["scalars"]) | set(accumulator.Tags()["tensors"])
        for tag in found:
            if tag.startswith("epoch_"):  # one value per epoch
                assert [e.step for e in accumulator.Tensors(tag)] == [0, 1], (path, tag)
        return found

    assert {"epoch_loss", "epoch_total_loss"} <= tags(work / "tb" / "candidate" / "train")
    assert {"epoch_loss", "epoch_factorized_top_k/top_10_categorical_accuracy"} <= tags(
        work / "tb" / "candidate" / "validation")
    assert {"epoch_loss", "epoch_auc"} <= tags(work / "tb" / "ranker" / "train")


# --------------------------------------------------------------------------------------------
# evaluate --data: a MovieLens folder in (trained on in the command), a JSON report of retrieval
# metrics out


@pytest.mark.slow
@pytest.mark.parametrize("index", ["exact", "scann"])
def test_evaluate_writes_a_json_report(tmp_path, index):
    fixture = "ml-100k-mini"
    out = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "tfrs_youtube", "evaluate",
                           "--data", str(MOVIELENS_FIXTURES / fixture),
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
    done = subprocess.run([sys.executable, "-m", "tfrs_youtube", "evaluate",
                           "--data", str(MOVIELENS_FIXTURES / "ml-1m-mini")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "ml-1m: no training examples" in done.stderr


# --------------------------------------------------------------------------------------------
# resumption


def _checkpoint_values(run: Path, stage: str) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(str(run / "checkpoints" / stage / "model"))
    return {key: reader.get_tensor(key) for key in reader.get_variable_to_shape_map()
            if not key.startswith("save_counter") and "_CHECKPOINTABLE_OBJECT_GRAPH" not in key}


def test_interrupted_training_resumes_where_it_stopped(trained_run, event_log, config_files, work, monkeypatch,
                                                       capsys):
    """Ctrl-C right after the first epoch of each stage; --resume continues after the saved epoch
    and ends with the weights (and optimizer state) of the uninterrupted run."""
    backup = tf.keras.callbacks.BackupAndRestore
    ran: list[tuple[str, int]] = []
    save = backup.on_epoch_end

    def interrupt_after_first_epoch(self, epoch, logs=None):
        save(self, epoch, logs)  # the epoch's backup is written, then the user presses Ctrl-C
        if epoch == 0:
            raise KeyboardInterrupt

    begin = backup.on_epoch_begin

    def record_epoch(self, epoch, logs=None):
        ran.append((type(self.model).__name__, epoch))
        begin(self, epoch, logs)

    monkeypatch.setattr(backup, "on_epoch_begin", record_epoch)
    monkeypatch.setattr(backup, "on_epoch_end", interrupt_after_first_epoch)
    run = work / "runs" / "resumed"
    partial = Path(str(run) + ".partial")
    args = ("train", "--config", config_files["json"], "--data", event_log, "--out", run, "--verbose", 0)

    capsys.readouterr()
    assert cli(*args) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert "candidate epoch 1" in err[-1] and "--resume" in err[-1]
    assert ran == [("CandidateGenerator", 0)] and partial.is_dir() and not run.exists()
    assert cli(*args) == 1  # without --resume, the interrupted run is not silently overwritten
    assert "add --resume" in capsys.readouterr().err

    ran.clear()
    assert cli(*args, "--resume") == 130  # the candidate stage finishes, the ranker is interrupted
    assert "stage candidate finished, ranker epoch 1" in capsys.readouterr().err
    assert ran == [("CandidateGenerator", 1), ("Ranker", 0)]

    ran.clear()
    monkeypatch.setattr(backup, "on_epoch_end", save)
    assert cli(*args, "--resume") == 0
    assert ran == [("Ranker", 1)] and run.is_dir() and not partial.exists()
    info = json.loads((run / "run.json").read_text())
    assert info["stages"]["ranker"]["resumed_after_epoch"] == 1

    for stage in ("candidate", "ranker"):
        _assert_same_checkpoint(run, trained_run, stage)


def _assert_same_checkpoint(run: Path, reference: Path, stage: str) -> None:
    values, expected = _checkpoint_values(run, stage), _checkpoint_values(reference, stage)
    assert values.keys() == expected.keys()
    assert any(f"{stage}/optimizer" in key for key in values)  # Adam's slots and step count too
    for key, value in expected.items():
        if value.dtype.kind in "OSU":
            assert (values[key] == value).all(), key
        else:
            # Float sums in another order (the shuffle) leave up to ~4e-4 of each tensor's scale
            # (Adam amplifies them where a weight's gradients are tiny: a ReLU unit that rarely
            # fires); a lost epoch or optimizer state would move values by a large part of it.
            scale = float(np.abs(value).max()) if value.size else 0.0
            np.testing.assert_allclose(values[key], value, rtol=1e-4, atol=1e-3 * max(scale, 1e-3), err_msg=key)


def test_stage_ranker_retrains_a_runs_ranker_on_its_candidate_generator(trained_run, event_log, config_files,
                                                                         work, capsys):
    run = work / "runs" / "restaged"
    shutil.copytree(trained_run, run)
    changed = work / "changed.json"
    changed.write_text(json.dumps(dict(CONFIG_JSON, candidate_epochs=3)))
    line = _one_line_in_process(capsys, "train", "--config", changed, "--data", event_log, "--out", run,
                                "--stage", "ranker")
    assert "config key 'candidate_epochs' differs from the run's" in line
    candidate = (run / "checkpoints" / "candidate" / "model.data-00000-of-00001").read_bytes()
    assert cli("train", "--config", config_files["json"], "--data", event_log, "--out", run, "--stage", "ranker",
               "--verbose", 0) == 0
    # The candidate stage is untouched; the ranker trained on it again is the one `both` trained.
    assert (run / "checkpoints" / "candidate" / "model.data-00000-of-00001").read_bytes() == candidate
    _assert_same_checkpoint(run, trained_run, "ranker")
    assert leftovers(run.parent) == []


# --------------------------------------------------------------------------------------------
# bad input: one line on stderr, a non-zero exit, nothing written


def _one_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode != 0 and len(lines) == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return lines[0]


def _one_line_in_process(capsys, *argv) -> str:
    capsys.readouterr()
    try:
        code = cli(*argv)
    except SystemExit as stop:  # argparse's exit
        code = stop.code
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1, lines
    return lines[0]


# Two real processes: what a user's terminal shows for a bad argument and for a bad config key.

def test_unknown_option_in_a_real_process(tmp_path):
    line = _one_line(cli_process("data", "synth", "--out", tmp_path / "log", "--bogus"))
    assert line == ("tfrs-youtube: error: unrecognized arguments: --bogus (see tfrs-youtube --help)")
    assert list(tmp_path.iterdir()) == []


def test_invalid_config_key_in_a_real_process(tmp_path, event_log):
    (tmp_path / "typo.yaml").write_text("candidate:\n  dept: 3\n")
    line = _one_line(cli_process("train", "--config", tmp_path / "typo.yaml", "--data", event_log,
                                 "--out", tmp_path / "run"))
    assert line.startswith("tfrs-youtube train: error: ")
    assert "unknown config key 'candidate.dept'" in line and "depth" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["typo.yaml"]


def test_bad_inputs_are_one_line_and_write_nothing(tmp_path, event_log, config_files, capsys):
    line = _one_line_in_process(capsys, "train", "--config", tmp_path / "nope.yaml", "--data", event_log,
                                "--out", tmp_path / "run")
    assert line == f"tfrs-youtube train: error: config file {tmp_path / 'nope.yaml'} does not exist"
    line = _one_line_in_process(capsys, "train", "--config", config_files["yaml"], "--data", tmp_path / "absent",
                                "--out", tmp_path / "run")
    assert line == f"tfrs-youtube train: error: data directory {tmp_path / 'absent'} does not exist"
    line = _one_line_in_process(capsys, "data", "movielens", "--variant", "10m", "--out", tmp_path / "ml")
    assert "invalid choice: '10m'" in line
    line = _one_line_in_process(capsys, "evaluate", "--run", tmp_path / "nothing")
    assert line == f"tfrs-youtube evaluate: error: run directory {tmp_path / 'nothing'} does not exist"
    line = _one_line_in_process(capsys, "export", "--run", tmp_path / "nothing")
    assert line == f"tfrs-youtube export: error: run directory {tmp_path / 'nothing'} does not exist"
    line = _one_line_in_process(capsys, "data", "synth", "--users", 0, "--out", tmp_path / "log")
    assert "num_users must be >= 1" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [("data",), ("data", "synth"), ("data", "movielens"), ("data", "examples"),
                                     ("train",),
                                     ("evaluate",), ("export",), ("recommend",), ("demo",)])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as stop:
        cli(*command, "--help")
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: tfrs-youtube {' '.join(command)}")
