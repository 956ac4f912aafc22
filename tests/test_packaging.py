"""The package as it is installed: a wheel holds every subpackage of the tree, and nothing of the
installed copy looks for data inside ``site-packages``."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tree_packages() -> set[str]:
    found = set()
    for init in (ROOT / "crowdinfer").rglob("__init__.py"):
        found.add(".".join(init.parent.relative_to(ROOT).parts))
    for init in (ROOT / "models").rglob("__init__.py"):
        found.add(".".join(("crowdinfer",) + init.parent.relative_to(ROOT).parts))
    return found


def test_wheel_holds_every_subpackage(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("crowdinfer-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    in_wheel = {n[: -len("/__init__.py")].replace("/", ".") for n in names if n.endswith("/__init__.py")}
    missing = _tree_packages() - in_wheel
    assert not missing, f"subpackages missing from the wheel: {sorted(missing)}"
    assert "crowdinfer/models/dawid_skene.py" in names
    assert not any(n.startswith(("tests/", "experiments/", "models/")) for n in names)


def test_installed_copy_finds_data_by_env_or_cwd(monkeypatch, tmp_path):
    import crowdinfer.datasets as d

    monkeypatch.setenv("CROWDINFER_DATA", str(tmp_path))
    assert d.shared_data_dir() == tmp_path
    monkeypatch.delenv("CROWDINFER_DATA")
    monkeypatch.setattr(d, "__file__", "/usr/lib/python3/site-packages/crowdinfer/datasets.py")
    monkeypatch.chdir(tmp_path)
    assert d.shared_data_dir() == tmp_path.parent / "shared" / "data"


def test_fit_is_callable_whatever_the_import_order():
    """Importing the ``crowdinfer.fit`` submodule first (as ``from crowdinfer.fit import MODELS``
    does) must not turn ``ci.fit`` into something that cannot be called."""
    code = (
        "from crowdinfer.fit import MODELS\n"
        "import crowdinfer as ci\n"
        "ann = ci.Annotations.from_arrays([0, 0, 1, 1], [0, 1, 0, 1], [0, 0, 1, 1], n_classes=2)\n"
        "print(ci.fit(ann, 'majority_vote').labels.tolist())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[0, 1]"
