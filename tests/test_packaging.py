"""The installed packages carry what they need: weights, their records, the sample project, every module."""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from engine.click_model import WEIGHTS as CLICKS
from engine.embedding.network import DEFAULT_WEIGHTS
from engine.project import SAMPLE_PROJECT
from engine.refiners.modulation import RESOURCES

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def _tracked(folder: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", folder], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return out.split()


def test_every_source_package_is_listed_in_pyproject():
    """pyproject names the packages one by one (package-dir maps two of them); a new subpackage must be added."""
    found = {str(p.parent.relative_to(ROOT)).replace("/", ".") for d in ("engine", "annotator")
             for p in (ROOT / d).rglob("__init__.py")}
    mapped = {name for name, folder in PYPROJECT["package-dir"].items()}
    assert set(PYPROJECT["packages"]) == found | mapped
    assert {PYPROJECT["package-dir"][n] for n in mapped} == {"resources", "sample_projects"}


def test_checkout_reads_its_own_resources_folders():
    """In a checkout (editable install) the lookups land in the source tree, so `vos-engine train` writes there."""
    assert DEFAULT_WEIGHTS == ROOT / "resources" / "embedding" / "head.pt"
    assert RESOURCES == ROOT / "resources" / "refiners"
    assert CLICKS == ROOT / "resources" / "clicks" / "click_model.pt"
    assert SAMPLE_PROJECT == ROOT / "sample_projects" / "bigbuckbunny"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(out), str(ROOT)], check=True, capture_output=True)
    (whl,) = out.glob("vos_annotator-*.whl")
    return whl


def test_wheel_holds_every_module_weight_record_and_the_sample(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in _tracked("engine") + _tracked("annotator"):
        assert f in names, f"{f} missing from the wheel"
    for folder, package in (("resources", "engine/resources"), ("sample_projects", "engine/sample_projects")):
        for f in _tracked(folder):
            assert package + f[len(folder):] in names, f"{f} missing from the wheel"
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", "resources/", "sample_projects/"))]


def test_installed_wheel_finds_weights_and_sample_away_from_the_source_tree(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = (
        "import engine, sys\n"
        "from engine.embedding import Embedder\n"
        "from engine.embedding.network import DEFAULT_WEIGHTS\n"
        "from engine.project import SAMPLE_PROJECT, open_sample_copy\n"
        "from engine.refiners.modulation import WEIGHTS, load_model\n"
        "from engine.click_model import WEIGHTS as CLICKS, ClickModel\n"
        "print(engine.__file__, DEFAULT_WEIGHTS, SAMPLE_PROJECT, WEIGHTS, CLICKS, sep='\\n')\n"
        "assert Embedder.load().dim == 128 and load_model() is not None and ClickModel.load().fits(Embedder.load())\n"
        "print(len(open_sample_copy(sys.argv[1]).masks.frames()))\n"
    )
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", code, str(tmp_path / "copy")], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert all(line.startswith(str(target)) for line in lines[:5]), lines
    assert lines[5] == "1"  # the sample's annotated first frame came along


def test_weights_env_still_overrides_the_shipped_head(tmp_path, monkeypatch):
    from engine.embedding.network import WEIGHTS_ENV, Embedder, EmbeddingHead, file_sha256, save_head
    from engine.errors import FormatError

    own = tmp_path / "my-head.pt"
    save_head(EmbeddingHead(dim=16, hidden=16), own)
    monkeypatch.setenv(WEIGHTS_ENV, str(own))
    emb = Embedder.load()
    assert emb.dim == 16 and emb.weights_id.endswith(file_sha256(own)[:16])
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "missing.pt"))
    with pytest.raises(FormatError, match="missing.pt"):
        Embedder.load()
