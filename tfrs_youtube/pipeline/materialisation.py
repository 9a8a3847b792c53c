"""Pass 2 of the example pipeline, the materialisation: each user's examples, cut and written.

The tables are read again and their ids mapped to the plan's vocabulary indices (`_ReadEvents`);
each user's events are grouped (`GroupByKey`) and their examples selected (`selection.select`)
and serialised (`_SelectAndWrite`); each worker buffers its records by output shard and spills
them to part files, which `shards` merges into the shards. Statistics (label counts, records per
split) and errors travel beside them as data to the end of the pass.
"""

from __future__ import annotations

import collections
import os
import struct
import threading
import uuid

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.transforms.window import GlobalWindows
import numpy as np
import pandas as pd

from tfrs_youtube.data.schema import SchemaError
from tfrs_youtube.data.tables import read_chunks
from tfrs_youtube.pipeline import records, selection
from tfrs_youtube.pipeline.beam import MergingCombineFn, Quiet, file_elements, read_pickle, write_pickle
from tfrs_youtube.pipeline.plan import MAX_ERRORS, SEQ_FILE_SHIFT, Plan, error_order
from tfrs_youtube.pipeline.shards import merge_shard, write_part

# A worker spills its buffered records to a part file beyond this many bytes.
PART_BUFFER_BYTES = 64 << 20


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
            write_part(path, entries)
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


class _MergeStats(MergingCombineFn):
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
        return sorted(accumulator + [error], key=error_order)[:MAX_ERRORS]

    def merge_accumulators(self, accumulators):
        return sorted([e for a in accumulators for e in a], key=error_order)[:MAX_ERRORS]

    def extract_output(self, accumulator):
        return accumulator


def materialise(plan: Plan, out_dir: str, options, total_users: int | None = None, say=print) -> dict:
    """Pass 2; returns {"stats": ..., "shards": [...], "errors": [...]}."""
    work = plan.work_dir
    plan_path = os.path.join(work, "plan.pkl")
    write_pickle(plan, plan_path)
    os.makedirs(os.path.join(work, "progress"), exist_ok=True)
    progress = _Progress(os.path.join(work, "progress"), total_users, say)
    with Quiet(), progress, beam.Pipeline(options=options) as p:
        # The videos table's part (the catalog, the vocabulary) is in the plan already.
        event_files = {table: paths for table, paths in plan.files.items() if table != "videos"}
        events = (p | "files" >> beam.Create(file_elements(event_files))
                    | "reshuffle" >> beam.Reshuffle()
                    | "read" >> beam.ParDo(_ReadEvents(plan_path)).with_outputs("errors", main="events"))
        written = (events.events
                   | "by user" >> beam.GroupByKey()
                   | "select" >> beam.ParDo(_SelectAndWrite(plan_path)).with_outputs("stats", "errors", main="parts"))
        (written.parts
         | "by shard" >> beam.GroupByKey()
         | "merge shards" >> beam.Map(merge_shard, out_dir)
         | "shard list" >> beam.combiners.ToList()
         | "write shard list" >> beam.Map(write_pickle, os.path.join(work, "shards.pkl")))
        (written.stats
         | "sum stats" >> beam.CombineGlobally(_MergeStats(len(plan.vocabularies["video"])))
         | "write stats" >> beam.Map(write_pickle, os.path.join(work, "stats.pkl")))
        ((events.errors, written.errors)
         | "all errors" >> beam.Flatten()
         | "first errors" >> beam.CombineGlobally(_FirstErrors())
         | "write errors" >> beam.Map(write_pickle, os.path.join(work, "errors.pkl")))
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
