"""The notebooks' answers (grukern.studies) on synthetic measurements: steady, noisy and
contradictory ones. An answer is stated only when the data support it."""

import re

import numpy as np
import pytest

from grukern import studies

X = np.array([10, 30, 100, 300, 1000])


def _repeats(times, noise=0.0, k=5, seed=0):
    """k measurements around each time, multiplied by 1 ± noise."""
    rng = np.random.default_rng(seed)
    return np.asarray(times)[:, None] * (1 + noise * rng.uniform(-1, 1, (len(times), k)))


def test_a_steady_linear_time_is_called_linear():
    answer = studies.growth("T", X, _repeats(2e-6 * X, noise=0.01))
    assert answer.endswith("linearly in T") and "T^1.00" in answer


def test_sublinear_and_superlinear_growth_are_named():
    assert studies.growth("B", X, _repeats(1e-3 * X**0.5, 0.01)).endswith("sublinearly in B")
    assert studies.growth("H", X, _repeats(1e-9 * X**2, 0.01)).endswith("faster than linearly in H")


def test_noisy_repeats_make_the_answer_inconclusive():
    answer = studies.growth("T", X, _repeats(2e-6 * X, noise=0.5))
    assert answer.startswith("inconclusive for T: repeated measurements at one T disagree")


def test_contradictory_measurements_make_the_answer_inconclusive():
    """A time that jumps up and down with T (a busy machine between sizes) fits no power law."""
    times = np.array([8e-3, 2e-3, 9e-3, 1e-3, 8e-3])
    answer = studies.growth("T", X, _repeats(times, noise=0.01))
    assert answer.startswith("inconclusive for T: the fit explains too little")


def test_a_flat_time_is_not_called_linear():
    """The notebook once printed 'linear in T' for a time that stayed at 8 ms from T=10 to 300."""
    flat = _repeats(np.full(X.size, 8e-3) * (1 + 1e-3 * np.arange(X.size) % 2), noise=0.01)
    answers = [studies.growth("T", X, flat), studies.cost_per_step("T", X, flat)]
    assert all("linear" not in a or a.startswith("inconclusive") for a in answers), answers


def test_a_fixed_cost_plus_a_cost_per_step_is_measured():
    answer = studies.cost_per_step("T", X, _repeats(0.1e-3 + 4e-6 * X, noise=0.01))
    assert re.match(r"the time is 0\.(09|1)\d* ms plus 4(\.0\d*)? µs per unit of T", answer), answer
    assert answer.endswith("linear in T")
    # a power law is the wrong model here (the fixed cost dominates short sequences): its
    # answer does not call the time linear
    assert " linearly" not in studies.growth("T", X, _repeats(0.1e-3 + 4e-6 * X, 0.01))


def test_fits_need_three_sizes():
    with pytest.raises(ValueError, match=r"n >= 3"):
        studies.fit_line([1, 2], [[1.0], [2.0]], log=True)


def test_tape_memory_is_matched_or_the_measurement_is_called_incomplete():
    formula = np.array([4_000, 2_000_000, 8_000_000])
    answer = studies.tape_memory(formula + np.array([300, 900, 1200]), formula, formula)
    assert answer.startswith("every tape holds its formula plus 0.3 to 1.2 KiB")
    assert "at most 0.04% more for the 2 tapes of 1 MB or more" in answer
    assert answer.endswith("equals the formula in every case")
    missed = studies.tape_memory(formula - np.array([0, 48_000, 0]), formula, formula)
    assert missed.startswith("inconclusive: 1 of 3 cases measured less than the formula")


def test_a_peer_comparison_counts_a_size_only_when_every_run_agrees():
    answer = studies.against_peer(
        "ONNX Runtime", {"G1": [1.2, 1.3, 1.1], "G4": [0.8, 0.82, 0.81], "G6": [0.9, 1.4, 1.0]}
    )
    assert answer == (
        "against ONNX Runtime over 3 run(s), numba is faster in every run on G1 (1.10x to 1.30x); "
        "slower in every run on G4 (0.80x to 0.82x); faster in some runs and slower in others "
        "on G6 (0.90x to 1.40x)"
    )
    assert studies.against_peer("torch", {"G3": [0.5]}).startswith(
        "against torch over 1 run(s), numba is faster in every run on no size; slower"
    )


def test_sharding_names_the_fastest_chunk_and_those_within_the_target():
    answer = studies.sharding(
        {
            "threads": {256: [1.30, 1.35], 1024: [1.04, 1.06], 4096: [1.02, 1.03]},
            "2x1 processes": {1024: [1.12, 1.20], 4096: [1.15, 1.11]},
        }
    )
    assert answer.startswith("threads: fastest at chunks of 4096 (1.02x")
    assert "within 1.10x in every run at chunks of 1024, 4096;" in answer
    assert "2x1 processes: fastest at chunks of 4096 (1.13x" in answer
    assert answer.endswith("over 1.10x at every chunk size in some run")


def test_sharding_with_disagreeing_runs_is_inconclusive():
    answer = studies.sharding({"threads": {1024: [0.9, 1.5], 4096: [1.2, 1.9]}})
    assert answer.startswith("threads: inconclusive, its runs at chunks of 1024 disagree")
