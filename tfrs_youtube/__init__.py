"""tfrs-youtube: YouTube's two-stage deep recommender on TensorFlow Recommenders.

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
