"""The example pipeline: an event log -> label and context selection on Apache Beam -> sharded
TFRecords of examples, with their vocabularies, label counts and a spec of how they were made."""

from tfrs_youtube.pipeline.build import build_examples
from tfrs_youtube.pipeline.config import ExampleConfig
from tfrs_youtube.pipeline.example_set import ExampleSet, ExamplesError

__all__ = ["ExampleConfig", "ExampleSet", "ExamplesError", "build_examples"]
