"""Quality screening that predicts the gate on prompts the search never saw.

The gate holds every video to the floor, so what a search must predict is the *worst* video —
and not of the prompts it tuned on, but of unseen ones (the validation split, then a server's
prompts). One prompt's PSNR does not predict that: on sol-tiny-wan the worst of three prompts
fell 8–9 dB below the screened one, and a setting that passed at 34.9 dB on the workload's
prompts gave 26.5 dB on held-out ones.

Model: a candidate's per-video PSNR over prompts and seeds is spread around its median. With
``n`` videos seen (median ``m``, lower spread ``s``), the worst of ``k`` unseen videos is, with
probability ``CONFIDENCE``, above

    m - t(n-1, q) * s * sqrt(1 + 1/n),   q = CONFIDENCE ** (1/k)

(a one-sided Student-t prediction bound for each of the ``k`` videos). The gap
between the observed worst and this bound is the margin the search keeps; it is measured from
the spread, so a method whose errors depend on the prompt keeps a wider one.

The spread is the *lower* one: only the videos below the median count (``s**2 = 2 * sum((x - m)**2
for x < m) / (n - 1)``, which is the usual variance for a symmetric spread, and exactly the sample
variance for two videos). The bound is about the worst video, and a video that comes out nearly
exact (60-80 dB, a cache that never fired on that prompt) says nothing about it. With the full
two-sided spread, such a video *lowered* the bound: FirstBlockCache 0.05 with one exact video out
of eight was predicted 22 dB for a worst held-out video of 48 dB
(``benchmarks/screen_calibration.py``).

The confidence grows with the evidence. A candidate seen on part of the search split (the cheap
screens of 2 and 4 videos) is kept while its bound at ``EARLY_CONFIDENCE`` clears the floor: those
stages only decide which of the fastest candidates earn more videos (successive halving keeps a
fixed number at each stage, so a lenient filter costs few videos), and the whole split, the held-out
split and the gate still judge it. On the whole split the bound holds ``CONFIDENCE``.

Both were chosen on measurements (``benchmarks/screen_calibration.py``, 44 cache candidates of
sol-tiny-wan, each generated on all 8 videos of both splits):

- the bound holds about its nominal level on videos like the seen ones: leaving videos of the
  search split out and predicting the worst of them from the rest, the 80% bound covered 76% (2
  videos seen) and 84% (4 seen) of the cases, the 65% one 69% and 72%;
- in the funnel's replay, at 50% early and 80% on the whole split, every setting predicted faster
  than 1.84x was dropped, though one at 2.12x kept 30 dB on both splits (33.1 dB worst on the search
  split, 39.5 dB held out; its whole-split bound at 80% is 28.4 dB). At 20% early and 65% on the
  whole split the funnel reaches it, with 122 videos instead of 128 (successive halving extends
  only the fastest, as many as `make demo`'s effort keeps), and none of its finalists fails the
  gate on either split.

So the whole split's bound is a 65% one (about 70% measured): the screen picks finalists, and the
held-out split's gate, exact on every video, decides; a finalist that fails it is replaced by the
next (``Integrator._validate``).

The other checks of the gate (SSIM per video, the flicker drop over the workload) are applied to
the videos seen, with the same formulas as :func:`sol.quality.gate.gate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# The chance that every unseen video clears the floor (measured: about 70%; module docstring).
CONFIDENCE = 0.65
EARLY_CONFIDENCE = 0.2  # the same, for a candidate seen on part of the search split (a filter)
PSNR_CAP = 80.0  # dB: an exact video (inf) counts as this when averaging
MIN_OWN = 6  # videos from which a candidate's own spread is trusted beside the pooled one
POOL_BAND = 8.0  # dB below the floor beyond which a candidate's spread is not pooled


def t_quantile(q: float, df: int) -> float:
    """Student-t quantile (Hill's approximation; exact enough for a margin, no scipy).

    >>> round(t_quantile(0.975, 1000), 2)
    1.96
    """
    z = _norm_ppf(q)
    if df <= 0:
        return math.inf
    if df >= 1000:
        return z
    # Cornish-Fisher expansion of the t quantile in terms of the normal one.
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def _norm_ppf(p: float) -> float:
    """Inverse of the standard normal CDF (Acklam's rational approximation, |error| < 1.2e-9)."""
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)  # fmt: skip
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)  # fmt: skip
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)  # fmt: skip
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    lo = 0.02425
    if p < lo:
        q = math.sqrt(-2 * math.log(p))
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
            (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1
        )
    if p > 1 - lo:
        return -_norm_ppf(1 - p)
    q = p - 0.5
    r = q * q
    return (
        (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5])
        * q
        / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    )


def lower_deviations(psnrs: list[float]) -> tuple[float, list[float], int]:
    """(median, the deviations of the videos below it, degrees of freedom ``n - 1``).

    ``2 * sum(d**2) / df`` estimates the variance from the lower half (module docstring).

    >>> lower_deviations([30.0, 34.0, 80.0])
    (34.0, [-4.0], 2)
    """
    m = float(np.median(psnrs))
    return m, [x - m for x in psnrs if x < m], len(psnrs) - 1


def lower_spread(groups: list[tuple[list[float], int]]) -> tuple[float, int]:
    """(spread, degrees of freedom) from one or more ``(lower deviations, df)`` groups."""
    df = sum(d for _low, d in groups)
    return math.sqrt(2 * sum(x * x for low, _d in groups for x in low) / df), df


def _psnrs(result) -> list[float]:
    out = []
    for v in result.fidelity.get("videos", []):
        p = float(v.get("psnr", math.nan))
        if not math.isnan(p):
            out.append(min(p, PSNR_CAP))
    return out


@dataclass
class Screen:
    """Predicts the gate for candidates of one search; pools the PSNR spread over what it saw.

    >>> sc = Screen(min_psnr=30.0, unseen=8)
    >>> sc.judge(result)["passes"]  # doctest: +SKIP
    """

    min_psnr: float
    unseen: int = 8
    min_ssim: float | None = None
    max_flicker_drop: float | None = None
    confidence: float = CONFIDENCE
    predictive: bool = True  # False: judge only the videos seen (the gate on a split it runs on)
    full_videos: int | None = None  # the search split's size; fewer videos seen: early_confidence
    early_confidence: float = EARLY_CONFIDENCE
    _pool: dict[str, tuple[list[float], int]] = field(default_factory=dict)  # label -> lower deviations, df

    @classmethod
    def for_budget(cls, budget, unseen: int) -> Screen:
        """A screen holding ``budget`` (a ``QualityBudget`` or a dict with ``min_psnr``)."""
        get = budget.get if isinstance(budget, dict) else lambda k, d=None: getattr(budget, k, d)
        return cls(
            min_psnr=float(get("min_psnr", 30.0)),
            unseen=max(1, unseen),
            min_ssim=get("min_ssim", None),
            max_flicker_drop=get("max_flicker_drop", None),
        )

    def observe(self, result) -> None:
        """Pool ``result``'s per-video deviations below its own median (its latest, largest set only).

        Only candidates near the decision are pooled (worst video within ``POOL_BAND`` dB below the
        floor or above it): a setting that wrecks one video by 20 dB says little about the spread of
        one that lands just above the floor, and would make every cheap screen needlessly strict."""
        p = _psnrs(result)
        if len(p) < 2 or all(x >= PSNR_CAP for x in p) or min(p) < self.min_psnr - POOL_BAND:
            return
        _m, low, df = lower_deviations(p)
        self._pool[result.label] = (low, df)

    @property
    def pooled(self) -> tuple[float, int] | None:
        """(pooled lower spread, its degrees of freedom), or None before two candidates' worth of videos."""
        groups = list(self._pool.values())
        if sum(d for _low, d in groups) < 3:
            return None
        return lower_spread(groups)

    def predicted_worst(self, result) -> tuple[float, float]:
        """(predicted worst PSNR over ``unseen`` new videos, the spread it used)."""
        p = _psnrs(result)
        if not p:
            return (math.nan, math.nan)
        if all(x >= PSNR_CAP for x in p):
            return (math.inf, 0.0)  # exact on every video seen: it changes no number anywhere
        if not self.predictive:
            return (min(p), 0.0)
        n, pooled = len(p), self.pooled
        m, low, own_df = lower_deviations(p)
        if n >= MIN_OWN or (pooled is None and n >= 2):
            spread, df = lower_spread([(low, own_df)])
        elif pooled is not None:
            spread, df = pooled
        else:
            return (min(p), 0.0)  # one video and nothing pooled yet: only what was seen
        early = self.full_videos is not None and n < self.full_videos
        q = (min(self.confidence, self.early_confidence) if early else self.confidence) ** (1.0 / self.unseen)
        bound = m - t_quantile(q, df) * spread * math.sqrt(1 + 1 / n)
        return (min(bound, min(p)), spread)

    def judge(self, result) -> dict:
        """The predicted gate verdict: ``passes``, ``predicted_worst``, ``margin`` (observed worst
        minus the prediction), and the checks that fail on the videos seen."""
        if not result.ok:
            return {"passes": False, "failed": [result.reason or "failed"]}
        worst, spread = self.predicted_worst(result)
        fid = result.fidelity
        failed = []
        if not worst >= self.min_psnr:
            what = "predicted worst unseen video" if self.predictive else "worst video"
            failed.append(f"{what} {worst:.1f} dB < {self.min_psnr:g}")
        if self.min_ssim is not None and float(fid.get("ssim_min", 1.0)) < self.min_ssim:
            failed.append(f"ssim {float(fid['ssim_min']):.3f} < {self.min_ssim:g}")
        if self.max_flicker_drop is not None and fid.get("flicker_ref"):
            fb, fc = float(fid["flicker_ref"]), float(fid["flicker"])
            drop = (fb - fc) / abs(fb) if fb else 0.0
            if drop > self.max_flicker_drop:
                failed.append(f"flicker drop {drop:.4f} > {self.max_flicker_drop:g}")
        seen_worst = result.psnr
        return {
            "passes": not failed,
            "predicted_worst": worst,
            "observed_worst": seen_worst,
            "margin": (seen_worst - worst) if math.isfinite(worst) and math.isfinite(seen_worst) else 0.0,
            "spread": spread,
            "videos": len(_psnrs(result)),
            "unseen": self.unseen,
            "failed": failed,
        }
