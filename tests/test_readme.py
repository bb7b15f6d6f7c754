"""The README is the user's reference: it must name every finding code the validator can emit."""
from compiler import parse
from compiler.validate import schema
from compiler.validate.framework import ANALYZERS
from tests.conftest import ROOT


def test_every_code_is_documented():
    readme = (ROOT / "README.md").read_text()
    codes = {a.code for a in ANALYZERS} | {schema.CODE} | {
        value for name, value in vars(parse).items() if name.startswith("CODE_")}
    missing = sorted(code for code in codes if f"| {code} |" not in readme)
    assert not missing, f"README's findings table lacks {missing}"
