"""The package works outside this repository: schemas ship in it, and no module locates bundles itself.

Fast checks: ``importlib.resources`` lists the five shipped schemas (the files ``setup.cfg``'s
``package_data`` puts in the wheel) and each loads by name; no module under ``fairmonai/`` finds the
repository through ``Path(__file__).parents[...]`` or names ``data_manifests`` / ``bundles/`` in code
(docstrings may point a reader at the repository's guides).

Slow check (``-m slow``): build the wheel, install it into a fresh virtual environment outside the
repository, copy the OCT bundle to a temporary folder and run its smoke training and evaluation there.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import pytest

from fairmonai.data import load_schema

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "fairmonai"
DATASETS = ["fitzpatrick17k", "isic2020", "mama_mia", "oct_glaucoma", "rectal_mri"]


def test_schemas_ship_in_the_package():
    files = sorted(p.name for p in resources.files("fairmonai.data.schemas").iterdir() if p.name.endswith(".json"))
    assert files == [f"{d}.json" for d in DATASETS]
    for d in DATASETS:
        assert load_schema(d).name == d
    assert not list((REPO / "data_manifests").glob("*/schema.json")), "schemas belong in fairmonai/data/schemas/"


def test_setup_cfg_packages_the_schemas():
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    assert cfg["options.package_data"]["fairmonai.data.schemas"].strip() == "*.json"


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def _repo_lookups(path: Path) -> list[str]:
    """Code in ``path`` that locates the repository: ``.parents[...]`` subscripts, and string
    literals (not docstrings) naming ``data_manifests`` or a ``bundles/`` folder."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docs = _docstring_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Attribute) and node.value.attr == "parents":
            found.append(f"{path.relative_to(REPO)}:{node.lineno}: .parents[...]")
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            if "data_manifests" in node.value or node.value == "bundles" or "bundles/" in node.value:
                found.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.value!r}")
    return found


def test_no_module_locates_the_repository():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found += _repo_lookups(path)
    assert found == []


def test_the_lookup_check_sees_what_it_forbids(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('"""See data_manifests/x."""\nfrom pathlib import Path\n'
                 'B = Path(__file__).parents[2] / "bundles" / "x"\nS = "data_manifests"\n')
    saved = globals()["REPO"]
    globals()["REPO"] = tmp_path
    try:
        hits = _repo_lookups(f)
    finally:
        globals()["REPO"] = saved
    assert sorted(hits) == ["m.py:3: 'bundles'", "m.py:3: .parents[...]", "m.py:4: 'data_manifests'"]


def _run(cmd: list[str], cwd: Path, env: dict, log: list[str]) -> None:
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    log.append(f"{time.time() - t0:6.0f} s  {' '.join(cmd[:4])}")
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"


@pytest.mark.slow
def test_wheel_runs_the_oct_bundle_outside_the_repository(tmp_path_factory):
    """About 5-10 minutes: wheel, fresh venv (torch from the local wheel cache), smoke train + evaluate."""
    base = tmp_path_factory.mktemp("outside")
    assert REPO not in base.parents
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "FAIRMONAI_MANIFESTS")}
    log: list[str] = []
    src = base / "src"  # build from a copy: setuptools writes build/ and *.egg-info beside the sources
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                             ".pytest_cache", "bundles", "tests", "benchmarks"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", str(src), "-w", str(base / "dist")], base, env, log)
    wheel, = (base / "dist").glob("fairmonai-*.whl")
    _run([sys.executable, "-m", "venv", str(base / "venv")], base, env, log)
    py = str(base / "venv" / "bin" / "python")
    _run([py, "-m", "pip", "install", "--quiet", str(wheel)], base, env, log)

    bundle = base / "oct_glaucoma_fami"
    shutil.copytree(REPO / "bundles" / "oct_glaucoma_fami", bundle,
                    ignore=shutil.ignore_patterns("models", "eval", "data", "runs", "__pycache__"))
    check = ("import fairmonai, sys; from fairmonai.data import load_schema; "
             "print(fairmonai.__file__); print(load_schema('oct_glaucoma').name)")
    out = subprocess.run([py, "-c", check], cwd=bundle, env=env, capture_output=True, text=True, check=True).stdout
    installed, name = out.split()
    assert Path(installed).is_relative_to(base / "venv") and name == "oct_glaucoma"

    for configs in (["train.json", "smoke.json"], ["train.json", "smoke.json", "evaluate.json"]):
        files = "[" + ",".join(f"'configs/{c}'" for c in configs) + "]"
        _run([py, "-m", "monai.bundle", "run", "--config_file", files, "--bundle_root", str(bundle)], bundle, env, log)
    report = bundle / "eval" / "report_test" / "report.json"
    assert report.is_file()
    assert json.loads(report.read_text())["attributes"]["race"]["n_samples"] > 0
    print("\n".join(log))


def test_fairmonai_manifests_adds_and_replaces_a_schema(tmp_path, monkeypatch):
    from fairmonai.data.manifest import ManifestError

    shipped = json.loads((resources.files("fairmonai.data.schemas") / "oct_glaucoma.json").read_text())
    (tmp_path / "site_ds").mkdir()
    (tmp_path / "site_ds" / "schema.json").write_text(json.dumps({**shipped, "name": "site_ds"}))
    (tmp_path / "oct_glaucoma").mkdir()
    (tmp_path / "oct_glaucoma" / "schema.json").write_text(json.dumps({**shipped, "id_column": "eye_id"}))
    monkeypatch.setenv("FAIRMONAI_MANIFESTS", str(tmp_path))
    assert load_schema("site_ds").name == "site_ds"
    assert load_schema("oct_glaucoma").id_column == "eye_id"
    assert load_schema("mama_mia").name == "mama_mia"  # still shipped
    assert load_schema(tmp_path / "site_ds" / "schema.json").name == "site_ds"  # a path still works
    with pytest.raises(ManifestError, match=r"no schema for dataset 'nope'; known datasets: \['fitzpatrick17k', "
                                            r"'isic2020', 'mama_mia', 'oct_glaucoma', 'rectal_mri', 'site_ds'\]"):
        load_schema("nope")
    monkeypatch.delenv("FAIRMONAI_MANIFESTS")
    assert load_schema("oct_glaucoma").id_column == shipped["id_column"]


def test_check_bundle_names_the_path_and_the_option(tmp_path, monkeypatch):
    from fairmonai.experiments.runs import BundleNotFound, check_bundle

    assert check_bundle(REPO / "bundles" / "oct_glaucoma_fami") == REPO / "bundles" / "oct_glaucoma_fami"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BundleNotFound) as err:
        check_bundle("bundles/oct_glaucoma_fami")
    assert str(err.value) == (f"bundle folder {tmp_path / 'bundles' / 'oct_glaucoma_fami'} does not exist "
                              "('bundles/oct_glaucoma_fami' taken from the current directory); pass the bundle's "
                              "folder with --bundle")
    (tmp_path / "b" / "configs").mkdir(parents=True)
    with pytest.raises(BundleNotFound) as err:
        check_bundle(tmp_path / "b", option="bundle=")
    assert str(err.value) == (f"{tmp_path / 'b'} is not a bundle folder: it has no configs/metadata.json; pass the "
                              "bundle's folder with bundle=")
    monkeypatch.chdir(REPO)
    assert check_bundle("bundles/mama_mia_fairmedseg") == REPO / "bundles" / "mama_mia_fairmedseg"


def test_commands_refuse_a_missing_bundle_before_any_work(tmp_path, monkeypatch, capsys):
    from fairmonai.experiments.__main__ import main

    monkeypatch.chdir(tmp_path)  # outside the repository: a relative bundle path is taken from here
    assert main(["run", "bundles/oct_glaucoma_fami", "demo", "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err
    assert ("bundle folder " + str(tmp_path / "bundles" / "oct_glaucoma_fami") + " does not exist "
            "('bundles/oct_glaucoma_fami' taken from the current directory)") in err
    assert "pass the bundle's folder with the bundle argument" in err
    assert main(["list", str(tmp_path)]) == 2
    assert f"{tmp_path} is not a bundle folder: it has no configs/metadata.json" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written
