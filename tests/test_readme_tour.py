"""The README's five-minute tour runs as written, after `make demo`.

The commands are read from the README itself (its first bash block under "A five-minute tour"),
so the README cannot drift from what works. They run with `bash -e` in a temporary directory laid
out as the repository root is after `make demo` (which has already written
`datasets/synthetic/`), with this interpreter's `bin/` (where `tfrs-youtube` is installed) first
on the PATH. Only `tensorboard`, a server that never exits, is left out.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def tour_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## A five-minute tour", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        command = line.split("#", 1)[0].strip()
        if command and not command.startswith("tensorboard "):
            commands.append(command)
    return commands


def test_the_tour_is_found_in_the_readme():
    commands = tour_commands()
    assert [c.split()[1] for c in commands] == ["data", "train", "evaluate", "export", "recommend", "recommend"]


@pytest.mark.slow
def test_readme_tour_runs_as_written_after_the_demo(tmp_path):
    (tmp_path / "examples").symlink_to(REPO / "examples")
    (tmp_path / "datasets" / "synthetic").mkdir(parents=True)  # what `make demo` leaves behind
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               TF_CPP_MIN_LOG_LEVEL="3", TMPDIR=str(tmp_path))
    outputs = []
    for command in tour_commands():
        done = subprocess.run(["bash", "-e", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=900)
        assert done.returncode == 0, f"README tour step failed: {command}\n{done.stderr[-3000:]}"
        outputs.append(done.stdout)
    assert (tmp_path / "saved_models" / "tour" / "1" / "saved_model.pb").exists()
    assert (tmp_path / "saved_models" / "tour_portable" / "1" / "saved_model.pb").exists()
    assert '"predictions"' in outputs[-2] and '"expected_watch_time_s"' in outputs[-2]
    assert '"predictions"' in outputs[-1] and '"video_ids"' in outputs[-1]
