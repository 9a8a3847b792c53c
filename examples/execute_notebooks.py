"""Execute the example notebooks top to bottom and save them with their outputs.

    TFRS_YOUTUBE_MOVIELENS_100K=/path/to/ml-100k python examples/execute_notebooks.py [NAME.ipynb ...]

This is how the committed outputs are made: at full size (unset TFRS_YOUTUBE_EXAMPLE_SIZE;
`TFRS_YOUTUBE_EXAMPLE_SIZE=small` runs the CI size instead), every notebook of examples/ (or the
ones named) in place. The kernel runs in a temporary directory, which is also its TMPDIR, so
nothing is written beside the notebooks and nothing the notebooks export outlives the run.
Without TFRS_YOUTUBE_MOVIELENS_100K the MovieLens parts print that they were skipped.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parent


def main(names: list[str]) -> int:
    notebooks = [EXAMPLES / n for n in names] if names else sorted(EXAMPLES.glob("*.ipynb"))
    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as workdir:
            # The kernel inherits this environment: notebook 3's `tempfile.mkdtemp` export lands here.
            previous, os.environ["TMPDIR"] = os.environ.get("TMPDIR"), workdir
            try:
                NotebookClient(nb, timeout=3600, kernel_name="python3",
                               resources={"metadata": {"path": workdir}}).execute()
            finally:
                if previous is None:
                    del os.environ["TMPDIR"]
                else:
                    os.environ["TMPDIR"] = previous
        nbformat.write(nb, path)
        print(f"{path.name}: executed in {time.perf_counter() - started:.0f} s, "
              f"{path.stat().st_size / 1e3:.0f} kB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
