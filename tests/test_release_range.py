"""A release outside [0, 1] is refused, naming the defense, instead of being silently clamped (issue 25): a
defense that releases pixels in 0..255 scored as a mild blur would. Clipping stays where it is the mechanism."""

from __future__ import annotations

import pytest
import torch

from privbench.core.errors import InputError
from privbench.defenses import DEFENSES
from privbench.defenses.base import InputDefense


class _Bytes(InputDefense):
    """Releases the images in 0..255 (a careless rescale)."""

    id = "bytes-test"

    def apply(self, images, generator):
        return images * 255


class _Smaller(InputDefense):
    id = "smaller-test"

    def apply(self, images, generator):
        return images[..., :-1]


def test_a_release_in_0_255_is_refused_naming_the_defense() -> None:
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(InputError, match=r"bytes-test: released values must lie in \[0, 1\], got \[.*, 25\d"):
        _Bytes().transform(x, torch.Generator().manual_seed(1))
    with pytest.raises(InputError, match="smaller-test: apply must return a float tensor of the input's shape"):
        _Smaller().transform(x, torch.Generator().manual_seed(1))


def test_noise_is_still_clipped_as_its_mechanism_and_in_range_defenses_pass() -> None:
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    noise = DEFENSES.get("noise")(DEFENSES.get("noise").Params(sigma=0.5))
    out = noise.transform(x, torch.Generator().manual_seed(1))
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0  # clipped: part of the defense
    blur = DEFENSES.get("blur")(DEFENSES.get("blur").Params(sigma=1.0))
    assert 0.0 <= float(blur.transform(x, torch.Generator().manual_seed(1)).min())
