"""The output shards of the example pipeline, written in two steps: part files, then shards.

A worker of the materialising pass buffers its serialised records by output shard, each with a
key that sorts it (user, then request time), and spills them to part files (`write_part`); at
the end, all parts of one shard are read, sorted by key and written as one TFRecord file
(`merge_shard`), then deleted. A part file is a sequence of entries: the key's and the record's
lengths (two little-endian uint32), the key, the record.
"""

from __future__ import annotations

import os
import struct

from apache_beam.io.filesystems import FileSystems

from tfrs_youtube.pipeline import records


def write_part(path: str, entries: list[tuple[bytes, bytes]]) -> None:
    """(key, record) entries -> a part file at `path`."""
    with FileSystems.create(path) as f:
        for key, record in entries:
            f.write(struct.pack("<II", len(key), len(record)) + key + record)


def merge_shard(element, out_dir: str) -> dict:
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
