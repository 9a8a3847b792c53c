"""A folder of examples, as the pipeline writes it and training reads it.

EXAMPLES/ holds:

- `spec.json`: the settings the examples were built with (`ExampleConfig`, seed, the request
  contract), the cuts in time and the training window's end, the record features of each kind
  and split, every shard with its record count and size, the vocabularies' sizes and digests,
  and where the data came from;
- `vocabularies/<name>.txt`: one entry per line, in index order (index i + 1; 0 is padding and
  unknown ids): video, token, topic and each categorical user field;
- `statistics.npz`: per video index, the training labels' counts (log Q), how often the ranker's
  fitted pages show the video or hold it in their histories, and the catalog (topic index,
  language index, upload time);
- `retrieval/{train,validation,test}-NNNNN.tfrecord`, `ranking/{fit,calibration,test}-NNNNN.tfrecord`.

Opening a folder checks that every shard is there with the size the spec recorded, so a
truncated or missing shard is found before training starts; `check` compares the spec with a
model's config and names the first setting that differs.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os

import numpy as np

from tfrs_youtube.features.contract import RequestContract
from tfrs_youtube.pipeline.config import ExampleConfig
from tfrs_youtube.pipeline.selection import RANKING_SPLITS, RETRIEVAL_SPLITS, Cuts

FORMAT = 1
SPEC_FILE = "spec.json"
STATISTICS_FILE = "statistics.npz"
VOCABULARY_DIR = "vocabularies"
KINDS = {"retrieval": RETRIEVAL_SPLITS, "ranking": RANKING_SPLITS}


class ExamplesError(ValueError):
    """An examples folder is missing, damaged, or was built with other settings than asked for."""


def is_example_set(directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, SPEC_FILE))


def vocabulary_digest(entries: list[str]) -> str:
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()


def write_vocabulary(directory: str, name: str, entries: list[str]) -> None:
    os.makedirs(os.path.join(directory, VOCABULARY_DIR), exist_ok=True)
    with open(os.path.join(directory, VOCABULARY_DIR, f"{name}.txt"), "w", encoding="utf-8") as f:
        f.write("".join(entry + "\n" for entry in entries))


class ExampleSet:
    """An examples folder (see the module docstring), opened and checked.

    Args:
      directory: the folder `build_examples` wrote.
    """

    def __init__(self, directory: str):
        self.directory = os.path.abspath(directory)
        path = os.path.join(self.directory, SPEC_FILE)
        if not os.path.isfile(path):
            raise ExamplesError(f"{self.directory} is not an examples folder (no {SPEC_FILE}; build one with "
                                f"`tfrs-youtube data examples --data LOG --out DIR`)")
        try:
            with open(path) as f:
                self.spec = json.load(f)
        except json.JSONDecodeError as err:
            raise ExamplesError(f"{path}: not valid JSON ({err})") from err
        if self.spec.get("format") != FORMAT:
            raise ExamplesError(f"{path}: examples format {self.spec.get('format')!r}, this version reads {FORMAT}; "
                                f"rebuild them")
        self.verify()

    def __repr__(self) -> str:
        return f"ExampleSet({self.directory!r})"

    # ---- settings ---------------------------------------------------------------------------
    @property
    def config(self) -> ExampleConfig:
        return ExampleConfig.from_dict(self.spec["config"])

    @property
    def seed(self) -> int:
        return int(self.spec["seed"])

    @property
    def contract(self) -> RequestContract:
        return self.config.contract()

    @property
    def cuts(self) -> Cuts:
        return Cuts(**self.spec["cuts"])

    @property
    def window_end(self) -> int:
        """The end of the training window: example ages are measured from it."""
        return int(self.spec["window_end"])

    @property
    def user_fields(self) -> tuple[str, ...]:
        """The categorical user fields the examples carry (standard ones, then extras)."""
        return tuple(self.spec["user_fields"])

    @property
    def name(self) -> str:
        return self.spec["source"].get("name") or os.path.basename(self.directory)

    @property
    def notes(self) -> dict[str, str]:
        """What the source data set lacked or derived rather than observed (per table)."""
        return dict(self.spec["source"].get("notes", {}))

    def check(self, config: ExampleConfig, seed: int | None = None) -> None:
        """Raises `ExamplesError` naming the first setting in which `config` (and `seed`, which
        matters only when training labels are sampled per user) differs from the spec's."""
        mine, theirs = self.spec["config"], json.loads(json.dumps(config.to_dict()))
        for key in sorted(set(mine) | set(theirs)):
            if mine.get(key) != theirs.get(key):
                raise ExamplesError(f"the examples in {self.directory} were built with examples.{key} = "
                                    f"{mine.get(key)!r}, the config asks for {theirs.get(key)!r}: rebuild them "
                                    f"with this config (tfrs-youtube data examples), or train with theirs")
        if seed is not None and config.max_examples_per_user is not None and seed != self.seed:
            raise ExamplesError(f"the examples in {self.directory} sampled each user's training labels with seed "
                                f"{self.seed}, the config's seed is {seed}: rebuild them with this seed")

    def fingerprint(self) -> str:
        """A digest of what the examples are (settings, vocabularies, shards), not of where or
        how fast they were built: the same examples rebuilt elsewhere have the same one."""
        keys = ("config", "seed", "cuts", "window_end", "user_fields", "vocabularies", "records", "shards")
        return hashlib.sha256(json.dumps({k: self.spec[k] for k in keys}, sort_keys=True).encode()).hexdigest()

    # ---- contents ---------------------------------------------------------------------------
    @functools.lru_cache(maxsize=None)
    def vocabulary(self, name: str) -> list[str]:
        """The entries of a vocabulary in index order (entry i has index i + 1)."""
        path = os.path.join(self.directory, VOCABULARY_DIR, f"{name}.txt")
        if not os.path.isfile(path):
            raise ExamplesError(f"{path} is missing")
        with open(path, encoding="utf-8") as f:
            entries = f.read().split("\n")[:-1]
        expected = self.spec["vocabularies"].get(name, {})
        if len(entries) != expected.get("size") or vocabulary_digest(entries) != expected.get("sha256"):
            raise ExamplesError(f"{path} does not match the spec (size {len(entries)}, expected {expected.get('size')}):"
                                f" the folder was changed after it was built; rebuild it")
        return entries

    def vocabularies(self) -> dict[str, list[str]]:
        return {name: self.vocabulary(name) for name in self.spec["vocabularies"]}

    @functools.cached_property
    def statistics(self) -> dict[str, np.ndarray]:
        path = os.path.join(self.directory, STATISTICS_FILE)
        try:
            with np.load(path) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError) as err:
            raise ExamplesError(f"{path} cannot be read ({err}); rebuild the examples") from err

    def label_counts(self) -> np.ndarray:
        """Training labels per video index (index 0: never a label)."""
        return self.statistics["label_counts"]

    def features(self, kind: str, split: str) -> dict[str, tuple[str, str]]:
        """The record features of a kind and split: name -> (dtype, "scalar" | "list")."""
        return {name: tuple(v) for name, v in self.spec["features"][f"{kind}/{split}"].items()}

    def shards(self, kind: str, split: str) -> list[dict]:
        self._check_split(kind, split)
        return self.spec["shards"].get(f"{kind}/{split}", [])

    def files(self, kind: str, split: str) -> list[str]:
        return [os.path.join(self.directory, shard["file"]) for shard in self.shards(kind, split)]

    def num_records(self, kind: str, split: str) -> int:
        return sum(shard["records"] for shard in self.shards(kind, split))

    def num_impressions(self, split: str) -> int:
        return int(self.spec["impressions"].get(split, 0))

    def has_impressions(self) -> bool:
        return self.num_records("ranking", "fit") > 0

    def _check_split(self, kind: str, split: str) -> None:
        if split not in KINDS.get(kind, ()):
            raise ValueError(f"unknown examples {kind!r}/{split!r} (kinds and splits: {KINDS})")

    def verify(self) -> None:
        """Every shard is present with its recorded size (a truncated or lost shard is named)."""
        for key, shards in self.spec["shards"].items():
            for shard in shards:
                path = os.path.join(self.directory, shard["file"])
                if not os.path.isfile(path):
                    raise ExamplesError(f"examples shard {path} is missing; rebuild the examples")
                size = os.path.getsize(path)
                if size != shard["bytes"]:
                    raise ExamplesError(f"examples shard {path} has {size} bytes, the spec recorded {shard['bytes']}: "
                                        f"it is damaged; rebuild the examples")

    @contextlib.contextmanager
    def reading(self):
        """Turns an input pipeline's failed record checksum into an `ExamplesError` naming the
        damaged shard (TensorFlow's own error names only a byte offset)."""
        import tensorflow as tf

        try:
            yield
        except tf.errors.DataLossError:
            where = self.locate_damage() or f"a shard of {self.directory} is damaged"
            raise ExamplesError(f"examples shard damaged: {where}; rebuild the examples") from None

    def locate_damage(self, kind: str | None = None, split: str | None = None) -> str | None:
        """The first shard whose records do not read back (a failed checksum), with where it
        breaks; None if all read. Reading every record, it is what training calls once an input
        pipeline has failed, to name the file."""
        import tensorflow as tf

        keys = [f"{kind}/{split}"] if kind else sorted(self.spec["shards"])
        for key in keys:
            for shard in self.spec["shards"].get(key, []):
                path = os.path.join(self.directory, shard["file"])
                count = 0
                try:
                    for _ in tf.data.TFRecordDataset(path):
                        count += 1
                except tf.errors.DataLossError as err:
                    return f"{path} is corrupt after record {count} ({err.message.split('[')[0].strip()})"
                if count != shard["records"]:
                    return f"{path} holds {count} records, the spec recorded {shard['records']}"
        return None
