"""Packaging: the import selects Keras 2, and says clearly when Keras 3 got there first; the
public API (`__all__`) is the objects its modules define, and the examples import nothing else."""

import subprocess
import sys
from pathlib import Path


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


def test_every_public_name_is_the_object_its_module_defines():
    """`tfrs_youtube.X` (every X in `__all__`) is `_PUBLIC[X]`'s module attribute itself, written
    in that module (not a copy, nor an import from elsewhere)."""
    import importlib

    import tfrs_youtube

    assert sorted(tfrs_youtube.__all__) == sorted(set(tfrs_youtube._PUBLIC) | {"__version__"})
    assert len(tfrs_youtube.__all__) == len(set(tfrs_youtube.__all__))
    assert isinstance(getattr(tfrs_youtube, "__version__"), str)
    wrong = []
    for name, (module_name, attribute) in tfrs_youtube._PUBLIC.items():
        module = importlib.import_module(f"tfrs_youtube.{module_name}")
        expected = module if attribute is None else getattr(module, attribute)
        value = getattr(tfrs_youtube, name)
        if value is not expected:
            wrong.append(f"tfrs_youtube.{name} is not tfrs_youtube.{module_name}.{attribute}")
        elif attribute is not None and getattr(value, "__module__", module.__name__) != module.__name__:
            wrong.append(f"tfrs_youtube.{name}: tfrs_youtube.{module_name}.{attribute} is written in "
                         f"{value.__module__}")
    assert not wrong, "\n".join(wrong)


def _python_sources():
    """(where, source) of every example script and every notebook code cell; a notebook cell's
    shell (`!`) and magic (`%`) lines are blanked, so that line numbers stay the cell's own."""
    import json
    import re

    examples = Path(__file__).resolve().parents[1] / "examples"
    for path in sorted(examples.glob("*.py")):
        yield f"examples/{path.name}", path.read_text()
    shell_or_magic = re.compile(r"^\s*(?:[A-Za-z_][\w, ]*=\s*)?[!%]")
    for path in sorted(examples.glob("*.ipynb")):
        for number, cell in enumerate(json.loads(path.read_text())["cells"], start=1):
            if cell["cell_type"] != "code":
                continue
            source = "".join(cell["source"])
            if source.lstrip().startswith("%%"):  # a cell magic: the cell is not Python
                continue
            lines = ["" if shell_or_magic.match(line) else line for line in source.splitlines()]
            yield f"examples/{path.name}, cell {number}", "\n".join(lines)


def test_examples_import_the_package_only_through_its_public_api():
    """Examples and notebooks use `import tfrs_youtube [as X]` or `from tfrs_youtube import ...`,
    never a submodule (`tfrs_youtube.<module>`): the public API is `tfrs_youtube.__all__`."""
    import ast

    offenders, sources = [], list(_python_sources())
    assert any(where.endswith(".py") for where, _ in sources) and any(".ipynb" in where for where, _ in sources)
    for where, source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError as err:
            offenders.append(f"{where}, line {err.lineno}: not Python ({err.msg})")
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                if name.startswith("tfrs_youtube."):
                    statement = ast.get_source_segment(source, node) or name
                    offenders.append(f"{where}, line {node.lineno}: {statement}")
    assert not offenders, (f"{len(offenders)} imports of tfrs_youtube submodules (use `import tfrs_youtube` or "
                           "`from tfrs_youtube import ...`):\n" + "\n".join(offenders))
