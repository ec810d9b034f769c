"""Publishing basics: licence, citation, changelog, typing marker and version agree."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import routesim
from routesim.cli import main

ROOT = Path(__file__).parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]


def test_license_file_matches_pyproject():
    assert PROJECT["license"] == "BSD-3-Clause" and PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("BSD 3-Clause License\n")
    assert "the routesim developers" in text.splitlines()[2]
    # the three clauses of the SPDX BSD-3-Clause text
    assert len(re.findall(r"^[123]\. ", text, re.M)) == 3
    assert "Neither the name of the copyright holder" in text


def test_version_has_one_source():
    assert "version" in PROJECT["dynamic"] and "version" not in PROJECT
    attr = PYPROJECT["tool"]["setuptools"]["dynamic"]["version"]["attr"]
    module, name = attr.rsplit(".", 1)
    assert getattr(__import__(module, fromlist=[name]), name) == routesim.__version__
    assert re.fullmatch(r"\d+\.\d+\.\d+", routesim.__version__)


def test_version_flag(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"routesim {routesim.__version__}\n"


def test_version_flag_through_python_m():
    proc = subprocess.run([sys.executable, "-m", "routesim", "--version"],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout == f"routesim {routesim.__version__}\n"


def test_typing_marker_ships():
    assert (ROOT / "routesim" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["routesim"]
    assert PYPROJECT["tool"]["mypy"]["files"] == ["routesim"]


def test_citation_file_is_valid_cff():
    yaml = pytest.importorskip("yaml")
    text = (ROOT / "CITATION.cff").read_text()
    cff = yaml.safe_load(text)
    # the keys CFF 1.2.0 requires, and the ones that must agree with the package
    assert cff["cff-version"] == "1.2.0"
    assert cff["message"] and cff["title"].startswith("routesim")
    assert cff["authors"] and all("name" in a or "family-names" in a for a in cff["authors"])
    assert str(cff["version"]) == routesim.__version__
    assert cff["license"] == PROJECT["license"]
    try:
        from cffconvert import Citation
    except ImportError:
        return
    Citation(text).validate()  # the full CFF 1.2.0 schema; raises when invalid


def test_changelog_keeps_a_changelog():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n") and "keepachangelog.com" in text
    versions = re.findall(r"^## \[([^\]]+)\]", text, re.M)
    assert versions[0] == "Unreleased" and routesim.__version__ in versions
    kinds = set(re.findall(r"^### (.+)$", text, re.M))
    assert kinds <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}
    unreleased = text.split("## [Unreleased]", 1)[1].split("\n## [", 1)[0]
    assert "### Added" in unreleased and "### Changed" in unreleased


def test_readme_points_to_docs_license_and_citation():
    text = (ROOT / "README.md").read_text()
    for needle in ("make docs", "routesim --version", "LICENSE", "CITATION.cff"):
        assert needle in text, needle
