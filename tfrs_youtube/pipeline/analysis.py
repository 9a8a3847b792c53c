"""Pass 1 of the example pipeline, the analysis: what every user's examples depend on.

Every table file is read and validated in chunks, in parallel; each chunk gives a partial
analysis (row counts, the values of every vocabulary, the video catalog, hourly counts of
watches and impressions, the errors found), and the partials are summed into one
(`_MergeAnalysis`), from which the driver makes the `plan.Plan` of pass 2.
"""

from __future__ import annotations

import collections
import os

import apache_beam as beam
import numpy as np
import pandas as pd

from tfrs_youtube.data.schema import SchemaError
from tfrs_youtube.data.tables import read_chunks
from tfrs_youtube.features.contract import STANDARD_USER_FIELDS
from tfrs_youtube.pipeline import records
from tfrs_youtube.pipeline.beam import MergingCombineFn, Quiet, file_elements, read_pickle, write_pickle
from tfrs_youtube.pipeline.config import CUT_RESOLUTION_S, ExampleConfig
from tfrs_youtube.pipeline.plan import MAX_ERRORS, SEQ_FILE_SHIFT, error_order


def _analyse_file(element, extra_user_features: tuple[str, ...]):
    """Partial statistics of one table file (see `_MergeAnalysis`), chunk by chunk."""
    table, file_index, path = element
    try:
        for offset, frame in read_chunks(table, path):
            part = _empty_analysis()
            part["rows"][table] = len(frame)
            if table == "users":
                for name in STANDARD_USER_FIELDS + tuple(c for c in extra_user_features if c in frame):
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


class _MergeAnalysis(MergingCombineFn):
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
        accumulator["errors"] = sorted(accumulator["errors"] + part["errors"], key=error_order)[:MAX_ERRORS]
        return accumulator


    def extract_output(self, accumulator):
        if accumulator["videos"]:
            accumulator["videos"] = [pd.concat(accumulator["videos"], ignore_index=True)]
        return accumulator


def analyse(files: dict[str, list[str]], config: ExampleConfig, work_dir: str, options) -> dict:
    """Pass 1; returns the merged analysis (see `_MergeAnalysis`)."""
    path = os.path.join(work_dir, "analysis.pkl")
    with Quiet(), beam.Pipeline(options=options) as p:
        (p | "files" >> beam.Create(file_elements(files))
           | "reshuffle" >> beam.Reshuffle()
           | "analyse" >> beam.FlatMap(_analyse_file, tuple(config.extra_user_features))
           | "merge" >> beam.CombineGlobally(_MergeAnalysis())
           | "write" >> beam.Map(write_pickle, path))
    return read_pickle(path)
