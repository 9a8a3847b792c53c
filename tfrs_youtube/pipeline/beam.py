"""The example pipeline on Apache Beam: an event log in, sharded TFRecords of examples out.

Two passes over the log, each a Beam pipeline, so that it runs on Beam's DirectRunner here
(in-process, or `--workers N` processes) and unchanged on Flink, Spark or Dataflow:

1. **Analyse**: read and validate every table file in chunks, in parallel; gather what every
   user's examples depend on: the vocabularies (videos, search tokens, countries, languages,
   ...), the video catalog (topic, language, upload time) and hourly counts of watches and
   impressions, from which the driver finds the cuts in time (`config.CUT_RESOLUTION_S`).
2. **Materialise**: read the tables again, map ids to vocabulary indices, group each user's
   events (`GroupByKey`), select their examples (`selection.select`), and write them: each
   worker writes its records to temporary parts, then each output shard's parts are merged and
   sorted by (user, time). Which shard a user lands in is a hash of their id and the order
   within a shard is fixed, so the output is the same for any runner and number of workers.

Bad input (a malformed row, an unknown video or user, a duplicate id) never half-writes an
output: errors travel as data to the end of the pass, and the first of them (by file and row)
is raised as a `SchemaError` naming the table, the file, the column and the row; the output
folder appears, by rename, only when everything is written.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import os
import pickle
import struct
import threading
import time
import uuid

import numpy as np
import pandas as pd


class _OptionalGcpWarning(logging.Filter):
    """Beam warns on import that Google Cloud's client libraries are absent; they are optional
    (only Dataflow and GCS need them), so the warning is noise on every command."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


logging.getLogger().addFilter(_OptionalGcpWarning())
import apache_beam as beam  # noqa: E402
from apache_beam import pvalue  # noqa: E402
from apache_beam.io.filesystems import FileSystems  # noqa: E402
from apache_beam.transforms.window import GlobalWindows  # noqa: E402

from tfrs_youtube.data.schema import SchemaError
from tfrs_youtube.pipeline import records, selection
from tfrs_youtube.pipeline.config import CUT_RESOLUTION_S, ExampleConfig
from tfrs_youtube.data.tables import read_chunks

# Rows of a table file are numbered across files: the file's position in its table, then the row.
SEQ_FILE_SHIFT = 40
# Records per output shard (a shard is sorted in memory when it is merged).
RETRIEVAL_RECORDS_PER_SHARD = 200_000
RANKING_RECORDS_PER_SHARD = 50_000
# A worker spills its buffered records to a part file beyond this many bytes.
PART_BUFFER_BYTES = 64 << 20
MAX_ERRORS = 20


@dataclasses.dataclass
class Plan:
    """What the materialising pass needs, fixed by the driver after the analysis."""

    config: dict
    seed: int
    cuts: selection.Cuts
    files: dict[str, list[str]]
    vocabularies: dict[str, list[str]]
    user_fields: tuple[str, ...]
    shards: dict[str, int]  # "kind/split" -> number of shards
    work_dir: str

    def example_config(self) -> ExampleConfig:
        return ExampleConfig.from_dict(self.config)

    def where(self, table: str, seq: int) -> tuple[str, int]:
        """The file and row of a row number `seq` of `table`."""
        return self.files[table][seq >> SEQ_FILE_SHIFT], seq & ((1 << SEQ_FILE_SHIFT) - 1)


def _write_pickle(value, path: str) -> None:
    with FileSystems.create(path) as f:
        f.write(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def read_pickle(path: str):
    with FileSystems.open(path) as f:
        return pickle.loads(f.read())


def _sort_key(error: SchemaError) -> tuple:
    return (error.path or "", error.row if error.row is not None else -1, str(error))


# ---------------------------------------------------------------------------------------------
# Pass 1: analyse


def _analyse_file(element, extra_user_features: tuple[str, ...]):
    """Partial statistics of one table file (see `_MergeAnalysis`), chunk by chunk."""
    table, file_index, path = element
    try:
        for offset, frame in read_chunks(table, path):
            part = _empty_analysis()
            part["rows"][table] = len(frame)
            if table == "users":
                for name in records.STANDARD_USER_FIELDS + tuple(c for c in extra_user_features if c in frame):
                    part["values"][name] = set(frame[name].astype(str))
            elif table == "videos":
                part["values"]["language"] = set(frame["language"].astype(str))
                part["values"]["topic"] = set(frame["topic"].astype(str))
                part["videos"].append(pd.DataFrame({
                    "video_id": frame["video_id"].to_numpy(object), "upload_time": frame["upload_time"].to_numpy(np.int64),
                    "language": frame["language"].astype(str).to_numpy(object),
                    "topic": frame["topic"].astype(str).to_numpy(object),
                    "duration_s": frame["duration_s"].to_numpy(np.float64),
                    "seq": (file_index << SEQ_FILE_SHIFT) + np.arange(offset, offset + len(frame))}))
            elif table == "searches":
                part["values"]["token"] = set(frame["query"].str.split().explode().dropna())
            if table in ("watches", "impressions"):
                hours, counts = np.unique(frame["time"].to_numpy(np.int64) // CUT_RESOLUTION_S, return_counts=True)
                part["hours"][table] = collections.Counter(dict(zip(hours.tolist(), counts.tolist())))
            yield part
    except SchemaError as err:
        part = _empty_analysis()
        part["errors"].append(err)
        yield part


def _empty_analysis() -> dict:
    return {"rows": collections.Counter(), "values": {}, "videos": [], "errors": [],
            "hours": {"watches": collections.Counter(), "impressions": collections.Counter()}}


class _MergingCombineFn(beam.CombineFn):
    """A CombineFn whose inputs are partial accumulators: merging is adding each to a new one."""

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for accumulator in accumulators:
            self.add_input(merged, accumulator)
        return merged


class _MergeAnalysis(_MergingCombineFn):
    """Sums the analysis partials: row counts, value sets, the catalog, hourly counts, errors."""

    def create_accumulator(self):
        return _empty_analysis()

    def add_input(self, accumulator, part):
        accumulator["rows"].update(part["rows"])
        for name, values in part["values"].items():
            accumulator["values"].setdefault(name, set()).update(values)
        accumulator["videos"] += part["videos"]
        for table, counts in part["hours"].items():
            accumulator["hours"][table].update(counts)
        accumulator["errors"] = sorted(accumulator["errors"] + part["errors"], key=_sort_key)[:MAX_ERRORS]
        return accumulator


    def extract_output(self, accumulator):
        if accumulator["videos"]:
            accumulator["videos"] = [pd.concat(accumulator["videos"], ignore_index=True)]
        return accumulator


def _vocabulary(values) -> list[str]:
    # Sorted for determinism; "" is padding and never a vocabulary entry (it maps to index 0).
    return sorted({str(v) for v in values} - {""})


def _hour_cut(counts: collections.Counter, keep: float, before: int | None = None) -> int:
    """The first whole hour b (in seconds) such that at least a `keep` share of the counted
    events (those before `before`, if given) happened before b."""
    hours = np.array(sorted(h for h in counts if before is None or h * CUT_RESOLUTION_S < before), np.int64)
    if len(hours) == 0:
        return 0 if before is None else before
    cumulative = np.cumsum([counts[h] for h in hours])
    k = int(np.searchsorted(cumulative, keep * cumulative[-1] - 1e-9, side="left"))
    return int(hours[min(k, len(hours) - 1)] + 1) * CUT_RESOLUTION_S


def cuts_from_counts(config: ExampleConfig, hours: dict[str, collections.Counter]) -> selection.Cuts:
    """The cuts in time from hourly counts of watches and impressions (see `ExampleConfig`)."""
    watch_cutoff = None
    if config.split == "time":
        watch_cutoff = _hour_cut(hours["watches"], 1.0 - config.holdout_fraction)
        impression_cutoff = watch_cutoff
    elif config.impression_test_fraction > 0:
        impression_cutoff = _hour_cut(hours["impressions"], 1.0 - config.impression_test_fraction)
    else:
        impression_cutoff = np.iinfo(np.int64).max
    calibration_cutoff = impression_cutoff
    if config.calibration_fraction > 0:
        calibration_cutoff = _hour_cut(hours["impressions"], 1.0 - config.calibration_fraction,
                                       before=impression_cutoff)
    return selection.Cuts(watch_cutoff, int(impression_cutoff), int(calibration_cutoff))


def plan_from_analysis(analysis: dict, config: ExampleConfig, seed: int, files: dict[str, list[str]],
                       work_dir: str) -> Plan:
    """Vocabularies, catalog order, cuts and shard counts from the analysis; raises the first
    error the analysis found."""
    errors = sorted(analysis["errors"], key=_sort_key)
    if errors:
        raise errors[0]
    for table in ("users", "videos", "watches"):  # nothing to learn from without them
        if not analysis["rows"][table]:
            paths = files.get(table) or []
            raise SchemaError(table, None, None, "no rows (the file holds only its header)" if len(paths) == 1
                              else f"no rows in any of its {len(paths)} files", paths[0] if len(paths) == 1 else None)
    videos = analysis["videos"][0] if analysis["videos"] else pd.DataFrame(
        {"video_id": [], "upload_time": [], "language": [], "topic": [], "duration_s": [], "seq": []})
    duplicated = videos.sort_values("seq", kind="stable")["video_id"].duplicated()
    if duplicated.any():
        seq = int(videos.sort_values("seq", kind="stable")["seq"][duplicated].iloc[0])
        path, row = files["videos"][seq >> SEQ_FILE_SHIFT], seq & ((1 << SEQ_FILE_SHIFT) - 1)
        raise SchemaError("videos", "video_id", row, f"duplicate id {videos.set_index('seq').loc[seq, 'video_id']!r}",
                          path)
    values = analysis["values"]
    user_fields = records.STANDARD_USER_FIELDS + tuple(c for c in config.extra_user_features if c in values)
    vocabularies = {"video": _vocabulary(videos["video_id"]), "token": _vocabulary(values.get("token", ())),
                    "topic": _vocabulary(values.get("topic", ()))}
    for name in user_fields:
        vocabularies[name] = _vocabulary(values.get(name, ()))
    tables = {"video": "videos", "topic": "videos", "token": "searches"}
    for name, vocabulary in vocabularies.items():
        broken = [v for v in vocabulary if "\n" in v or "\r" in v]
        if broken:  # vocabulary files hold one entry per line
            raise SchemaError(tables.get(name, "users"), {"video": "video_id", "token": "query"}.get(name, name), None,
                              f"value {broken[0]!r} holds a line break")
    rows = analysis["rows"]
    estimates = {"retrieval/train": rows["watches"], "retrieval/validation": rows["users"],
                 "retrieval/test": rows["users"]}
    for split in selection.RANKING_SPLITS:
        estimates[f"ranking/{split}"] = rows["impressions"] // 2
    shards = {key: max(1, math.ceil(n / (RETRIEVAL_RECORDS_PER_SHARD if key.startswith("retrieval")
                                         else RANKING_RECORDS_PER_SHARD))) for key, n in estimates.items()}
    return Plan(config.to_dict(), seed, cuts_from_counts(config, analysis["hours"]), files, vocabularies,
                user_fields, shards, work_dir)


# ---------------------------------------------------------------------------------------------
# Pass 2: materialise


class _ReadEvents(beam.DoFn):
    """One table file -> (user_id, (table, arrays)) per user and chunk, ids as vocabulary indices."""

    def __init__(self, plan_path: str):
        self.plan_path = plan_path

    def setup(self):
        self.plan = read_pickle(self.plan_path)
        self.index = {name: pd.Index(v) for name, v in self.plan.vocabularies.items()}

    def _indices(self, name: str, values) -> np.ndarray:
        return self.index[name].get_indexer(np.asarray(values, dtype=object)).astype(np.int64) + 1  # unknown: 0

    def process(self, element):
        table, file_index, path = element
        try:
            for offset, frame in read_chunks(table, path):
                seq = (file_index << SEQ_FILE_SHIFT) + np.arange(offset, offset + len(frame), dtype=np.int64)
                yield from self._chunk(table, path, offset, frame, seq)
        except SchemaError as err:
            yield pvalue.TaggedOutput("errors", err)

    def _chunk(self, table, path, offset, frame, seq):
        if table == "users":
            fields = {name: self._indices(name, frame[name].astype(str)) for name in self.plan.user_fields}
            age = frame["age"].to_numpy(np.float32)
            for i, user in enumerate(frame["user_id"].to_numpy(object)):
                yield user, ("users", {"fields": {name: int(v[i]) for name, v in fields.items()} | {
                    "age": float(age[i])}, "seq": int(seq[i])})
            return
        if table == "searches":
            tokens = frame["query"].str.split()
            counts = tokens.str.len().fillna(0).to_numpy(np.int64)
            columns = {"token": self._indices("token", [t for ts in tokens for t in ts]),
                       "time": np.repeat(frame["time"].to_numpy(np.int64), counts), "seq": np.repeat(seq, counts)}
            users = np.repeat(frame["user_id"].to_numpy(object), counts)
        else:
            video = self._indices("video", frame["video_id"])
            unknown = np.flatnonzero(video == 0)
            if len(unknown):
                row = int(unknown[0])
                raise SchemaError(table, "video_id", offset + row, f"unknown video_id {frame['video_id'].iloc[row]!r} "
                                                                   "(not in videos)", path)
            columns = {"video": video, "time": frame["time"].to_numpy(np.int64),
                       "seconds": frame["watch_time_s"].to_numpy(np.float32), "seq": seq}
            if table == "impressions":
                columns["clicked"] = frame["clicked"].to_numpy(np.int8)
            users = frame["user_id"].to_numpy(object)
        codes, uniques = pd.factorize(users)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
        for u, user in enumerate(uniques):
            rows = order[bounds[u]:bounds[u + 1]]
            yield user, (table, {name: values[rows] for name, values in columns.items()})


def _concat(parts: list[dict], names: tuple[str, ...]) -> dict:
    if not parts:
        return {name: np.zeros(0) for name in names}
    return {name: np.concatenate([p[name] for p in parts]) for name in names}


class _SelectAndWrite(beam.DoFn):
    """A user's events -> their examples, serialised and buffered into part files by output
    shard; at the end of a bundle, the part files' names and the bundle's statistics."""

    def __init__(self, plan_path: str):
        self.plan_path = plan_path

    def setup(self):
        self.plan = read_pickle(self.plan_path)
        self.config = self.plan.example_config()
        self.features = {(kind, split): records.record_features(kind, split, self.plan.user_fields)
                         for kind, splits in (("retrieval", selection.RETRIEVAL_SPLITS),
                                              ("ranking", selection.RANKING_SPLITS)) for split in splits}
        self.num_videos = len(self.plan.vocabularies["video"])
        self.progress_path = os.path.join(self.plan.work_dir, "progress", uuid.uuid4().hex)

    def start_bundle(self):
        self.buffers = collections.defaultdict(list)
        self.buffered = 0
        self.parts = []
        self.stats = new_stats(self.num_videos)
        self.users_done = 0

    def process(self, element):
        user, values = element
        try:
            events = self._events(user, values)
        except SchemaError as err:
            yield pvalue.TaggedOutput("errors", err)
            return
        chosen = selection.select(events, self.config, self.plan.cuts, self.plan.seed)
        self._count(chosen)
        for kind, by_split in (("retrieval", chosen.retrieval), ("ranking", chosen.ranking)):
            for split, examples in by_split.items():
                serialised = records.encode(examples, self.features[kind, split], dict(events.fields, user_id=user),
                                            records.history_lengths(examples))
                shard = selection.stable_hash(user) % self.plan.shards[f"{kind}/{split}"]
                prefix = user.encode() + b"\x00"
                buffer = self.buffers[kind, split, shard]
                for i, (t, record) in enumerate(zip(examples["request_time"], serialised)):
                    buffer.append((prefix + struct.pack(">qq", int(t), i), record))
                    self.buffered += len(record) + len(prefix) + 16
        self.users_done += 1
        if self.users_done % 2000 == 0:
            self._report_progress()
        if self.buffered > PART_BUFFER_BYTES:
            self._spill()

    def _events(self, user: str, values) -> selection.UserEvents:
        by_table = collections.defaultdict(list)
        for table, value in values:
            by_table[table].append(value)
        users = sorted(by_table.pop("users", []), key=lambda r: r["seq"])
        if not users:
            table, seq = min(((t, int(p["seq"].min())) for t, ps in by_table.items() for p in ps), key=lambda x: x[1])
            path, row = self.plan.where(table, seq)
            raise SchemaError(table, "user_id", row, f"unknown user_id {user!r} (not in users)", path)
        if len(users) > 1:
            path, row = self.plan.where("users", users[1]["seq"])
            raise SchemaError("users", "user_id", row, f"duplicate id {user!r}", path)
        return selection.UserEvents.from_unsorted(
            user, users[0]["fields"], _concat(by_table["watches"], ("video", "time", "seconds", "seq")),
            _concat(by_table["searches"], ("token", "time", "seq")),
            _concat(by_table["impressions"], ("video", "time", "clicked", "seconds", "seq")))

    def _count(self, chosen: selection.UserExamples) -> None:
        stats = self.stats
        np.add.at(stats["label_counts"], chosen.labels, 1)
        np.add.at(stats["ranker_videos"], chosen.ranker_videos, 1)
        if chosen.last_train_time is not None:
            stats["last_train_time"] = max(stats["last_train_time"], chosen.last_train_time)
        for kind, by_split in (("retrieval", chosen.retrieval), ("ranking", chosen.ranking)):
            for split, examples in by_split.items():
                stats["records"][f"{kind}/{split}"] += len(examples["request_time"])
                if kind == "ranking":
                    stats["impressions"][split] += sum(len(v) for v in examples["video_id"])
        stats["users"] += 1

    def _report_progress(self) -> None:
        try:
            with open(self.progress_path + f"-{uuid.uuid4().hex[:6]}", "w") as f:
                f.write(str(self.users_done))
            self.users_done = 0
        except OSError:  # progress is best effort (a remote work directory may not take it)
            pass

    def _spill(self) -> None:
        for (kind, split, shard), entries in self.buffers.items():
            path = os.path.join(self.plan.work_dir, "parts", f"{kind}-{split}-{shard:05d}-{uuid.uuid4().hex}.part")
            with FileSystems.create(path) as f:
                for key, record in entries:
                    f.write(struct.pack("<II", len(key), len(record)) + key + record)
            self.parts.append(((kind, split, shard), path))
        self.buffers = collections.defaultdict(list)
        self.buffered = 0

    def finish_bundle(self):
        self._spill()
        if self.users_done:
            self._report_progress()
        for part in self.parts:
            yield GlobalWindows.windowed_value(part)
        yield pvalue.TaggedOutput("stats", GlobalWindows.windowed_value(self.stats))


def new_stats(num_videos: int) -> dict:
    return {"label_counts": np.zeros(num_videos + 1, np.int64), "ranker_videos": np.zeros(num_videos + 1, np.int64),
            "last_train_time": -1, "records": collections.Counter(), "impressions": collections.Counter(),
            "users": 0}


class _MergeStats(_MergingCombineFn):
    def __init__(self, num_videos: int):
        self.num_videos = num_videos

    def create_accumulator(self):
        return new_stats(self.num_videos)

    def add_input(self, accumulator, stats):
        for name in ("label_counts", "ranker_videos"):
            accumulator[name] += stats[name]
        accumulator["last_train_time"] = max(accumulator["last_train_time"], stats["last_train_time"])
        accumulator["records"].update(stats["records"])
        accumulator["impressions"].update(stats["impressions"])
        accumulator["users"] += stats["users"]
        return accumulator


    def extract_output(self, accumulator):
        return accumulator


class _FirstErrors(beam.CombineFn):
    def create_accumulator(self):
        return []

    def add_input(self, accumulator, error):
        return sorted(accumulator + [error], key=_sort_key)[:MAX_ERRORS]

    def merge_accumulators(self, accumulators):
        return sorted([e for a in accumulators for e in a], key=_sort_key)[:MAX_ERRORS]

    def extract_output(self, accumulator):
        return accumulator


def _merge_shard(element, out_dir: str) -> dict:
    """All parts of one output shard -> the shard, its records sorted by (user, time)."""
    (kind, split, shard), paths = element
    entries = []
    for path in sorted(paths):
        with FileSystems.open(path) as f:
            data = f.read()
        position = 0
        while position < len(data):
            key_length, record_length = struct.unpack_from("<II", data, position)
            position += 8
            key = data[position:position + key_length]
            position += key_length
            entries.append((key, data[position:position + record_length]))
            position += record_length
    entries.sort(key=lambda entry: entry[0])
    name = f"{kind}/{split}-{shard:05d}.tfrecord"
    size = 0
    with FileSystems.create(os.path.join(out_dir, name)) as f:
        for _, record in entries:
            framed = records.frame_record(record)
            f.write(framed)
            size += len(framed)
    FileSystems.delete(sorted(paths))
    return {"kind": kind, "split": split, "shard": shard, "file": name, "records": len(entries), "bytes": size}


# ---------------------------------------------------------------------------------------------
# Running


def pipeline_options(workers: int = 1, beam_args: list[str] | tuple = ()):
    """Beam's options: `beam_args` as given (any runner), else Beam's local runner with `workers`
    processes (in-process for 1).

    The local runner is named as `FnApiRunner`, the engine that Beam's DirectRunner runs batch
    pipelines on: the DirectRunner itself first tries the Prism runner, which downloads a binary
    from the internet on every pipeline and falls back to the FnApiRunner when it cannot."""
    from apache_beam.options.pipeline_options import PipelineOptions

    args = list(beam_args)
    if not any(a.startswith("--runner") for a in args):
        args += ["--runner=FnApiRunner", f"--direct_num_workers={workers}",
                 f"--direct_running_mode={'multi_processing' if workers > 1 else 'in_memory'}"]
    if not any(a.startswith("--default_sdk_harness_log_level") for a in args):
        args.append("--default_sdk_harness_log_level=ERROR")
    return PipelineOptions(args)


def _file_elements(files: dict[str, list[str]]) -> list[tuple[str, int, str]]:
    """(table, the file's index in its table, path): the index numbers the file's rows."""
    return [(table, i, path) for table, paths in files.items() for i, path in enumerate(paths)]


class _Quiet:
    """Keeps Beam's own logging (worker start-up, discarded options) off the user's terminal, and
    Beam's interactive integration out of the pipelines.

    In IPython or Jupyter, Beam relabels every transform through its interactive module, whose
    import pulls in Beam's DataFrame API; Beam 2.77 supports that API only for pandas < 2.4 and
    its import fails under pandas 3 ("type object 'DataFrame' has no attribute 'first'"). These
    pipelines never use interactive Beam, so while they are built and run, Beam is told it is
    not in IPython (the three places that ask)."""

    _ASKERS = ("apache_beam.utils.interactive_utils", "apache_beam.pipeline",
               "apache_beam.runners.direct.direct_runner")

    def __enter__(self):
        import importlib

        self.logger = logging.getLogger("apache_beam")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)
        self.patched = []
        for name in self._ASKERS:
            module = importlib.import_module(name)
            if hasattr(module, "is_in_ipython"):
                self.patched.append((module, module.is_in_ipython))
                module.is_in_ipython = lambda: False

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)
        for module, original in self.patched:
            module.is_in_ipython = original


def analyse(files: dict[str, list[str]], config: ExampleConfig, work_dir: str, options) -> dict:
    """Pass 1; returns the merged analysis (see `_MergeAnalysis`)."""
    path = os.path.join(work_dir, "analysis.pkl")
    with _Quiet(), beam.Pipeline(options=options) as p:
        (p | "files" >> beam.Create(_file_elements(files))
           | "reshuffle" >> beam.Reshuffle()
           | "analyse" >> beam.FlatMap(_analyse_file, tuple(config.extra_user_features))
           | "merge" >> beam.CombineGlobally(_MergeAnalysis())
           | "write" >> beam.Map(_write_pickle, path))
    return read_pickle(path)


def materialise(plan: Plan, out_dir: str, options, total_users: int | None = None, say=print) -> dict:
    """Pass 2; returns {"stats": ..., "shards": [...], "errors": [...]}."""
    work = plan.work_dir
    plan_path = os.path.join(work, "plan.pkl")
    _write_pickle(plan, plan_path)
    os.makedirs(os.path.join(work, "progress"), exist_ok=True)
    progress = _Progress(os.path.join(work, "progress"), total_users, say)
    with _Quiet(), progress, beam.Pipeline(options=options) as p:
        # The videos table's part (the catalog, the vocabulary) is in the plan already.
        event_files = {table: paths for table, paths in plan.files.items() if table != "videos"}
        events = (p | "files" >> beam.Create(_file_elements(event_files))
                    | "reshuffle" >> beam.Reshuffle()
                    | "read" >> beam.ParDo(_ReadEvents(plan_path)).with_outputs("errors", main="events"))
        written = (events.events
                   | "by user" >> beam.GroupByKey()
                   | "select" >> beam.ParDo(_SelectAndWrite(plan_path)).with_outputs("stats", "errors", main="parts"))
        (written.parts
         | "by shard" >> beam.GroupByKey()
         | "merge shards" >> beam.Map(_merge_shard, out_dir)
         | "shard list" >> beam.combiners.ToList()
         | "write shard list" >> beam.Map(_write_pickle, os.path.join(work, "shards.pkl")))
        (written.stats
         | "sum stats" >> beam.CombineGlobally(_MergeStats(len(plan.vocabularies["video"])))
         | "write stats" >> beam.Map(_write_pickle, os.path.join(work, "stats.pkl")))
        ((events.errors, written.errors)
         | "all errors" >> beam.Flatten()
         | "first errors" >> beam.CombineGlobally(_FirstErrors())
         | "write errors" >> beam.Map(_write_pickle, os.path.join(work, "errors.pkl")))
    return {name: read_pickle(os.path.join(work, f"{name}.pkl")) for name in ("stats", "shards", "errors")}


class _Progress:
    """A progress bar over users, fed by the counts the selecting workers drop in a folder."""

    def __init__(self, directory: str, total: int | None, say):
        self.directory, self.total, self.say = directory, total, say
        self.done = threading.Event()

    def _count(self) -> int:
        total = 0
        for name in os.listdir(self.directory):
            try:
                with open(os.path.join(self.directory, name)) as f:
                    total += int(f.read() or 0)
            except (OSError, ValueError):
                pass
        return total

    def _poll(self):
        # The text bar, also in Jupyter: tqdm.auto's widget needs ipywidgets and warns without it.
        from tqdm import tqdm

        with tqdm(total=self.total, desc="selecting examples", unit=" users", mininterval=1.0) as bar:
            while not self.done.wait(1.0):
                bar.update(min(self._count(), self.total or 1 << 62) - bar.n)
            bar.update(max(0, min(self._count(), self.total or 1 << 62) - bar.n))

    def __enter__(self):
        self.thread = None
        if self.say is not None:  # silent: no bar at all
            self.thread = threading.Thread(target=self._poll, daemon=True)
            self.thread.start()

    def __exit__(self, *exc):
        self.done.set()
        if self.thread is not None:
            self.thread.join(timeout=5)


def timed(say, message: str):
    """A context that says `message`, then how long it took."""
    class _Timed:
        def __enter__(self):
            self.started = time.perf_counter()
            if say:
                say(message)

        def __exit__(self, *exc):
            if say and exc[0] is None:
                say(f"  done in {time.perf_counter() - self.started:.1f} s")
    return _Timed()
