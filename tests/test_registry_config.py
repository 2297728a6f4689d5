"""Registries reject duplicates and unknown ids; configs become frozen dataclasses with typed fields."""

from __future__ import annotations

import dataclasses

import pytest

from privbench.attacks import ATTACKS
from privbench.core.errors import InputError
from privbench.core.registry import Registry
from privbench.defenses import DEFENSES
from privbench.run.config import load_suite
from tests.conftest import write_suite


def test_duplicate_id_raises() -> None:
    reg: Registry[type] = Registry("thing")
    reg.register("a-b")(type("A", (), {}))
    with pytest.raises(KeyError, match="duplicate"):
        reg.register("a-b")(type("B", (), {}))
    with pytest.raises(ValueError, match="lowercase"):
        reg.register("Bad_Id")


def test_builtin_duplicate_raises() -> None:
    with pytest.raises(KeyError, match="duplicate defense id 'blur'"):
        DEFENSES.register("blur")(type("X", (), {}))


def test_unknown_id_lists_known() -> None:
    with pytest.raises(InputError, match="registered: .*blur"):
        DEFENSES.get("blurr")


def test_suite_expands_sweeps_into_frozen_params(tiny_suite) -> None:
    suite = load_suite(tiny_suite)
    labels = [d.label for d in suite.defenses]
    assert [d.id for d in suite.defenses] == ["none", "blur", "blur", "noise"]
    assert len(set(labels)) == 4
    with pytest.raises(dataclasses.FrozenInstanceError):
        suite.defenses[1].params.sigma = 3.0  # type: ignore[misc]
    assert suite.defenses[1].params.sigma == 1.0 and isinstance(suite.defenses[1].params.sigma, float)


@pytest.mark.parametrize("body,match", [
    ("defenses: [{id: blurr}]", r"defenses\[0\]\.id: unknown defense id 'blurr'"),
    ("defenses: [{id: blur, params: {sigma: strong}}]", r"defenses\[0\]\.params\.sigma: expected a number"),
    ("defenses: [{id: pixelate, params: {block: 2.5}}]", r"params\.block: expected an integer"),
    ("defenses: [{id: blur, params: {sigma: -1}}]", r"sigma must be > 0"),
    ("defenses: [{id: blur, params: {radius: 2}}]", r"unknown field\(s\) radius"),
])
def test_bad_suite_fields_are_named(tmp_path, body: str, match: str) -> None:
    path = write_suite(tmp_path / "bad.yaml", f"datasets: [digits]\nattacks: [linkage]\n{body}\n")
    with pytest.raises(InputError, match=match):
        load_suite(path)


def test_unknown_dataset_and_attack(tmp_path) -> None:
    path = write_suite(tmp_path / "a.yaml", "datasets: [digitz]\ndefenses: [none]\nattacks: [linkage]\n")
    with pytest.raises(InputError, match=r"datasets\[0\]: unknown dataset id 'digitz'"):
        load_suite(path)
    path = write_suite(tmp_path / "b.yaml", "datasets: [digits]\ndefenses: [none]\nattacks: [dlgx]\n")
    with pytest.raises(InputError, match=r"attacks\[0\]\.id: unknown attack id"):
        load_suite(path)


def test_every_plugin_has_typed_params_and_declarations() -> None:
    for _, cls in DEFENSES.items():
        assert dataclasses.is_dataclass(cls.Params) and cls.Params.__dataclass_params__.frozen
        assert cls.surfaces
    for _, cls in ATTACKS.items():
        assert dataclasses.is_dataclass(cls.Params) and cls.Params.__dataclass_params__.frozen
        assert cls.requirements() != "-" and cls.access


def test_attacks_can_be_restricted_to_defenses(tmp_path) -> None:
    from privbench.run.plan import plan

    suite = load_suite(write_suite(tmp_path / "s.yaml", """
name: s
datasets: [digits]
defenses: [none, blur]
attacks:
  - id: linkage
  - id: nearest-neighbour
    defenses: [blur]
"""))
    cells = {(j.defense.id, a.id) for j in plan(suite) for a in j.attacks}
    assert cells == {("none", "linkage"), ("blur", "linkage"), ("blur", "nearest-neighbour")}
    bad = write_suite(tmp_path / "bad.yaml", """
name: bad
datasets: [digits]
defenses: [none]
attacks:
  - id: linkage
    defenses: [blur]
""")
    with pytest.raises(InputError, match="restricted to defense 'blur'"):
        load_suite(bad)
