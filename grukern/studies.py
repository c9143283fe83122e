"""The statistics behind the notebooks' answers (notebooks/), kept here so that tests can feed
them measurements, steady, noisy and contradictory ones.

Every answer is computed from repeated measurements: medians, their spread, and fits reported
with their quality. An answer is stated only when the data support it; otherwise it says the
result is inconclusive, and why.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Repeats at one size that disagree by more than this ((max - min) / median) are too noisy to
# fit: the machine was busy, or the size is too small to time.
NOISY = 0.25
# A fit explains less than this share of the variance: the model does not describe the data.
MIN_R2 = 0.95
# Exponents within this distance of 1 count as linear.
LINEAR = 0.1


@dataclasses.dataclass(frozen=True)
class Fit:
    """A least-squares line y = intercept + slope·x through the medians of repeats, with its
    quality: r2, the 95% interval of the slope (low, high), and the largest spread of the
    repeats at one x ((max - min) / median)."""

    intercept: float
    slope: float
    low: float
    high: float
    r2: float
    spread: float


def fit_line(x, repeats, *, log: bool) -> Fit:
    """Fit the medians of `repeats` (n, k: k measurements at each of n values of x) against x:
    in log-log space when log (slope = exponent of a power law), else as they are."""
    x = np.asarray(x, dtype=float)
    repeats = np.asarray(repeats, dtype=float)
    if x.ndim != 1 or repeats.shape[0] != x.size or x.size < 3:
        raise ValueError(
            f"need x (n,) and repeats (n, k) with n >= 3, got {x.shape} and {repeats.shape}"
        )
    medians = np.median(repeats, axis=1)
    spread = float(np.max((repeats.max(axis=1) - repeats.min(axis=1)) / medians))
    u, v = (np.log(x), np.log(medians)) if log else (x, medians)
    (slope, intercept), residuals, *_ = np.polyfit(u, v, 1, full=True)
    total = float(np.sum((v - v.mean()) ** 2))
    r2 = 1 - float(residuals[0]) / total if residuals.size and total > 0 else 1.0
    n = x.size
    sigma2 = float(residuals[0]) / (n - 2) if residuals.size and n > 2 else 0.0
    stderr = np.sqrt(sigma2 / np.sum((u - u.mean()) ** 2))
    half = _t95(n - 2) * stderr
    return Fit(float(intercept), float(slope), float(slope - half), float(slope + half), r2, spread)


def growth(name: str, x, repeats) -> str:
    """How the time grows with `name` (a power law fitted to the medians), or why the data
    cannot say: repeats that disagree, a poor fit, or an interval too wide to decide."""
    fit = fit_line(x, repeats, log=True)
    trouble = _trouble(name, fit)
    if trouble:
        return trouble
    described = (
        f"the time grows as {name}^{fit.slope:.2f} (95% interval {fit.low:.2f} to "
        f"{fit.high:.2f}, R² = {fit.r2:.3f})"
    )
    if fit.high < 1 - LINEAR:
        return f"{described}: sublinearly in {name}"
    if fit.low > 1 + LINEAR:
        return f"{described}: faster than linearly in {name}"
    if fit.low >= 1 - LINEAR and fit.high <= 1 + LINEAR:
        return f"{described}: linearly in {name}"
    return f"{described}; the interval is too wide to say whether that is linear"


def cost_per_step(name: str, x, repeats) -> str:
    """The time as a fixed cost plus a cost per unit of `name` (a line fitted to the medians),
    or why the data cannot say."""
    fit = fit_line(x, repeats, log=False)
    trouble = _trouble(name, fit)
    if trouble:
        return trouble
    if fit.low <= 0:
        return (
            f"inconclusive for {name}: the time does not measurably grow with {name} (slope "
            f"{1e6 * fit.slope:.3g} µs, 95% interval from {1e6 * fit.low:.3g} µs)"
        )
    return (
        f"the time is {1e3 * fit.intercept:.3g} ms plus {1e6 * fit.slope:.3g} µs per unit of "
        f"{name} (95% interval {1e6 * fit.low:.3g} to {1e6 * fit.high:.3g} µs, R² = "
        f"{fit.r2:.3f}): linear in {name}"
    )


def tape_memory(measured, formula, reported) -> str:
    """Whether the memory tapes hold matches their formula: measured (bytes each tape kept,
    counted with what the buffer cache lent it), formula and reported (tape.nbytes), one per
    case."""
    measured, formula, reported = (
        np.asarray(a, dtype=float) for a in (measured, formula, reported)
    )
    extra = measured - formula
    if np.any(extra < 0):
        return (
            f"inconclusive: {int(np.sum(extra < 0))} of {extra.size} cases measured less than "
            "the formula, so the measurement missed memory the tape holds"
        )
    large = formula >= 1e6
    relative = float(np.max(extra[large] / formula[large])) if large.any() else float("nan")
    exact = bool(np.all(reported == formula))
    return (
        f"every tape holds its formula plus {extra.min() / 1024:.1f} to {extra.max() / 1024:.1f} "
        f"KiB of small objects ({extra.size} cases; at most {100 * relative:.2f}% more for the "
        f"{int(large.sum())} tapes of 1 MB or more), and tape.nbytes "
        + ("equals the formula in every case" if exact else "differs from the formula")
    )


def against_peer(peer: str, ratios_by_size: dict[str, list[float]]) -> str:
    """How numba compares with a peer over repeated runs: ratios_by_size maps each size to the
    peer's time over numba's in each run (> 1: numba is faster). A size counts as won or lost
    only when every run agrees; otherwise the runs disagree and the sentence says so."""
    won, lost, split = [], [], []
    for size, ratios in ratios_by_size.items():
        low, high = min(ratios), max(ratios)
        label = f"{size} ({low:.2f}x)" if low == high else f"{size} ({low:.2f}x to {high:.2f}x)"
        (won if low >= 1 else lost if high < 1 else split).append(label)
    runs = max(len(r) for r in ratios_by_size.values())
    parts = [f"against {peer} over {runs} run(s), numba is faster in every run on "
             + (", ".join(won) or "no size")]  # fmt: skip
    if lost:
        parts.append("slower in every run on " + ", ".join(lost))
    if split:
        parts.append("faster in some runs and slower in others on " + ", ".join(split))
    return "; ".join(parts)


def _trouble(name: str, fit: Fit) -> str | None:
    if fit.spread > NOISY:
        return (
            f"inconclusive for {name}: repeated measurements at one {name} disagree by up to "
            f"{fit.spread:.0%} of their median (a busy machine?)"
        )
    if fit.r2 < MIN_R2:
        return f"inconclusive for {name}: the fit explains too little (R² = {fit.r2:.2f})"
    return None


def _t95(dof: int) -> float:
    """The two-sided 95% quantile of Student's t with dof degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(0.975, dof)) if dof > 0 else float("inf")


def sharding(overheads: dict[str, dict[int, list[float]]], target: float = 1.10) -> str:
    """Which chunk sizes serve each way of running grukern.dask: overheads[setting][chunk] holds
    each run's time over one grukern.forward call's on the same data (< 1: faster). A chunk size
    meets the target when every run does; the fastest is the one of lowest median, stated only
    when its runs agree to within NOISY."""
    parts = []
    for setting, by_chunk in overheads.items():
        medians = {chunk: float(np.median(ratios)) for chunk, ratios in by_chunk.items()}
        best = min(medians, key=medians.get)
        low, high = min(by_chunk[best]), max(by_chunk[best])
        if (high - low) / medians[best] > NOISY:
            parts.append(
                f"{setting}: inconclusive, its runs at chunks of {best} disagree ({low:.2f}x to "
                f"{high:.2f}x one process's time)"
            )
            continue
        meeting = sorted(chunk for chunk, ratios in by_chunk.items() if max(ratios) <= target)
        verdict = (
            f"within {target:.2f}x in every run at chunks of " + ", ".join(map(str, meeting))
            if meeting
            else f"over {target:.2f}x at every chunk size in some run"
        )
        parts.append(
            f"{setting}: fastest at chunks of {best} ({medians[best]:.2f}x one process's time, "
            f"runs {low:.2f}x to {high:.2f}x); {verdict}"
        )
    return "; ".join(parts)
