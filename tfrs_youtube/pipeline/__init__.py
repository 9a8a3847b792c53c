"""The example pipeline: an event log -> label and context selection on Apache Beam -> sharded
TFRecords of examples, with their vocabularies, label counts and a spec of how they were made."""

import logging


class _OptionalGcpWarning(logging.Filter):
    """Beam warns on import that Google Cloud's client libraries are absent; they are optional
    (only Dataflow and GCS need them), so the warning is noise on every command. Installed here,
    before any module of the pipeline imports Beam."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "apitools not found" not in record.getMessage()


logging.getLogger().addFilter(_OptionalGcpWarning())

from tfrs_youtube.pipeline.build import build_examples  # noqa: E402
from tfrs_youtube.pipeline.config import ExampleConfig  # noqa: E402
from tfrs_youtube.pipeline.example_set import ExampleSet, ExamplesError  # noqa: E402

__all__ = ["ExampleConfig", "ExampleSet", "ExamplesError", "build_examples"]
