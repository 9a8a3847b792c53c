"""`build_examples`: an event log (a folder of table files, a MovieLens folder, or an `EventLog`
in memory) -> an examples folder (`example_set`), through the Beam pipeline (`beam`).

The folder is written beside its final place and renamed into it only when complete, so a
failed or interrupted build leaves nothing a later step could mistake for examples.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time

import numpy as np

from tfrs_youtube.data.schema import EventLog
from tfrs_youtube.files import new_dir
from tfrs_youtube.pipeline import records
from tfrs_youtube.pipeline.config import ExampleConfig
from tfrs_youtube.pipeline.example_set import (FORMAT, KINDS, SPEC_FILE, STATISTICS_FILE, ExampleSet,
                                               vocabulary_digest, write_vocabulary)
from tfrs_youtube.data.tables import has_tables, table_files, write_tables


def fingerprint(files: dict[str, list[str]], root: str) -> str:
    """SHA-256 over the table files (relative name and bytes): recognises the same data."""
    digest = hashlib.sha256()
    for table in sorted(files):
        for path in files[table]:
            digest.update(os.path.relpath(path, root).encode() + b"\0")
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def _source_tables(data, work: str) -> tuple[str, dict]:
    """(folder of table files, what the source is) for a folder of tables, a MovieLens folder
    or an in-memory `EventLog` (written to the work folder as Parquet first)."""
    if isinstance(data, EventLog):
        log, info = data, {"name": data.name, "notes": dict(data.notes), "path": None}
    elif has_tables(str(data)):
        from tfrs_youtube.data.directory import read_info

        described = read_info(str(data))
        return os.path.abspath(str(data)), {"name": described.get("name") or os.path.basename(os.path.normpath(str(data))),
                                            "notes": described.get("notes", {}), "path": os.path.abspath(str(data))}
    else:
        from tfrs_youtube.data.directory import read_dataset

        log = read_dataset(str(data))  # a MovieLens folder, converted in memory (it is small)
        info = {"name": log.name, "notes": dict(log.notes), "path": os.path.abspath(str(data))}
    folder = os.path.join(work, "input")
    write_tables(log.tables(), folder, format="parquet")
    return folder, info


def build_examples(data, out: str, config: ExampleConfig | None = None, seed: int = 0, workers: int = 1,
                   beam_args: list[str] | tuple = (), replace: bool = False, say=print) -> ExampleSet:
    """Runs the example pipeline on `data` and writes the examples folder `out`.

    Args:
      data: a folder of event-log tables (CSV or Parquet, one file or many per table), a
        MovieLens 100K/1M folder, or an `EventLog`.
      out: the examples folder to create (an existing one is an error unless `replace`).
      config: how examples are cut (`ExampleConfig`).
      seed: the seed of the per-user sampling of training labels.
      workers: processes of Beam's DirectRunner (1: in this process).
      beam_args: Beam pipeline options (e.g. `--runner=FlinkRunner --flink_master=...`); they
        replace the DirectRunner.
      say: where progress goes (None: silent).
    """
    # Apache Beam loads only when examples are built.
    from tfrs_youtube.pipeline.analysis import analyse
    from tfrs_youtube.pipeline.beam import pipeline_options, timed
    from tfrs_youtube.pipeline.materialisation import materialise
    from tfrs_youtube.pipeline.plan import plan_from_analysis

    config = config or ExampleConfig()
    started = time.perf_counter()
    options = pipeline_options(workers, beam_args)
    with new_dir(out, replace=replace) as final, tempfile.TemporaryDirectory(
            prefix=".work-", dir=os.path.dirname(os.path.abspath(out))) as work:
        folder, source = _source_tables(data, work)
        files = {table: paths for table, paths in table_files(folder).items() if paths}
        if source["path"] and not isinstance(data, EventLog) and has_tables(str(data)):
            source["fingerprint"] = fingerprint(files, folder)
        with timed(say, f"analysing {sum(len(p) for p in files.values())} table files"):
            analysis = analyse(files, config, work, options)
        plan = plan_from_analysis(analysis, config, seed, files, work)
        with timed(say, f"selecting and writing the examples of {analysis['rows']['users']} users"):
            result = materialise(plan, final, options, total_users=analysis["rows"]["users"], say=say)
        if result["errors"]:
            raise result["errors"][0]
        _write_folder(final, plan, analysis, result, source, config, seed,
                      {"workers": workers, "beam_args": list(beam_args), "seconds": time.perf_counter() - started})
        shutil.rmtree(os.path.join(work, "input"), ignore_errors=True)
    examples = ExampleSet(out)
    if say:
        counts = ", ".join(f"{key} {n}" for key, n in sorted(examples.spec["records"].items()))
        say(f"examples -> {out}: {counts}")
    return examples


def _catalog(analysis: dict, vocabulary: list[str], vocabularies: dict[str, list[str]]) -> dict[str, np.ndarray]:
    """Per video index (0: unknown), its topic and language indices, upload time and duration."""
    import pandas as pd

    videos = analysis["videos"][0].set_index("video_id").loc[vocabulary]
    index = lambda name, values: np.r_[0, pd.Index(vocabularies[name]).get_indexer(values) + 1]  # noqa: E731
    return {"catalog_topic": index("topic", videos["topic"].to_numpy(object)).astype(np.int64),
            "catalog_language": index("language", videos["language"].to_numpy(object)).astype(np.int64),
            "catalog_upload_time": np.r_[0, videos["upload_time"].to_numpy(np.int64)],
            "catalog_duration": np.r_[0.0, videos["duration_s"].to_numpy(np.float64)]}


def _write_folder(final: str, plan, analysis: dict, result: dict, source: dict, config: ExampleConfig, seed: int,
                  build: dict) -> None:
    from tfrs_youtube.export import library_versions

    vocabularies = plan.vocabularies
    for name, entries in vocabularies.items():
        write_vocabulary(final, name, entries)
    stats = result["stats"]
    np.savez(os.path.join(final, STATISTICS_FILE), label_counts=stats["label_counts"],
             ranker_video_counts=stats["ranker_videos"], **_catalog(analysis, vocabularies["video"], vocabularies))
    shards = {}
    for shard in sorted(result["shards"], key=lambda s: (s["kind"], s["split"], s["shard"])):
        shards.setdefault(f"{shard['kind']}/{shard['split']}", []).append(
            {"file": shard["file"], "records": shard["records"], "bytes": shard["bytes"]})
    window_end = plan.cuts.watch_cutoff if plan.cuts.watch_cutoff is not None else max(stats["last_train_time"], 0)
    spec = {
        "format": FORMAT,
        "config": config.to_dict(),
        "seed": seed,
        "contract": config.contract().describe(),
        "cuts": plan.cuts.to_dict(),
        "window_end": int(window_end),
        "user_fields": list(plan.user_fields),
        "vocabularies": {name: {"size": len(v), "sha256": vocabulary_digest(v)} for name, v in vocabularies.items()},
        "records": {f"{kind}/{split}": int(stats["records"].get(f"{kind}/{split}", 0))
                    for kind, splits in KINDS.items() for split in splits},
        "impressions": {split: int(n) for split, n in stats["impressions"].items()},
        "users": int(analysis["rows"]["users"]),
        "rows": {table: int(n) for table, n in analysis["rows"].items()},
        "features": {f"{kind}/{split}": records.record_features(kind, split, plan.user_fields)
                     for kind, splits in KINDS.items() for split in splits},
        "shards": shards,
        "source": source,
        "library_versions": library_versions(),
        "build": build,
    }
    with open(os.path.join(final, SPEC_FILE), "w") as f:
        json.dump(spec, f, indent=2, sort_keys=True, default=str)
