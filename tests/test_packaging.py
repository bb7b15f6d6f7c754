"""What `pip install .` ships: every Python package of the tree is listed in pyproject.toml
(setuptools is given an explicit list, so a new subpackage left out would be missing from a
non-editable install while every test, run from the checkout, still passes)."""
import tomllib

from tests.conftest import ROOT


def test_every_package_is_listed():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for top in ("compiler", "reconciler", "schemas", "templates")
             for p in (ROOT / top).rglob("__init__.py")}
    assert found <= listed, f"missing from pyproject.toml: {sorted(found - listed)}"


def test_templates_ship_as_package_data():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = {p.name for p in (ROOT / "templates").iterdir() if p.suffix == ".j2"}
    assert shipped and data["templates"] == ["*.j2"]
