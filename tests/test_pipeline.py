"""The example pipeline (Beam): no example sees its future, held-out watches are each user's latest,
the same log gives the same shards on any number of workers, and bad input is named, not written."""

import dataclasses
import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import log_folder
from tfrs_youtube.data.schema import EventLog, SchemaError
from tfrs_youtube.data.tables import write_tables
from tfrs_youtube.inputs import arrays, dataset
from tfrs_youtube.pipeline import ExampleConfig, ExampleSet, ExamplesError, build_examples
from tfrs_youtube.pipeline.config import CUT_RESOLUTION_S

_BUILT = {}


def built(log, tmp_path_factory, config: ExampleConfig, seed: int = 0, name: str | None = None) -> ExampleSet:
    """The examples of `log` with `config`, built once per test session."""
    key = (id(log), json.dumps(config.to_dict(), sort_keys=True), seed)
    if key not in _BUILT:
        out = tmp_path_factory.mktemp("pipeline") / (name or "examples")
        _BUILT[key] = build_examples(log, str(out), config, seed=seed, say=None)
    return _BUILT[key]


def decoded(examples: ExampleSet, kind: str, split: str) -> dict:
    """A split as arrays with ids as strings ("" for padding)."""
    out = arrays(examples, kind, split)
    video = np.asarray([""] + examples.vocabulary("video"), dtype=object)
    token = np.asarray([""] + examples.vocabulary("token"), dtype=object)
    for name in ("watch_history", "impression_history"):
        if name in out:
            out[name] = video[out[name]]
    if "search_tokens" in out:
        out["search_tokens"] = token[out["search_tokens"]]
    out["video_id"] = video[out["video_id"]]
    for name in ("watched", "future_videos"):
        if name in out:
            out[name] = np.array([video[v] for v in out[name]] + [None], dtype=object)[:-1]
    out["user_id"] = out["user_id"].astype(str)
    return out


@pytest.fixture(scope="module")
def uncapped(tiny_log, tmp_path_factory):
    return built(tiny_log, tmp_path_factory, ExampleConfig(max_examples_per_user=None))


def test_histories_only_hold_events_strictly_before_the_label(uncapped, tiny_log):
    watches = tiny_log.watches
    by_user = {u: g.sort_values("time", kind="stable") for u, g in watches.groupby("user_id")}
    searches = {u: g for u, g in tiny_log.searches.groupby("user_id")}
    examples = decoded(uncapped, "retrieval", "train")
    assert len(examples["user_id"]) == len(watches) - 2 * len(tiny_log.users)  # every other watch is a label
    rng = np.random.default_rng(0)
    for i in rng.choice(len(examples["user_id"]), 300, replace=False):
        user, t = examples["user_id"][i], int(examples["request_time"][i])
        past = by_user[user][by_user[user].time < t]
        expected = list(past.video_id[::-1][:50])
        history = [v for v in examples["watch_history"][i] if v]
        # Exactly the last 50 watches before t, most recent first (ties in file order).
        assert history == expected
        ages = examples["watch_ages_s"][i][: len(history)]
        np.testing.assert_array_equal(ages, (t - past.time.to_numpy()[::-1][:50]).astype(np.float32))
        assert (ages > 0).all(), "a history watch at or after the label time leaked in"
        tokens = [tok for tok in examples["search_tokens"][i] if tok]
        user_searches = searches.get(user)
        if user_searches is not None:
            before = user_searches[user_searches.time < t].sort_values("time", kind="stable")
            assert tokens == " ".join(before["query"]).split()[::-1][:50]  # last token of the latest query first
        else:
            assert tokens == []


def test_user_last_split_holds_out_each_users_latest_watches(uncapped, tiny_log):
    frame = tiny_log.watches.assign(order=np.arange(len(tiny_log.watches)))
    last = frame.sort_values(["time", "order"], kind="stable").groupby("user_id").tail(2)
    test, validation = (decoded(uncapped, "retrieval", s) for s in ("test", "validation"))
    assert len(test["user_id"]) == len(validation["user_id"]) == len(tiny_log.users)
    for user, group in last.groupby("user_id"):
        assert validation["video_id"][list(validation["user_id"]).index(user)] == group.video_id.iloc[0]
        assert test["video_id"][list(test["user_id"]).index(user)] == group.video_id.iloc[1]


def test_example_age_is_measured_from_the_training_window_end(uncapped, tiny_log, tmp_path_factory):
    frame = tiny_log.watches.assign(order=np.arange(len(tiny_log.watches)))
    ranked = frame.sort_values(["time", "order"], kind="stable").groupby("user_id").cumcount(ascending=False)
    assert uncapped.window_end == frame.time[ranked >= 2].max()  # the last training watch
    ages = {}
    for split in ("train", "test"):
        batch = next(iter(dataset(uncapped, "retrieval", split, 100_000, features=("request_time", "example_age_s"))))
        ages[split] = batch
    np.testing.assert_allclose(ages["train"]["example_age_s"].numpy(),
                               uncapped.window_end - ages["train"]["request_time"].numpy())
    assert (ages["test"]["example_age_s"].numpy() == 0).all()  # requests made now, as at serving
    true_age = built(tiny_log, tmp_path_factory, ExampleConfig(max_examples_per_user=None, held_out_example_age="true"))
    batch = next(iter(dataset(true_age, "retrieval", "test", 100_000, features=("request_time", "example_age_s"))))
    np.testing.assert_allclose(batch["example_age_s"].numpy(),
                               np.maximum(true_age.window_end - batch["request_time"].numpy(), 0))


def test_cap_limits_examples_per_user_and_is_seeded(tiny_log, tmp_path_factory):
    config = ExampleConfig(max_examples_per_user=5)
    capped = decoded(built(tiny_log, tmp_path_factory, config, seed=3), "retrieval", "train")
    assert pd.Series(capped["user_id"]).value_counts().max() == 5
    again = decoded(build_examples(tiny_log, str(tmp_path_factory.mktemp("again") / "e"), config, seed=3, say=None),
                    "retrieval", "train")
    np.testing.assert_array_equal(capped["video_id"], again["video_id"])
    other = decoded(built(tiny_log, tmp_path_factory, config, seed=4), "retrieval", "train")
    assert not np.array_equal(capped["request_time"], other["request_time"])


def test_pages_hold_one_request_and_only_its_past(uncapped, tiny_log):
    impressions = tiny_log.impressions
    pages = decoded(uncapped, "ranking", "fit")
    rng = np.random.default_rng(1)
    for i in rng.choice(len(pages["user_id"]), 100, replace=False):
        user, t = pages["user_id"][i], pages["request_time"][i]
        mine = impressions[impressions.user_id == user]
        page = mine[mine.time == t]
        shown = pages["impression_mask"][i]
        assert list(pages["video_id"][i][shown]) == list(page.video_id)  # the whole page, in log order
        np.testing.assert_array_equal(pages["clicked"][i][shown], page.clicked)
        earlier = mine[mine.time < t].sort_values("time", kind="stable")
        history = [v for v in pages["impression_history"][i] if v]
        assert history == list(earlier.video_id[::-1][:100])  # strictly before: not this page's own
    cuts = uncapped.cuts
    times = {split: arrays(uncapped, "ranking", split, ("request_time",))["request_time"]
             for split in ("fit", "calibration", "test")}
    assert times["fit"].max() < cuts.calibration_cutoff <= times["calibration"].min()
    assert times["calibration"].max() < cuts.impression_cutoff <= times["test"].min()
    assert cuts.impression_cutoff % CUT_RESOLUTION_S == 0
    assert sum(uncapped.num_impressions(s) for s in times) == len(impressions)
    # The ranker knows the videos its fitted pages show or hold in their histories.
    known = uncapped.statistics["ranker_video_counts"] > 0
    vocabulary = uncapped.vocabulary("video")
    seen = set(np.concatenate([pages["video_id"][pages["impression_mask"]], pages["watch_history"].ravel()])) - {""}
    assert {vocabulary[i - 1] for i in np.flatnonzero(known)} == seen


def test_label_counts_are_the_training_labels(uncapped):
    labels = arrays(uncapped, "retrieval", "train", ("video_id",))["video_id"]
    np.testing.assert_array_equal(uncapped.label_counts(), np.bincount(labels, minlength=len(uncapped.label_counts())))


def _same_second_log(tiny_log):
    """The tiny log with one user's watches all at one second (as MovieLens often has)."""
    tables = {name: table.copy() for name, table in tiny_log.tables().items()}
    watches = tables["watches"]
    user = watches.user_id.iloc[0]
    watches.loc[watches.user_id == user, "time"] = int(watches.time.max())
    return EventLog(**tables).validate(), user


def test_ties_in_file_order_keep_earlier_rows_of_the_same_second(tiny_log, tmp_path_factory):
    log, user = _same_second_log(tiny_log)
    mine = log.watches[log.watches.user_id == user]
    for ties, expected in (("exclude", []), ("file_order", list(mine.video_id[:-1][::-1]))):
        test = decoded(built(log, tmp_path_factory, ExampleConfig(ties=ties, max_examples_per_user=None)),
                       "retrieval", "test")
        row = list(test["user_id"]).index(user)
        assert test["video_id"][row] == mine.video_id.iloc[-1]  # the last in file order is the target
        assert [v for v in test["watch_history"][row] if v] == expected[:50]
        assert list(test["watched"][row]) == expected  # the whole history, for exclusion, not just 50


def test_watched_holds_the_whole_history_and_future_the_rest(uncapped, tiny_log):
    test = decoded(uncapped, "retrieval", "test")
    for i in range(0, len(test["user_id"]), 17):
        user, t = test["user_id"][i], test["request_time"][i]
        mine = tiny_log.watches[tiny_log.watches.user_id == user]
        assert sorted(test["watched"][i]) == sorted(mine[mine.time < t].video_id)
        assert sorted(test["future_videos"][i]) == sorted(mine[mine.time >= t].video_id)


def test_time_split_cuts_both_stages_at_one_moment(tiny_log, tmp_path_factory):
    examples = built(tiny_log, tmp_path_factory, ExampleConfig(split="time", holdout_fraction=0.2,
                                                               max_examples_per_user=None))
    cut = examples.cuts.watch_cutoff
    assert cut % CUT_RESOLUTION_S == 0 and examples.window_end == cut
    times = tiny_log.watches.time
    # The first whole hour by which at least 80% of the watches happened.
    assert (times < cut).mean() >= 0.8 > (times < cut - CUT_RESOLUTION_S).mean()
    train, validation, test = (decoded(examples, "retrieval", s) for s in ("train", "validation", "test"))
    assert train["request_time"].max() < cut <= test["request_time"].min()
    assert validation["request_time"].max() < cut
    frame = tiny_log.watches
    for user in test["user_id"][:20]:
        mine = frame[frame.user_id == user]
        assert test["request_time"][list(test["user_id"]).index(user)] == mine[mine.time >= cut].time.min()
    assert examples.cuts.impression_cutoff == cut


@pytest.mark.parametrize("split", ["user_last", "time"])
def test_surrounding_context_holds_the_whole_training_period_but_the_label(tiny_log, tmp_path_factory, split):
    """Figure 5a's examples: the history is every training-period watch of the user, before and
    after the label, most recent first, without the label itself and without anything held out."""
    config = ExampleConfig(split=split, holdout_fraction=0.2, max_examples_per_user=None, train_context="surrounding")
    examples = built(tiny_log, tmp_path_factory, config)
    rollback = built(tiny_log, tmp_path_factory, dataclasses.replace(config, train_context="rollback"))
    mine_, theirs = decoded(examples, "retrieval", "train"), decoded(rollback, "retrieval", "train")
    np.testing.assert_array_equal(mine_["video_id"], theirs["video_id"])  # same labels, other context
    np.testing.assert_array_equal(mine_["request_time"], theirs["request_time"])
    validation = decoded(rollback, "retrieval", "validation")
    held_out_from = dict(zip(validation["user_id"], zip(validation["request_time"], validation["video_id"])))
    frame = tiny_log.watches.assign(order=np.arange(len(tiny_log.watches)))
    after_label = checked = 0
    for i in np.random.default_rng(1).choice(len(mine_["user_id"]), 150, replace=False):
        user, t, label = mine_["user_id"][i], mine_["request_time"][i], mine_["video_id"][i]
        watches = frame[frame.user_id == user].sort_values(["time", "order"], kind="stable").reset_index(drop=True)
        # The training period: every watch before the user's validation watch (the first held out).
        v_time, v_video = held_out_from[user]
        end = watches.index[(watches.time == v_time) & (watches.video_id == v_video)][0]
        period = watches.iloc[:end]
        position = period.index[(period.time == t) & (period.video_id == label)]
        if len(position) != 1:
            continue  # the same video twice in one second: which one is the label is ambiguous
        expected = list(period.drop(position).video_id[::-1][:50])  # most recent first, the label left out
        assert [v for v in mine_["watch_history"][i] if v] == expected
        np.testing.assert_array_equal(mine_["watch_ages_s"][i][: len(expected)],
                                      np.abs(t - period.drop(position).time.to_numpy()[::-1][:50]).astype(np.float32))
        after_label += int((period.time > t).any())
        checked += 1
    assert checked > 100
    assert after_label > 50, "the test should see labels with later watches in their context"
    # Held-out examples are requests: unchanged, the past only.
    for name in ("validation", "test"):
        np.testing.assert_array_equal(decoded(examples, "retrieval", name)["watch_history"],
                                      decoded(rollback, "retrieval", name)["watch_history"])
    with pytest.raises(ValueError, match="train_context"):
        ExampleConfig(train_context="random")


def _shard_bytes(examples: ExampleSet) -> dict:
    out = {}
    for key, shards in examples.spec["shards"].items():
        for shard in shards:
            with open(os.path.join(examples.directory, shard["file"]), "rb") as f:
                out[shard["file"]] = f.read()
    return out


@pytest.mark.slow
def test_same_log_same_shards_on_any_workers_and_any_file_layout(tiny_log, tmp_path):
    """Two DirectRunner processes, and the log as three Parquet files per table instead of one CSV,
    give the very same bytes: which shard a user lands in and the order inside are fixed."""
    config = ExampleConfig(split="time")
    csv = tmp_path / "csv"
    write_tables(tiny_log.tables(), str(csv))
    parquet = tmp_path / "parquet"
    write_tables(tiny_log.tables(), str(parquet), shards=3, format="parquet")
    one = build_examples(str(csv), str(tmp_path / "one"), config, say=None)
    two = build_examples(str(parquet), str(tmp_path / "two"), config, workers=2, say=None)
    assert _shard_bytes(one) == _shard_bytes(two)
    assert one.fingerprint() == two.fingerprint()
    assert one.vocabularies() == two.vocabularies()
    for name in ("label_counts", "ranker_video_counts", "catalog_topic", "catalog_upload_time", "catalog_duration"):
        np.testing.assert_array_equal(one.statistics[name], two.statistics[name])


# ---- bad input: one error naming the file and the field, and nothing written ----------------

def _fails(folder, tmp_path, match):
    out = tmp_path / "out"
    with pytest.raises(SchemaError, match=match) as err:
        build_examples(str(folder), str(out), ExampleConfig(), say=None)
    assert not out.exists() and not [p for p in os.listdir(tmp_path) if p.startswith((".out", ".work"))]
    return err.value


def test_a_malformed_row_is_named_by_file_and_row(tiny_log, tmp_path):
    folder = log_folder(tiny_log, tmp_path)
    path = folder / "watches.csv"
    lines = path.read_text().splitlines()
    lines[8] = lines[8].replace(lines[8].split(",")[2], "soon", 1)  # the time of data row 7, line 9
    path.write_text("\n".join(lines) + "\n")
    err = _fails(folder, tmp_path, r"watches\.csv.*column 'time', line 9: 'soon' is not a number")
    assert err.path == str(path) and err.row == 7
    lines[8] = lines[8] + ",extra,fields"
    path.write_text("\n".join(lines) + "\n")
    _fails(folder, tmp_path, r"table 'watches' \(file .*watches\.csv\): cannot read it")


def test_unknown_and_duplicate_ids_are_named(tiny_log, tmp_path):
    def unknown_video(tables):
        tables["impressions"].loc[5, "video_id"] = "v-nope"

    err = _fails(log_folder(tiny_log, tmp_path, unknown_video), tmp_path, "unknown video_id 'v-nope'")
    assert err.table == "impressions" and err.row == 5

    def unknown_user(tables):
        tables["users"] = tables["users"][tables["users"].user_id != tables["watches"].user_id.iloc[0]]

    shutil.rmtree(tmp_path / "log")
    err = _fails(log_folder(tiny_log, tmp_path, unknown_user), tmp_path, "unknown user_id")
    assert err.column == "user_id" and err.path.endswith(".csv")

    def duplicate_video(tables):
        tables["videos"] = pd.concat([tables["videos"], tables["videos"].iloc[[3]]], ignore_index=True)

    shutil.rmtree(tmp_path / "log")
    err = _fails(log_folder(tiny_log, tmp_path, duplicate_video), tmp_path, "duplicate id")
    assert err.table == "videos" and err.row == len(tiny_log.videos)


def test_a_damaged_shard_is_named_before_or_while_training(tiny_log, tmp_path):
    examples = build_examples(tiny_log, str(tmp_path / "ex"), ExampleConfig(), say=None)
    shard = examples.files("retrieval", "train")[0]
    data = bytearray(open(shard, "rb").read())
    data[len(data) // 2] ^= 0xFF  # a flipped bit keeps the size: only the records' checksums tell
    open(shard, "wb").write(bytes(data))
    reopened = ExampleSet(examples.directory)
    assert shard in reopened.locate_damage()
    from tfrs_youtube.training import TrainConfig, build_models

    with pytest.raises(ExamplesError, match="damaged"):
        build_models(reopened, TrainConfig(candidate_epochs=1))
    open(shard, "wb").write(bytes(data[:-100]))  # truncated: the spec's size tells at once
    with pytest.raises(ExamplesError, match=r"train-00000\.tfrecord has \d+ bytes, the spec recorded"):
        ExampleSet(examples.directory)


def test_examples_built_with_other_settings_are_refused_by_name(uncapped, tiny_log, tmp_path_factory):
    uncapped.check(ExampleConfig(max_examples_per_user=None))
    with pytest.raises(ExamplesError, match=r"examples\.history_length = 50, the config asks for 20"):
        uncapped.check(ExampleConfig(max_examples_per_user=None, history_length=20))
    capped = built(tiny_log, tmp_path_factory, ExampleConfig(max_examples_per_user=5), seed=3)
    capped.check(ExampleConfig(max_examples_per_user=5), seed=3)
    with pytest.raises(ExamplesError, match="seed 3, the config's seed is 4"):
        capped.check(ExampleConfig(max_examples_per_user=5), seed=4)
    uncapped.check(ExampleConfig(max_examples_per_user=None), seed=4)  # no sampling: the seed plays no part


# ---- where it runs: a script or a notebook, leaving nothing behind ------------------------------

BUILD_IN_A_SHELL = """
import tfrs_youtube
from tfrs_youtube.data.synthetic import SyntheticConfig, generate
from tfrs_youtube.pipeline import build_examples
examples = build_examples(generate(SyntheticConfig.tiny(seed=0)), {out!r}, workers={workers}, say=None)
print("records", sum(examples.spec["records"].values()))
"""


@pytest.mark.slow
@pytest.mark.parametrize("shell,workers", [("python", 2), ("ipython", 1)])
def test_builds_in_a_script_or_ipython_and_leaves_no_temporary_files(tmp_path, shell, workers):
    """In IPython (a notebook's kernel) Beam's interactive integration would import its DataFrame
    API, which fails under pandas 3; the DirectRunner would try to download the Prism runner and
    leave its temporary folders. Neither happens: the build runs, and the temporary folder it was
    given is empty afterwards."""
    import subprocess
    import sys

    temp = tmp_path / "tmp"
    temp.mkdir()
    out = tmp_path / "examples"
    code = BUILD_IN_A_SHELL.format(out=str(out), workers=workers)
    command = ([sys.executable, "-c", code] if shell == "python" else
               [os.path.join(os.path.dirname(sys.executable), "ipython"), "--colors=NoColor", "-c", code])
    done = subprocess.run(command, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TMPDIR=str(temp), TF_CPP_MIN_LOG_LEVEL="3"))
    assert done.returncode == 0 and "records" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Error" not in done.stdout, done.stdout[-3000:]  # IPython prints a failed cell's traceback
    assert ExampleSet(str(out)).num_records("retrieval", "train") > 0
    assert os.listdir(temp) == []


def test_the_local_runner_is_named_so_beam_never_fetches_prism():
    from tfrs_youtube.pipeline.beam import pipeline_options

    options = pipeline_options(2).get_all_options()
    assert options["runner"] == "FnApiRunner" and options["direct_num_workers"] == 2
    assert pipeline_options(1, ["--runner=FlinkRunner"]).get_all_options()["runner"] == "FlinkRunner"
