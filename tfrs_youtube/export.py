"""Export to TF Serving's layout: `<base>/<name>/<version>/`, atomically, never over a version.

A version is written to a temporary directory beside its final place and renamed into it, so a
server watching the base directory never sees half a model, and an existing version is never
touched. Each version carries a metadata file and TF Serving warmup requests under
`assets.extra/`.

An export killed part-way leaves its temporary folder (`.tmp-<pid>-<hex>`), which the next export
into that model directory deletes. The ScaNN model and its portable twin are saved whole before
either is renamed, and into the same version number (one past the highest in either directory),
so `<name>/<v>` and `<name>_portable/<v>` are always the same trained model; a kill between the
two renames leaves a version without its twin, never a twin of another model.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid

import numpy as np
import tensorflow as tf

from tfrs_youtube import faults

METADATA_FILE = "tfrs_youtube.json"
WARMUP_FILE = "tf_serving_warmup_requests"
# The portable twin is a model of its own beside the ScaNN one: `<base>/<name>_portable/<version>`.
PORTABLE_SUFFIX = "_portable"


def library_versions() -> dict:
    """The versions a SavedModel was made with (recorded in its metadata)."""
    from importlib.metadata import version

    import pandas as pd
    import tensorflow_recommenders as tfrs

    import tfrs_youtube

    return {"tfrs_youtube": tfrs_youtube.__version__, "tensorflow": tf.__version__,
            "tensorflow_recommenders": tfrs.__version__, "scann": version("scann"), "pandas": pd.__version__}


def versions(model_dir: str) -> list[int]:
    """The integer versions present under a model directory, ascending."""
    if not os.path.isdir(model_dir):
        return []
    return sorted(int(d) for d in os.listdir(model_dir) if d.isdigit())


def read_metadata(version_dir: str) -> dict:
    """The metadata an export wrote beside the SavedModel."""
    with open(os.path.join(version_dir, "assets.extra", METADATA_FILE)) as f:
        return json.load(f)


def latest_version_dir(model_dir: str) -> str:
    """The newest version's directory (what TF Serving would serve by default)."""
    found = versions(model_dir)
    if not found:
        raise FileNotFoundError(f"no integer version directories under {model_dir}")
    return os.path.join(model_dir, str(found[-1]))


def write_warmup_requests(path: str, requests: list[dict[str, np.ndarray]], model_name: str,
                          signature: str = "serving_default") -> None:
    """A TFRecord of `PredictionLog`s that TF Serving replays at load to warm the model up."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    with tf.io.TFRecordWriter(path) as writer:
        for request in requests:
            predict = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name=signature))
            for key, value in request.items():
                predict.inputs[key].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=predict))
            writer.write(log.SerializeToString())


TMP_PREFIX = ".tmp-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(model_dir: str) -> list[str]:
    """Deletes the temporary folders that killed exports left in `model_dir`; returns them.

    An export writes `.tmp-<pid>-<hex>` and renames it into a version; a kill leaves it behind.
    One whose process is gone (or of the older `.tmp-<hex>` form, which names none) is stale; a
    live exporter's, on this machine, is left alone.
    """
    removed = []
    if not os.path.isdir(model_dir):
        return removed
    for entry in os.listdir(model_dir):
        if not entry.startswith(TMP_PREFIX):
            continue
        pid = entry[len(TMP_PREFIX):].split("-", 1)[0]
        if "-" in entry[len(TMP_PREFIX):] and pid.isdigit() and _pid_alive(int(pid)):
            continue
        shutil.rmtree(os.path.join(model_dir, entry), ignore_errors=True)
        removed.append(entry)
    return removed


def _new_temporary(model_dir: str) -> str:
    os.makedirs(model_dir, exist_ok=True)
    remove_stale_temporaries(model_dir)
    return os.path.join(model_dir, f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}")


def _save_into(tmp: str, module: tf.Module, name: str, signatures: dict, metadata: dict | None,
               warmup_requests: list[dict] | None, custom_op_namespaces: tuple[str, ...]) -> None:
    """The SavedModel and its `assets.extra/` (metadata, warm-up requests) in the folder `tmp`."""
    options = tf.saved_model.SaveOptions(namespace_whitelist=list(custom_op_namespaces))
    # Keras warns about every subclassed layer it cannot re-create from config; the export
    # is a graph with signatures, which needs no such re-creation, so the warnings are noise.
    level = tf.get_logger().level
    tf.get_logger().setLevel("ERROR")
    try:
        tf.saved_model.save(module, tmp, signatures=signatures, options=options)
    finally:
        tf.get_logger().setLevel(level)
    faults.point(f"export:saved:{name}")  # the SavedModel is written, its assets.extra not yet
    extra = os.path.join(tmp, "assets.extra")
    os.makedirs(extra, exist_ok=True)
    if warmup_requests:
        write_warmup_requests(os.path.join(extra, WARMUP_FILE), warmup_requests, name)
    with open(os.path.join(extra, METADATA_FILE), "w") as f:
        json.dump(metadata or {}, f, indent=2, sort_keys=True, default=str)


def _claim_versions(temporaries: dict[str, str]) -> dict[str, str]:
    """Renames each finished temporary folder ({model dir: tmp}) to one version number, the same
    in every model directory: one past the highest version of any of them. So a version number
    names one export in all of them, even after an export was killed between its renames (that
    version then lacks a twin; the next export skips past it). os.rename fails rather than
    replace a directory that another exporter created in the meantime: retry with the next."""
    model_dirs = list(temporaries)
    for _ in range(100):
        version = max([0] + [v for d in model_dirs for v in versions(d)]) + 1
        first = os.path.join(model_dirs[0], str(version))
        try:
            os.rename(temporaries[model_dirs[0]], first)
        except OSError:
            if not os.path.exists(first):
                raise
            continue
        faults.point("export:first-version")  # one variant's version is in place, its twin's not yet
        paths = {model_dirs[0]: first}
        for model_dir in model_dirs[1:]:
            target = os.path.join(model_dir, str(version))
            os.rename(temporaries[model_dir], target)  # fails only if a concurrent export raced us here
            paths[model_dir] = target
        return paths
    raise RuntimeError(f"could not claim a version directory under {model_dirs[0]}")


def export_saved_model(module: tf.Module, base_dir: str, name: str, signatures: dict,
                       metadata: dict | None = None, warmup_requests: list[dict] | None = None,
                       custom_op_namespaces: tuple[str, ...] = ("Scann",)) -> str:
    """Saves `module` as the next version of `<base_dir>/<name>`; returns the version directory.

    Stale temporary folders of killed exports are removed first (`remove_stale_temporaries`)."""
    model_dir = os.path.join(base_dir, name)
    tmp = _new_temporary(model_dir)
    try:
        _save_into(tmp, module, name, signatures, metadata, warmup_requests, custom_op_namespaces)
        return _claim_versions({model_dir: tmp})[model_dir]
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def export_two_stage(recommender, base_dir: str, name: str, metadata: dict | None = None,
                     warmup_requests: list[dict] | None = None, recall_user_vectors: np.ndarray | None = None,
                     portable: bool = True) -> dict[str, str]:
    """Exports a `TwoStageRecommender` and its portable twin; returns {"scann": dir, "portable": dir}.

    The ScaNN variant goes to `<base>/<name>/<version>`, the twin (core ops only: what stock TF
    Serving can load; a partitioned index or exact search, `TwoStageRecommender.portable_index`)
    to `<base>/<name>_portable/<version>`. Both carry the same signatures, warmup requests and
    metadata: serving config, corpus size, library versions, the caller's `metadata` (e.g.
    evaluation figures) and, given user vectors, each index's recall of the exact top-N and
    top-100 measured at export (the partitioned index also chooses its number of probes on them).

    `warmup_requests` are replayed by TF Serving on `serving_default`, so each must hold exactly
    its inputs (`recommender.serving_request`): the user's inputs alone for a retrieval-only model.
    """
    from tfrs_youtube.serving import TwoStageRecommender

    if not isinstance(recommender, TwoStageRecommender):
        raise TypeError(f"export_two_stage needs a TwoStageRecommender, got {type(recommender).__name__}")
    import dataclasses

    # TF Serving refuses a request with an input the signature lacks, and a warm-up record it
    # cannot replay fails the model's load: check here, where the mistake can still be named.
    expected = sorted(recommender.serving_signature)
    for request in warmup_requests or ():
        if sorted(request) != expected:
            raise ValueError(f"a warm-up request has inputs {sorted(request)}; serving_default takes {expected}")
    info = dict(metadata or {})
    info.update(corpus_size=int(len(recommender.corpus_ids)), library_versions=library_versions(),
                contract=recommender.contract.describe(), retrieval_only=recommender.retrieval_only,
                serving=dataclasses.asdict(recommender.config), signatures=sorted(recommender.signatures()))
    # Both variants are saved whole into temporary folders first, then renamed into the same
    # version number (`_claim_versions`): `<name>/v` and `<name>_portable/v` are one export.
    variant = recommender.config.index
    model_dirs = {variant: os.path.join(base_dir, name)}
    if portable and variant == "scann":
        model_dirs["portable"] = os.path.join(base_dir, name + PORTABLE_SUFFIX)
    temporaries = {key: _new_temporary(model_dir) for key, model_dir in model_dirs.items()}
    try:
        _save_into(temporaries[variant], recommender, name, recommender.signatures(),
                   dict(info, variant=variant, index=index_metadata(recommender, recall_user_vectors)),
                   warmup_requests, ("Scann",) if variant == "scann" else ())
        if "portable" in model_dirs:
            twin = recommender.portable(index_queries=recall_user_vectors)
            _save_into(temporaries["portable"], twin, name + PORTABLE_SUFFIX, twin.signatures(),
                       dict(info, variant="portable", serving=dataclasses.asdict(twin.config),
                            index=index_metadata(twin, recall_user_vectors), scann_variant=name),
                       warmup_requests, ())
        claimed = _claim_versions({model_dirs[key]: temporaries[key] for key in model_dirs})
        return {key: claimed[model_dirs[key]] for key in model_dirs}
    finally:
        for tmp in temporaries.values():
            if os.path.exists(tmp):
                shutil.rmtree(tmp, ignore_errors=True)


def index_metadata(recommender, user_vectors: np.ndarray | None) -> dict:
    """The index's settings and, for an approximate index given user vectors, its recall of the
    exact top-N and top-100 on them."""
    index = dict(recommender.index_settings)
    if user_vectors is not None and len(user_vectors) and not index.get("exact"):
        index[f"recall_at_{recommender.config.num_candidates}"] = recommender.index_recall(user_vectors)
        k = min(100, recommender.config.num_candidates)
        index[f"recall_at_{k}"] = recommender.index_recall(user_vectors, k=k)
        index["recall_queries"] = int(len(user_vectors))
    return index


def export_with_warmup(recommender, examples, base_dir: str, name: str, metadata: dict | None = None,
                       portable: bool = True) -> dict[str, str]:
    """`export_two_stage` with what every caller adds: a warm-up request (the first test request
    of the examples, as `serving_default` takes it), ScaNN's recall measured on up to 1,000 test
    users, and the request contract in the metadata."""
    from tfrs_youtube import requests as request_tools
    from tfrs_youtube.reports import held_out_requests

    requests, _ = held_out_requests(examples)
    if len(requests["request_time"]) == 0:
        raise ValueError(f"{examples.directory} has no test requests to warm the export up with")
    first = request_tools.take(requests, slice(0, 1000))
    user_vectors = recommender.user_embedding(request_tools.as_tensors(recommender.user_request(first)))[
        "user_embedding"].numpy()
    metadata = dict(metadata or {}, examples=examples.directory)
    return export_two_stage(recommender, base_dir, name, metadata=metadata,
                            warmup_requests=[recommender.serving_request(request_tools.take(requests, slice(0, 1)))],
                            recall_user_vectors=user_vectors, portable=portable)
