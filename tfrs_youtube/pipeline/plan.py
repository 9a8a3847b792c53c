"""Planning the materialising pass: what the analysis of the log fixes before any example is cut.

Between the two passes (`analysis`, `materialisation`) the driver turns the analysis into a
`Plan`: the vocabularies (sorted, so any runner makes the same), the cuts in time found from the
hourly counts of watches and impressions (`cuts_from_counts`, at `config.CUT_RESOLUTION_S`), and
how many output shards each kind and split gets. Every worker of the second pass reads the same
plan, so they all map ids and cut time alike.

Rows are addressed across a table's files by one number (`SEQ_FILE_SHIFT`), so that an error
found anywhere names its file and row, and the first of them by file and row (`error_order`) is
the one raised.
"""

from __future__ import annotations

import collections
import dataclasses
import math

import numpy as np
import pandas as pd

from tfrs_youtube.data.schema import SchemaError
from tfrs_youtube.features.contract import STANDARD_USER_FIELDS
from tfrs_youtube.pipeline import records, selection
from tfrs_youtube.pipeline.config import CUT_RESOLUTION_S, ExampleConfig

# Rows of a table file are numbered across files: the file's position in its table, then the row.
SEQ_FILE_SHIFT = 40
# Records per output shard (a shard is sorted in memory when it is merged).
RETRIEVAL_RECORDS_PER_SHARD = 200_000
RANKING_RECORDS_PER_SHARD = 50_000
# The errors a pass keeps (the first, by file and row, is raised).
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


def error_order(error: SchemaError) -> tuple:
    """Errors sort by file, then row."""
    return (error.path or "", error.row if error.row is not None else -1, str(error))


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
    errors = sorted(analysis["errors"], key=error_order)
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
    user_fields = STANDARD_USER_FIELDS + tuple(c for c in config.extra_user_features if c in values)
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
