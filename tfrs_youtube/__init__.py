"""tfrs-youtube: YouTube's two-stage deep recommender on TensorFlow Recommenders.

Covington, Adams and Sargin (RecSys 2016) recommend in two stages: candidate generation picks a
few hundred videos out of the corpus by a nearest-neighbour search of a user vector (trained as
next-watch prediction, an extreme multiclass softmax), and ranking orders them by a model of the
watch time each would earn (a weighted logistic regression). The public API is this module's
`__all__`, from the event log to the exported SavedModel:

    import tfrs_youtube as ty
    log = ty.generate_event_log(ty.SyntheticConfig(num_users=2000, num_videos=2000))
    examples = ty.build_examples(log, "datasets/my-examples")
    system = ty.train_two_stage(log, ty.TrainConfig(), examples=examples)
    ty.export_with_warmup(system.recommender, examples, "saved_models", "two_stage")

Names load on first use, so `import tfrs_youtube` stays quick for the command line and the
cluster's server processes.

Importing the package selects Keras 2 (tf-keras) for TensorFlow, which TFRS needs. TensorFlow
loads Keras lazily, on first use of `tf.keras`, so setting the variable here works even when
`tensorflow` itself was imported first; it fails only if Keras 3 was already loaded.
"""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_os.environ["TF_USE_LEGACY_KERAS"] = "1"

import tensorflow as _tf  # noqa: E402


def _check_keras_2() -> None:
    dense_module = _tf.keras.layers.Dense.__module__
    if not dense_module.startswith("tf_keras"):
        raise ImportError(
            "tfrs_youtube needs Keras 2 (tf-keras), but tf.keras is Keras 3 "
            f"(tf.keras.layers.Dense comes from {dense_module!r}). TensorFlow loaded Keras "
            "before TF_USE_LEGACY_KERAS=1 was set: import tfrs_youtube before touching "
            "tf.keras, or export TF_USE_LEGACY_KERAS=1, and install tf-keras==2.20.*."
        )


_check_keras_2()

__version__ = "0.1.0"

# Public name -> (module, attribute). One definition each: the name here points to where it is
# written, so `tfrs_youtube.X is tfrs_youtube.<module>.X`.
_PUBLIC = {
    # The event log: its schema, the loaders, the simulator.
    "EventLog": ("data.schema", "EventLog"),
    "SchemaError": ("data.schema", "SchemaError"),
    "read_dataset": ("data.directory", "read_dataset"),
    "write_dataset": ("data.directory", "write_dataset"),
    "load_movielens": ("data.movielens", "load_movielens"),
    "download_movielens": ("data.movielens_download", "download_movielens"),
    "derive_impressions": ("data.impressions", "derive_impressions"),
    "SyntheticConfig": ("data.synthetic", "SyntheticConfig"),
    "generate_event_log": ("data.synthetic", "generate"),
    "Simulator": ("data.simulator", "Simulator"),
    # Examples: the Beam pipeline from the log to sharded TFRecords, and reading them back.
    "ExampleConfig": ("pipeline.config", "ExampleConfig"),
    "build_examples": ("pipeline.build", "build_examples"),
    "ExampleSet": ("pipeline.example_set", "ExampleSet"),
    "ExamplesError": ("pipeline.example_set", "ExamplesError"),
    "dataset": ("inputs", "dataset"),
    "arrays": ("inputs", "arrays"),
    # Features and models.
    "EmbeddingConfig": ("features.embeddings", "EmbeddingConfig"),
    "FeatureEmbeddings": ("features.embeddings", "FeatureEmbeddings"),
    "VideoCatalog": ("features.context", "VideoCatalog"),
    "CandidateFeatures": ("features.context", "CandidateFeatures"),
    "CandidateConfig": ("candidate", "CandidateConfig"),
    "UserTower": ("candidate", "UserTower"),
    "CandidateGenerator": ("candidate", "CandidateGenerator"),
    "StreamingFrequencyEstimator": ("frequency", "StreamingFrequencyEstimator"),
    "RankerConfig": ("ranking", "RankerConfig"),
    "Ranker": ("ranking", "Ranker"),
    "impression_weights": ("ranking", "impression_weights"),
    "WatchTimeCalibration": ("calibration", "WatchTimeCalibration"),
    # Training.
    "TrainConfig": ("training", "TrainConfig"),
    "Models": ("training", "Models"),
    "build_models": ("training", "build_models"),
    "candidate_features": ("candidate", "candidate_features"),
    "ranking_features": ("ranking", "ranking_features"),
    "ranking_dataset": ("training", "ranking_dataset"),
    "candidate_optimizer": ("training", "candidate_optimizer"),
    "ranker_optimizer": ("training", "ranker_optimizer"),
    "fit_candidate_generator": ("training", "fit_candidate_generator"),
    "fit_ranker": ("training", "fit_ranker"),
    "train": ("training", "train"),
    "TrainedSystem": ("system", "TrainedSystem"),
    "train_two_stage": ("system", "train_two_stage"),
    "ClusterConfig": ("distributed", "ClusterConfig"),
    "Distribution": ("distributed", "Distribution"),
    "load_train_config": ("config_files", "load_train_config"),
    "load_run": ("runs", "load_run"),
    "presets": ("presets", None),  # a namespace, like tfrs.tasks: presets.synthetic_demo(), ...
    # Serving and export.
    "ServingConfig": ("serving", "ServingConfig"),
    "TwoStageRecommender": ("serving", "TwoStageRecommender"),
    "scann_settings": ("index", "scann_settings"),
    "export_two_stage": ("export", "export_two_stage"),
    "export_with_warmup": ("export", "export_with_warmup"),
    "read_metadata": ("export", "read_metadata"),
    "latest_version_dir": ("export", "latest_version_dir"),
    "as_tensors": ("requests", "as_tensors"),
    "take_requests": ("requests", "take"),
    "rest_body": ("requests", "rest_body"),
    # Evaluation.
    "retrieval_report": ("reports", "retrieval_report"),
    "ranking_report": ("reports", "ranking_report"),
    "two_stage_report": ("reports", "two_stage_report"),
    "held_out_requests": ("reports", "held_out_requests"),
    "item_vectors": ("reports", "item_vectors"),
    "user_vectors": ("reports", "user_vectors"),
    "predict": ("reports", "predict"),
    "auc": ("evaluation", "auc"),
    "weighted_per_user_loss": ("evaluation", "weighted_per_user_loss"),
    "observed_watch_time": ("evaluation", "observed_watch_time"),
    "calibration_deciles": ("evaluation", "calibration_deciles"),
    "max_calibration_error": ("evaluation", "max_calibration_error"),
    "run_online_experiment": ("online", "run_online_experiment"),
    "check_two_stage_export": ("online", "check_model"),
    "format_online": ("demo", "format_online"),
    "evaluate_retrieval": ("evaluation", "evaluate_retrieval"),
    "evaluate_popularity": ("evaluation", "evaluate_popularity"),
    "calibration_by_group": ("evaluation", "calibration_by_group"),
    "ranked_impressions": ("reports", "ranked_impressions"),
    "exact_top_k": ("ivf", "exact_top_k"),
    "TwoTowerBaseline": ("baselines", "TwoTowerBaseline"),
    "train_and_evaluate_two_tower": ("baselines", "train_and_evaluate_two_tower"),
    # Odds and ends the examples and benchmarks use.
    "SCHEMA": ("data.schema", "SCHEMA"),
    "HIDDEN_LAYER_PRESETS": ("ranking", "HIDDEN_LAYER_PRESETS"),
    "IMPRESSION_CONTINUOUS": ("features.context", "IMPRESSION_CONTINUOUS"),
    "temporary_examples": ("system", "temporary_examples"),
    "requests_at": ("requests", "at"),
    "parse_rest_request": ("rest", "parse_request"),
    "rest_response_body": ("rest", "response_body"),
}

__all__ = sorted(_PUBLIC) + ["__version__"]


def __getattr__(name: str):
    # Loaded on first use (PEP 562): the command line and cluster servers need few of these, and
    # Apache Beam, ScaNN and pandas take seconds to import.
    try:
        module_name, attribute = _PUBLIC[name]
    except KeyError:
        raise AttributeError(f"module 'tfrs_youtube' has no attribute {name!r}") from None
    import importlib

    module = importlib.import_module(f"{__name__}.{module_name}")
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
