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

This module runs them: Beam's options for any runner (`pipeline_options`) and what both passes
share: the list of table files, results handed back to the driver as pickles, a quiet Beam.
The passes are `analysis` and `materialisation`; between them the driver plans the second from
the first (`plan`); `shards` writes the output.
"""

from __future__ import annotations

import logging
import pickle
import time

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems


def write_pickle(value, path: str) -> None:
    with FileSystems.create(path) as f:
        f.write(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def read_pickle(path: str):
    with FileSystems.open(path) as f:
        return pickle.loads(f.read())


class MergingCombineFn(beam.CombineFn):
    """A CombineFn whose inputs are partial accumulators: merging is adding each to a new one."""

    def merge_accumulators(self, accumulators):
        merged = self.create_accumulator()
        for accumulator in accumulators:
            self.add_input(merged, accumulator)
        return merged


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


def file_elements(files: dict[str, list[str]]) -> list[tuple[str, int, str]]:
    """(table, the file's index in its table, path): the index numbers the file's rows."""
    return [(table, i, path) for table, paths in files.items() for i, path in enumerate(paths)]


class Quiet:
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
