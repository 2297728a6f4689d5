"""Positive controls (issue 25): every attack names a defense it must break (``defenses/controls.py`` or a plain
reference), the runner pairs a control only with its attacks, the competence gate requires every control run to
be passed, and each attack family does break its control, run through the real runner and central scoring.

The fast cases run on small mnist5k splits; the heavier families (learned inpainting, LiRA, the GAN attack,
gradient inversion, malicious training code, split-model inversion, clip re-identification) are marked slow.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from privbench.core.errors import InputError
from privbench.core.records import iter_records
from privbench.core.registry import ATTACKS, DEFENSES
from privbench.core.specs import PluginSpec
from privbench.report.intervals import competence
from privbench.run.config import load_suite
from privbench.run.plan import plan
from privbench.run.plugins import load_plugins
from privbench.run.runner import run_suite
from privbench.run.worker import RunOptions, control_bar
from tests.conftest import write_suite


def _run(tmp_path: Path, body: str, plugins: tuple[str, ...] = ()) -> dict[tuple[str, str], list[dict]]:
    """Run a suite; ``(defense id, attack id) -> [record, ...]`` over seeds (every cell must be ok or skipped)."""
    if plugins:
        load_plugins(plugins)
    suite = load_suite(write_suite(tmp_path / "controls.yaml", body))
    run_suite(suite, RunOptions(out=tmp_path / "out", jobs=1, progress=False, use_lpips=False, plugins=plugins))
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for _, r in iter_records(tmp_path / "out" / "records"):
        if r["status"] == "skipped":  # e.g. an inpainting attack on a release without a mask
            continue
        assert r["status"] == "ok", (r["cell_id"], r.get("reason"))
        cells[(r["defense"]["id"], r["attack"]["id"])].append(r)
    return cells


def _advantage(records: list[dict]) -> float:
    return float(np.mean([r["metrics"]["calibrated"]["advantage"] for r in records]))


def _assert_controls_passed(cells: dict[tuple[str, str], list[dict]]) -> None:
    """Every cell marked as a positive control reaches its bar (the CI's lower bound, as the gate judges it)."""
    marked = [(k, rs) for k, rs in cells.items() if rs[0]["attack"].get("control_bar") is not None]
    assert marked, "no positive-control cell was run"
    for (defense, attack), records in marked:
        bar = records[0]["attack"]["control_bar"]
        for r in records:
            cal = r["metrics"]["calibrated"]
            assert cal["advantage"] - 1.96 * cal["se"] >= bar, (defense, attack, cal, bar)


def test_every_attack_names_registered_positive_controls() -> None:
    for attack_id, cls in ATTACKS.items():
        assert cls.positive_controls, f"{attack_id} names no positive control"
        for defense_id, bar in cls.positive_controls.items():
            assert defense_id in DEFENSES, (attack_id, defense_id)
            assert 0.0 < bar <= 1.0, (attack_id, defense_id, bar)
    controls = {d for d, cls in DEFENSES.items() if cls.control}
    named = {d for _, cls in ATTACKS.items() for d in cls.positive_controls}
    assert controls <= named, f"controls no attack uses: {sorted(controls - named)}"


def test_a_control_is_paired_only_with_the_attacks_it_controls(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path / "s.yaml", """
        name: pairs
        datasets: [digits]
        seeds: [0]
        splits: {private: 100, aux: 100, test: 100, targets: 20}
        defenses: [none, secret-shift, shape-mask, blur]
        attacks: [inversion-decoder, mask-inversion, histogram-linkage]
    """))
    jobs = {j.defense.id: [a.id for a in j.attacks] for j in plan(suite)}
    assert jobs["none"] == jobs["blur"] == ["inversion-decoder", "mask-inversion", "histogram-linkage"]
    assert jobs["secret-shift"] == ["inversion-decoder"]
    assert jobs["shape-mask"] == ["mask-inversion"]
    # red team: a control that meets no attack used to vanish from the board without a word
    orphan = load_suite(write_suite(tmp_path / "o.yaml", """
        name: orphan
        datasets: [digits]
        seeds: [0]
        splits: {private: 100, aux: 100, test: 100, targets: 20}
        defenses: [none, shape-mask]
        attacks: [inversion-decoder]
    """))
    with pytest.raises(InputError, match="'shape-mask' is a positive control.*mask-inversion"):
        plan(orphan)


def test_only_a_controls_default_configuration_sets_its_bar() -> None:
    """Red team: listing a weakened control ({id: secret-shift, params: {radius: 8, quality: 5}}) made the decoder,
    linkage and the nearest-neighbour audit read "attack failed" on every row. The bar belongs to the default
    configuration only; any other configuration is an ordinary (unranked) cell."""
    decoder = ATTACKS.get("inversion-decoder")
    cls = DEFENSES.get("secret-shift")
    assert control_bar(decoder, PluginSpec("secret-shift", cls.Params())) == 0.9
    assert control_bar(decoder, PluginSpec("secret-shift", cls.Params(radius=8, quality=5))) is None
    assert control_bar(decoder, PluginSpec("shape-mask", DEFENSES.get("shape-mask").Params())) is None


def _frame(control_lo: float, reference: float = 0.99) -> pd.DataFrame:
    """Records of one attack: its advantage on the reference, and a control cell with the given CI lower bound."""
    rows = []
    for seed in range(5):
        rows.append({"dataset": "d", "attack_name": "a", "defense": "none", "reference": "none", "config": "none",
                     "role": "defense", "control_bar": np.nan, "seed": seed, "advantage": reference,
                     "advantage_se": 0.001})
        rows.append({"dataset": "d", "attack_name": "a", "defense": "secret-shift", "reference": "none",
                     "config": "secret-shift", "role": "control", "control_bar": 0.9, "seed": seed,
                     "advantage": control_lo + 0.01, "advantage_se": 0.001})
    return pd.DataFrame(rows)


def test_the_gate_requires_every_positive_control_to_be_passed() -> None:
    passed = competence(_frame(0.95))[("d", "a")]
    assert passed.competent and passed.basis == "none" and len(passed.controls) == 1
    failed = competence(_frame(0.3))[("d", "a")]
    assert failed.interval is not None and failed.interval.lo > 0  # beats its prior on the reference ...
    assert not failed.competent  # ... but not its control: a trivial gate is not competence
    # an attack that breaks its control but reads 0 on the reference (the GAN attack on a ConvNet) is competent:
    # its 0 there is a measurement
    assert competence(_frame(0.95, reference=0.0))[("d", "a")].competent
    # without a control in the records the reference rule applies
    no_control = _frame(0.95, reference=0.0)
    no_control = no_control[no_control.role != "control"]
    assert not competence(no_control)[("d", "a")].competent
    assert competence(_frame(0.95).query("role != 'control'"))[("d", "a")].competent


#: The red team's strongest release that protects nothing (issue 25): each digit moved by a secret 3-4 px (zero
#: fill), then a secret per-image gamma in [0.4, 2.5]. At a 2 px registration radius it scored observer 0.36 and
#: linker 0.36 (registered SSIM 0.44; a blind linker on the originals found every one).
SHIFT_GAMMA = """
import math
import torch
from torch.nn import functional as F
from privbench.core.registry import DEFENSES
from privbench.core.threats import ThreatModel
from privbench.defenses.base import InputDefense


@DEFENSES.register("shift-gamma-test")
class ShiftGamma(InputDefense):
    claims = frozenset({ThreatModel.OBSERVER, ThreatModel.LINKER})

    def apply(self, images, generator):
        out = torch.empty_like(images)
        for i in range(len(images)):
            while True:
                dy, dx = torch.randint(-4, 5, (2,), generator=generator).tolist()
                if max(abs(dy), abs(dx)) >= 3:
                    break
            padded = F.pad(images[i:i + 1], (4, 4, 4, 4))
            out[i] = padded[0, :, 4 - dy:4 - dy + images.shape[-2], 4 - dx:4 - dx + images.shape[-1]]
        e = torch.exp(torch.empty(len(images), 1, 1, 1).uniform_(math.log(0.4), math.log(2.5), generator=generator))
        return out.clamp(0, 1) ** e
"""

FAST = """
name: controls
datasets: [mnist5k]
seeds: [0]
splits: {private: 300, aux: 500, test: 300, targets: 300}
task: {model: convnet, width: 4, epochs: 1}
defenses: [none, secret-shift, keyed-permutation, shape-mask, sparse-holes, shifted-copies, shift-gamma-test]
attacks:  # each only against its controls (the reference's cells are covered elsewhere)
  - {id: inversion-decoder, params: {epochs: 3, width: 16},
     defenses: [secret-shift, keyed-permutation, shift-gamma-test]}
  - {id: linkage, params: {epochs: 2, width: 16}, defenses: [secret-shift, shift-gamma-test]}
  - {id: histogram-linkage, defenses: [keyed-permutation]}
  - {id: nearest-neighbour, defenses: [secret-shift, shifted-copies]}
  - {id: mask-inversion, defenses: [shape-mask]}
  - {id: inpaint-classical, params: {method: telea}, defenses: [sparse-holes]}
"""


def test_each_image_attack_breaks_its_positive_control(tmp_path: Path) -> None:
    """JPEG + a secret 2 px shift (the release that ranked above every baseline) is broken by the decoder, the
    linkage attack and the nearest-neighbour audit; a keyed permutation by the decoder's linear inverse and by
    histograms; a shape mask by mask inversion; sparse holes by classical inpainting; shifted copies by the
    audit; the red team's secret 3-4 px shift + gamma is seen through (noise at σ = 16 still scoring about 0 is the
    slow test below; uniform noise: test_zero_point)."""
    plugin = tmp_path / "shift_gamma_plugin.py"
    plugin.write_text(SHIFT_GAMMA)
    cells = _run(tmp_path, FAST, (str(plugin),))
    _assert_controls_passed(cells)
    for attack in ("inversion-decoder", "linkage", "nearest-neighbour"):
        assert _advantage(cells[("secret-shift", attack)]) >= 0.9, attack
    assert _advantage(cells[("keyed-permutation", "inversion-decoder")]) >= 0.9
    # the red team's shift + gamma release: a 4 px registration radius and rank-normalised linkage see through it
    for attack in ("inversion-decoder", "linkage"):
        assert _advantage(cells[("shift-gamma-test", attack)]) >= 0.9, attack
    # a control only meets the attacks that name it
    assert ("secret-shift", "mask-inversion") not in cells and ("shape-mask", "linkage") not in cells


@pytest.mark.slow
def test_the_shift_defense_scores_as_no_privacy_on_the_quick_settings(tmp_path: Path) -> None:
    """Issue 25's case at the quick suite's sizes and attack budgets (mnist5k, 1,000 targets): observer and linker
    leakage >= 0.9 for JPEG q100 + a secret shift <= 2 px; noise σ = 16 about 0 (see below)."""
    cells = _run(tmp_path, """
        name: shift
        datasets: [mnist5k]
        seeds: [0]
        splits: {private: 1000, aux: 1000, test: 1000, targets: 1000}
        task: {model: convnet, width: 8, epochs: 1}
        defenses: [none, secret-shift, {id: noise, params: {sigma: 16.0}}]
        attacks:
          - {id: inversion-decoder, params: {epochs: 5, width: 16}}
          - {id: linkage, params: {epochs: 4, width: 16}}
    """)
    for attack in ("inversion-decoder", "linkage"):
        assert _advantage(cells[("secret-shift", attack)]) >= 0.9, attack
    # clipping leaves noise σ = 16 a sliver of signal, which the decoder's linear inverse finds (0.03-0.05)
    assert abs(_advantage(cells[("noise", "inversion-decoder")])) <= 0.08
    assert abs(_advantage(cells[("noise", "linkage")])) <= 0.02


@pytest.mark.slow
def test_model_side_attacks_break_their_positive_controls(tmp_path: Path) -> None:
    """LiRA (shadows matched to the target's training size) on an overfit model, the GAN attack on a model that
    encodes one member per class, learned inpainting on sparse holes."""
    cells = _run(tmp_path, """
        name: model-controls
        datasets: [mnist5k]
        seeds: [0]
        splits: {private: 500, aux: 500, test: 500, targets: 500}
        task: {model: convnet, width: 16, epochs: 4}
        defenses: [none, memorizer, class-exemplar, sparse-holes]
        attacks:
          - {id: membership, params: {shadows: 4}}
          - {id: gan-attack, params: {steps: 150, batch_size: 32, per_class: 4}}
          - {id: inpaint-learned, params: {epochs: 3, width: 16}}
    """)
    _assert_controls_passed(cells)
    assert {("memorizer", "membership"), ("class-exemplar", "gan-attack"), ("sparse-holes", "inpaint-learned")} \
        <= set(cells)


@pytest.mark.slow
def test_gradient_inversion_breaks_the_plain_update(tmp_path: Path) -> None:
    """DLG and iDLG on the plain update of one image, on the DLG paper's LeNet (the gradients suite's model)."""
    cells = _run(tmp_path, """
        name: gradient-controls
        datasets: [mnist5k]
        seeds: [0]
        splits: {private: 300, aux: 300, test: 300, targets: 100}
        task: {model: lenet-dlg, width: 12, epochs: 1, batch_size: 64, lr: 0.003}
        defenses: [none]
        attacks:
          - {id: gradient-dlg, params: {targets: 4, steps: 200}}
          - {id: gradient-idlg, params: {targets: 4, steps: 200}}
    """)
    assert {("none", "gradient-dlg"), ("none", "gradient-idlg")} <= set(cells)
    _assert_controls_passed(cells)


@pytest.mark.slow
def test_training_code_and_split_inversion_break_their_positive_controls(tmp_path: Path) -> None:
    """Malicious training code under plain training, and optimisation inversion of a split model trained without
    a privacy term."""
    cells = _run(tmp_path, """
        name: server-controls
        datasets: [mnist5k]
        seeds: [0]
        splits: {private: 1000, aux: 300, test: 300, targets: 100}
        task: {model: convnet, width: 32, epochs: 6}  # the synthetic suite's recipe: the code hides 8 images
        defenses: [none, split-none]
        attacks:
          - {id: memorization, params: {encoding: sign, bits: 4, images: 8}}
          - inversion-optim
    """)
    marked = {k for k, rs in cells.items() if rs[0]["attack"].get("control_bar") is not None}
    assert {("none", "memorization"), ("split-none", "inversion-optim")} <= marked
    _assert_controls_passed({k: cells[k] for k in marked})


@pytest.mark.slow
def test_clip_reidentification_breaks_the_raw_clips(tmp_path: Path) -> None:
    """The appearance re-identification attack on the raw clips of `none` (synthetic people)."""
    cells = _run(tmp_path, """
        name: reid-controls
        datasets: [synthetic-actions]
        dataset_options: {synthetic-actions: {identities: 80, clips_per_identity: 8}}
        seeds: [0]
        splits: {private: 320, aux: 160, test: 160, targets: 80, scale: fit}
        task: {model: clipnet, width: 4, epochs: 1, batch_size: 16}
        defenses: [none]
        attacks:
          - {id: reid, params: {epochs: 20, frame_stride: 2}}
    """)
    assert ("none", "reid") in cells
    _assert_controls_passed(cells)


#: The red team's release that still escapes (issue 25): a secret flip or 90° rotation per image, then a secret
#: gamma. It protects nothing (a blind linker on the originals finds every one) but costs half the utility.
DIHEDRAL_GAMMA = SHIFT_GAMMA.replace('"shift-gamma-test"', '"dihedral-gamma-test"').replace(
    "class ShiftGamma", "class DihedralGamma").replace('''        out = torch.empty_like(images)
        for i in range(len(images)):
            while True:
                dy, dx = torch.randint(-4, 5, (2,), generator=generator).tolist()
                if max(abs(dy), abs(dx)) >= 3:
                    break
            padded = F.pad(images[i:i + 1], (4, 4, 4, 4))
            out[i] = padded[0, :, 4 - dy:4 - dy + images.shape[-2], 4 - dx:4 - dx + images.shape[-1]]''', '''        out = torch.empty_like(images)
        for i, k in enumerate(torch.randint(0, 8, (len(images),), generator=generator).tolist()):
            x = images[i].transpose(-1, -2) if k >= 4 else images[i]
            out[i] = torch.rot90(x, k % 4, dims=(-2, -1))''')


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="open (docs/METHODS.md, registration): no statistic searches orientations; "
                                       "the audit issue's invariant copy search is to add them")
def test_a_secret_flip_or_rotation_with_gamma_is_seen_through(tmp_path: Path) -> None:
    plugin = tmp_path / "dihedral_gamma_plugin.py"
    plugin.write_text(DIHEDRAL_GAMMA)
    cells = _run(tmp_path, """
        name: dihedral
        datasets: [mnist5k]
        seeds: [0]
        splits: {private: 600, aux: 600, test: 400, targets: 400}
        task: {model: convnet, width: 8, epochs: 1}
        defenses: [none, dihedral-gamma-test]
        attacks:
          - {id: inversion-decoder, params: {epochs: 5, width: 16}, defenses: [dihedral-gamma-test]}
          - {id: linkage, params: {epochs: 4, width: 16}, defenses: [dihedral-gamma-test]}
    """, (str(plugin),))
    assert max(_advantage(cells[("dihedral-gamma-test", a)]) for a in ("inversion-decoder", "linkage")) >= 0.9
