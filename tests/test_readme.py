"""Every ```python block of README.md runs as written.

How: the blocks run in order, in ONE shared namespace, as a reader who pastes them one after another
into the same session would (the DASC block uses ``labelme`` from the tour).  Each block is one
test (parametrised in README order; a failing block names its first line).  The working directory
is a fresh temporary folder, not the repository: the blocks name the datasets by name
(``ci.datasets.load("web")`` finds ``../shared/data`` or ``$CROWDINFER_DATA`` from anywhere) and the
files they write (``annotations.csv``) must not land in the checkout.  The blocks fit real data
(NUTS included), so the run is marked slow; a fast test checks that every block compiles.
"""
import os
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)
NAMESPACE: dict = {"__name__": "__readme__"}


def _id(block: str) -> str:
    return next(line for line in block.splitlines() if line.strip())[:40]


def test_there_are_blocks_and_they_compile():
    assert len(BLOCKS) >= 4  # the tour, own data, the online loop, DASC
    for block in BLOCKS:
        compile(block, "README.md", "exec")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    old = Path.cwd()
    folder = tmp_path_factory.mktemp("readme")
    os.chdir(folder)
    os.environ.setdefault("MPLBACKEND", "Agg")
    yield folder
    os.chdir(old)


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[_id(b) for b in BLOCKS])
def test_block_runs_as_written(workdir, index):
    import matplotlib

    matplotlib.use("Agg")
    exec(compile(BLOCKS[index], f"README.md block {index + 1}", "exec"), NAMESPACE)
    if index == 0:  # the tour's own claims about the data
        assert repr(NAMESPACE["web"].annotations) == (
            "Annotations(15567 annotations, 2665 items, 177 workers, 5 classes, gold=2653)")
        assert NAMESPACE["labelme"].annotations.n_items == 1000
        assert len(NAMESPACE["labelme"].test.features) == 1188
        import matplotlib.pyplot as plt

        plt.close("all")
