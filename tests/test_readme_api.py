"""The README's Python API section runs as written, at a small size.

The code is read from the README itself (the first python block under "## The Python API"); only
its sizes shrink (a tiny log, one epoch) and its folders move into a temporary directory, so the
README cannot drift from the API. It runs in a fresh interpreter, as a user's script would.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def api_snippet() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## The Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_snippet_imports_only_the_top_level():
    code = api_snippet()
    assert "import tfrs_youtube as ty" in code
    assert not re.search(r"(from|import) tfrs_youtube\.", code)


@pytest.mark.slow
def test_the_python_api_section_runs_as_written(tmp_path):
    code = api_snippet()
    small = {
        "num_users=2000, num_videos=2000": "num_users=300, num_videos=200",
        "epochs=3": "epochs=1",
        '"datasets/my-examples"': repr(str(tmp_path / "examples")),
        '"saved_models"': repr(str(tmp_path / "saved_models")),
    }
    for before, after in small.items():
        assert before in code, f"the README's API snippet no longer holds {before!r}: update this test"
        code = code.replace(before, after)
    script = tmp_path / "snippet.py"
    script.write_text(code)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TMPDIR=str(tmp_path))
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(r"\[b'v\d+'", done.stdout), done.stdout[-2000:]  # the top videos' ids, printed as bytes
    assert (tmp_path / "saved_models" / "my_model_portable" / "1" / "saved_model.pb").exists()
