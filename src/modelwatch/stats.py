"""The statistics behind a verdict: pure functions on counts, one per measure.

The question for each model and resource is a 2x2 table of the window's judged predictions: slow or
normal, at a saturated sample or at a sample below the threshold. ``a``/``b`` are slow/normal predictions
at saturation, ``c``/``d`` slow/normal ones below it. scipy is imported only when a test runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

#: The test behind every ``p_value``, for reasons and documents.
TEST_NAME = "Fisher's exact test, one-sided"


def relative_risk(a: int, b: int, c: int, d: int) -> float:
    """Relative risk of being slow when saturated: ``(a / (a + b)) / (c / (c + d))``, for ``a`` slow and
    ``b`` normal predictions at saturation and ``c`` slow and ``d`` normal ones sampled without it.

    When no slow prediction fell below the threshold (``c == 0``, a clean incident), 0.5 is added to every
    cell (the Haldane-Anscombe correction), so the answer is a large finite number rather than infinity.
    NaN when either group is empty: without saturated and unsaturated predictions there is nothing to
    compare, or when no slow prediction had a sample (0 / 0). Unlike the lift ``P(saturated | slow) / P(saturated | normal)``, it does not collapse when
    the saturated span holds much of the window's traffic.
    """
    if a + b == 0 or c + d == 0 or a + c == 0:
        return float("nan")
    if c == 0:
        a, b, c, d = a + 0.5, b + 0.5, c + 0.5, d + 0.5
    return float((a / (a + b)) / (c / (c + d)))


def fisher_greater(a: int, b: int, c: int, d: int) -> float:
    """One-sided Fisher's exact test p-value that slowness is more likely at saturation than without it
    (table ``[[a, b], [c, d]]``, rows saturated/unsaturated, columns slow/normal).

    Exact for any counts: no large-sample approximation, so 3 slow predictions are judged as fairly as
    3,000. NaN when either row is empty.
    """
    if a + b == 0 or c + d == 0:
        return float("nan")
    from scipy.stats import fisher_exact

    return float(fisher_exact([[a, b], [c, d]], alternative="greater").pvalue)


def holm(p_values: dict[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1); NaN entries are left out.

    Several resources are tested per model; without a correction, six tests at 1 % would call some
    resource significant by chance far more often than 1 % of the time.
    """
    tested = sorted(((p, k) for k, p in p_values.items() if not math.isnan(p)), key=lambda t: (t[0], t[1]))
    m, running, out = len(tested), 0.0, {}
    for i, (p, k) in enumerate(tested):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


#: The test behind a quality metric's ``p_value``.
MANN_WHITNEY = "Mann-Whitney U, one-sided"


def mann_whitney_worse(window: Sequence[float], reference: Sequence[float], *, worse: str) -> float:
    """One-sided Mann-Whitney U p-value that the window's values are stochastically worse than the
    reference's: ``worse="lower"`` (accuracy) or ``"higher"`` (loss).

    A rank test: no assumption of normality, so per-prediction correctness (0/1, many ties) and a model's
    continuous scores are judged alike; it assumes independent predictions. scipy picks the exact
    distribution for small samples without ties and the tie-corrected normal approximation otherwise.
    NaN when either sample is empty.
    """
    if len(window) == 0 or len(reference) == 0:
        return float("nan")
    from scipy.stats import mannwhitneyu

    alternative = "less" if worse == "lower" else "greater"
    return float(mannwhitneyu(window, reference, alternative=alternative, method="auto").pvalue)


#: The tests behind a drift statistic's ``p_value``.
KS_TEST = "two-sample Kolmogorov-Smirnov"
CHI_SQUARE = "chi-square test of homogeneity"


def psi(window_shares: Sequence[float], reference_shares: Sequence[float], floor: float = 1e-4) -> float:
    """Population stability index ``sum((w - r) * ln(w / r))`` over matching bins or categories.

    An empty bin gets ``floor`` (else one empty bin makes the index infinite). Rules of thumb: below 0.1
    stable, 0.1-0.25 moderate, above 0.25 a large shift.
    """
    total = 0.0
    for w, r in zip(window_shares, reference_shares, strict=True):
        w, r = max(w, floor), max(r, floor)
        total += (w - r) * math.log(w / r)
    return total


def ks_two_sample(window: Sequence[float], reference: Sequence[float]) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value (any difference in distribution; exact for small
    samples, asymptotic for large). Assumes independent observations of a continuous value; NaN, NaN when
    either sample is empty."""
    if len(window) == 0 or len(reference) == 0:
        return float("nan"), float("nan")
    from scipy.stats import ks_2samp

    result = ks_2samp(window, reference, method="auto")
    return float(result.statistic), float(result.pvalue)


def chi_square_homogeneity(window_counts: Sequence[int], reference_counts: Sequence[int]) -> tuple[float, float]:
    """Chi-square test that two samples of a category share one distribution (a 2 x k table). Categories
    seen in neither are dropped; NaN, NaN when fewer than two categories remain. Its approximation needs
    expected counts of about 5 or more per cell: with fewer, read the p-value as a rough guide."""
    pairs = [(w, r) for w, r in zip(window_counts, reference_counts, strict=True) if w + r > 0]
    if len(pairs) < 2 or sum(w for w, _ in pairs) == 0 or sum(r for _, r in pairs) == 0:
        return float("nan"), float("nan")
    from scipy.stats import chi2_contingency

    result = chi2_contingency([[w for w, _ in pairs], [r for _, r in pairs]])
    return float(result.statistic), float(result.pvalue)
