"""Membership-inference scores: AUC, balanced accuracy, TPR at fixed low FPR (Carlini et al., S&P 2022)."""

from __future__ import annotations

from typing import Optional

import numpy as np
from torch import Tensor

#: A TPR at FPR level α is reported only when α·(non-members) reaches this many false positives; below that the
#: threshold sits on the few highest non-member scores and the value is effectively TPR at FPR 0.
MIN_FALSE_POSITIVES = 10


def membership_scores(scores: Tensor, is_member: Tensor) -> dict[str, Optional[float]]:
    """``scores (M,)`` higher = more likely member; ``is_member (M,)`` bool ground truth.

    Returns ``auc``, ``balanced_accuracy``, ``smallest_resolvable_fpr`` (``MIN_FALSE_POSITIVES / non-members``) and
    ``tpr_at_1pct_fpr`` / ``tpr_at_0.1pct_fpr``, each ``None`` when its FPR is below the resolvable one.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    s = scores.double().numpy()
    m = is_member.numpy().astype(bool)
    if m.all() or (~m).all():
        raise ValueError("membership ground truth needs both members and non-members")
    fpr, tpr, _ = roc_curve(m, s)
    out = {"auc": float(roc_auc_score(m, s)),
           "balanced_accuracy": float(np.max(0.5 * (tpr + 1 - fpr)))}
    smallest = MIN_FALSE_POSITIVES / int((~m).sum())
    out["smallest_resolvable_fpr"] = smallest
    for level, name in ((0.01, "tpr_at_1pct_fpr"), (0.001, "tpr_at_0.1pct_fpr")):
        ok = fpr <= level
        out[name] = (float(tpr[ok].max()) if ok.any() else 0.0) if level >= smallest else None
    return out
