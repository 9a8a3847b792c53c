"""Packaging: the import selects Keras 2, and says clearly when Keras 3 got there first."""

import subprocess
import sys


def _run(code: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_import_selects_keras_2_even_after_tensorflow():
    out = _run("import os, tensorflow as tf, tfrs_youtube; "
               "print(os.environ['TF_USE_LEGACY_KERAS'], tf.keras.layers.Dense.__module__)")
    assert out.returncode == 0, out.stderr[-2000:]
    flag, module = out.stdout.split()
    assert flag == "1" and module.startswith("tf_keras")


def test_import_fails_clearly_when_keras_3_is_already_loaded():
    out = _run("import tensorflow as tf; tf.keras.layers.Dense; import tfrs_youtube")
    assert out.returncode != 0
    assert "needs Keras 2 (tf-keras), but tf.keras is Keras 3" in out.stderr


def test_console_entry_points():
    out = subprocess.run([sys.executable, "-m", "tfrs_youtube", "--help"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "demo" in out.stdout and "recommend" in out.stdout
