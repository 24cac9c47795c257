"""Sample-complexity formulas of verifier.certify.pac against hand-computed values, inverses, bad input."""

from __future__ import annotations

import argparse
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binom

from encoders.errors import ConfigError
from verifier.certify import pac

# ------------------------------------------------------------------------------- hand-computed values


def test_seed_kind_m2_l2_eps_eta_001_by_hand():
    # d = m + 1 = 3 for L2 balls in R^2.
    # s >= 8*3/0.01 * ln(16*3/0.01) + 4/0.01 * ln(2/0.01)
    #    = 2400 * ln(4800) + 400 * ln(200)
    #    = 2400 * 8.476371196895983 + 400 * 5.298317366548036
    #    = 20343.29087255036 + 2119.3269466192143 = 22462.617819169573  ->  22463
    by_hand = 2400 * math.log(4800) + 400 * math.log(200)
    assert by_hand == pytest.approx(22462.617819169573, rel=1e-15)
    assert pac.vc_dimension(2, "2") == 3
    assert pac.seed_sample_size(0.01, 0.01, 3) == 22463
    assert pac.seed_bound(0.01, 0.01, 3) == pytest.approx(by_hand, rel=1e-14)
    assert pac.pac_summary(2, "2", 0.01, 0.01)["seed_vc"] == 22463


def test_vc_dimension_linf_is_2m_never_m_plus_1():
    assert pac.vc_dimension(64, "inf") == 128
    assert pac.vc_dimension(64, "2") == 65
    assert pac.vc_dimension(1, "inf") == 2
    assert pac.vc_dimension(784, "linf") == 1568
    assert pac.vc_dimension(3, math.inf) == 6
    assert pac.vc_dimension(3, 2) == 4
    for m in range(2, 50):  # m + 1 would under-count for every m >= 2
        assert pac.vc_dimension(m, "inf") == 2 * m > m + 1


def test_seed_kind_linf_m64():
    # d = 128, eps = 0.01, eta = 0.05:  8*128/0.01*ln(16*128/0.01) + 4/0.01*ln(2/0.05)
    by_hand = 102400 * math.log(204800) + 400 * math.log(40)
    s = pac.pac_summary(64, "inf", 0.01, 0.05)
    assert s["d"] == 128
    assert s["seed_vc"] == math.ceil(by_hand) == 1253806


def test_quality_space_is_d2_and_independent_of_m():
    # 8*2/0.01*ln(16*2/0.01) + 4/0.01*ln(2/0.05) = 1600 ln 3200 + 400 ln 40
    by_hand = 1600 * math.log(3200) + 400 * math.log(40)
    assert pac.quality_space_sample_size(0.01, 0.05) == math.ceil(by_hand) == 14390
    sizes = {
        pac.pac_summary(m, n, 0.01, 0.05)["quality_space"] for m in (1, 2, 64, 784) for n in ("2", "inf")
    }
    assert sizes == {14390}


def test_binomial_by_hand():
    assert pac.binomial_sample_size(0.01, 0.05) == math.ceil(math.log(20) / 0.01) == 300
    assert pac.binomial_sample_size(0.1, 0.01) == math.ceil(math.log(100) / 0.1) == 47
    assert pac.pac_summary(5, "inf", 0.01, 0.05)["binomial"] == 300


def test_clopper_pearson_known_values():
    # k = 0: 1 - eta^(1/s)
    assert pac.clopper_pearson_upper(0, 100, 0.05) == pytest.approx(1 - 0.05 ** (1 / 100), rel=1e-14)
    assert pac.clopper_pearson_upper(0, 100, 0.05) == pytest.approx(0.029513049607039932, rel=1e-12)
    assert pac.clopper_pearson_upper(0, 1, 0.5) == pytest.approx(0.5)
    # k = s: no information
    assert pac.clopper_pearson_upper(7, 7, 0.05) == 1.0
    # k = 1, s = 2, eta: solve Pr[Bin(2,p) <= 1] = 1 - p^2 = eta  ->  p = sqrt(1 - eta)
    assert pac.clopper_pearson_upper(1, 2, 0.19) == pytest.approx(0.9, rel=1e-10)
    # k = 1, s = 10, eta = 0.05 (tabulated one-sided 95% CP upper limit 0.3942)
    assert pac.clopper_pearson_upper(1, 10, 0.05) == pytest.approx(0.3942, abs=1e-4)


@settings(max_examples=150, deadline=None)
@given(s=st.integers(1, 5000), frac=st.floats(0, 1), eta=st.floats(1e-6, 0.5))
def test_clopper_pearson_is_the_binomial_tail_inverse(s, frac, eta):
    k = min(s, int(frac * s))
    p = pac.clopper_pearson_upper(k, s, eta)
    assert 0 < p <= 1
    if k < s:
        # Pr[Bin(s, p_u) <= k] = eta, and any p slightly above p_u makes k violations less likely than eta
        assert binom.cdf(k, s, p) == pytest.approx(eta, rel=1e-6)
        assert binom.cdf(k, s, min(1.0, p * (1 + 1e-6) + 1e-12)) <= eta * (1 + 1e-9)
        assert pac.clopper_pearson_upper(k, s, eta) <= pac.clopper_pearson_upper(min(k + 1, s), s, eta)


@settings(max_examples=200, deadline=None)
@given(eps=st.floats(1e-5, 0.5), eta=st.floats(1e-12, 0.5))
def test_binomial_size_really_bounds_zero_violation_probability(eps, eta):
    # If the violation probability were eps, zero violations among s samples has probability (1-eps)^s <= eta
    s = pac.binomial_sample_size(eps, eta)
    assert (1 - eps) ** s <= eta * (1 + 1e-12)
    assert pac.clopper_pearson_upper(0, s, eta) <= eps * (1 + 1e-12)


# -------------------------------------------------------------------------------------- monotonicity


@settings(max_examples=100, deadline=None)
@given(eps=st.floats(1e-4, 0.5), eta=st.floats(1e-9, 0.5), d=st.integers(1, 2000))
def test_seed_size_monotone(eps, eta, d):
    s = pac.seed_sample_size(eps, eta, d)
    assert s >= pac.seed_sample_size(min(0.5, eps * 1.5), eta, d)
    assert s >= pac.seed_sample_size(eps, min(0.5, eta * 2), d)
    assert s <= pac.seed_sample_size(eps, eta, d + 1)
    assert s >= pac.binomial_sample_size(eps, eta)  # the fixed-property kind is never costlier


# ------------------------------------------------------------------------------------------ inverses


@settings(max_examples=200, deadline=None)
@given(s=st.integers(1, 10**8), eta=st.floats(1e-12, 0.5), d=st.integers(1, 2000))
def test_seed_epsilon_round_trip(s, eta, d):
    if s < pac.seed_sample_size(0.5, eta, d):
        with pytest.raises(ConfigError):
            pac.seed_epsilon(s, eta, d)
        return
    eps = pac.seed_epsilon(s, eta, d)
    assert 0 < eps <= 0.5
    assert pac.seed_sample_size(eps, eta, d) <= s  # s samples do achieve eps
    if eps * (1 - 1e-9) > 0:
        assert pac.seed_bound(eps * (1 - 1e-9), eta, d) > s  # and nothing 1e-9 (relative) smaller
    # the other way round
    s2 = pac.seed_sample_size(eps, eta, d)
    assert pac.seed_epsilon(s2, eta, d) <= eps * (1 + 1e-9)


@settings(max_examples=200, deadline=None)
@given(s=st.integers(1, 10**8), eps=st.floats(1e-4, 0.5), d=st.integers(1, 2000))
def test_seed_eta_round_trip(s, eps, d):
    if s < pac.seed_sample_size(eps, 0.5, d):
        with pytest.raises(ConfigError):
            pac.seed_eta(s, eps, d)
        return
    eta = pac.seed_eta(s, eps, d)
    assert 0 < eta <= 0.5
    assert pac.seed_sample_size(eps, eta, d) <= s
    if eta > 1e-250:
        assert pac.seed_bound(eps, eta * (1 - 1e-6), d) > s


@settings(max_examples=200, deadline=None)
@given(eps=st.floats(1e-4, 0.5), eta=st.floats(1e-12, 0.5), d=st.integers(1, 500))
def test_seed_inverses_from_sample_size(eps, eta, d):
    s = pac.seed_sample_size(eps, eta, d)
    assert pac.seed_epsilon(s, eta, d) <= eps * (1 + 1e-9)
    assert pac.seed_eta(s, eps, d) <= eta * (1 + 1e-9)


@settings(max_examples=200, deadline=None)
@given(s=st.integers(1, 10**9), eta=st.floats(1e-12, 0.5))
def test_binomial_epsilon_round_trip(s, eta):
    if math.log(1 / eta) / s > 0.5:
        with pytest.raises(ConfigError):
            pac.binomial_epsilon(s, eta)
        return
    eps = pac.binomial_epsilon(s, eta)
    assert pac.binomial_sample_size(eps, eta) <= s
    assert eps == pytest.approx(math.log(1 / eta) / s, rel=1e-12)
    assert pac.clopper_pearson_upper(0, s, eta) <= eps


@settings(max_examples=200, deadline=None)
@given(s=st.integers(1, 10**7), eps=st.floats(1e-4, 0.5))
def test_binomial_eta_round_trip(s, eps):
    if math.exp(-eps * s) > 0.5:
        with pytest.raises(ConfigError):
            pac.binomial_eta(s, eps)
        return
    eta = pac.binomial_eta(s, eps)
    assert pac.binomial_sample_size(eps, eta) <= s
    if eta > 1e-250:
        assert eta == pytest.approx(math.exp(-eps * s), rel=1e-9)


def test_inverse_hand_values():
    # 300 samples at eta = 0.05: eps = ln(20)/300
    assert pac.binomial_epsilon(300, 0.05) == pytest.approx(math.log(20) / 300, rel=1e-12)
    assert pac.binomial_eta(300, 0.01) == pytest.approx(math.exp(-3), rel=1e-12)
    # seed kind: 22463 samples, d = 3, eta = 0.01 reach just below 0.01
    eps = pac.seed_epsilon(22463, 0.01, 3)
    assert 0.0099 < eps < 0.01
    assert pac.seed_eta(22463, 0.01, 3) < 0.01


# ---------------------------------------------------------------------------------------------- shift


def test_tv_shift():
    assert pac.shifted_epsilon(0.01, 0.0) == 0.01
    assert pac.shifted_epsilon(0.01, 0.02) == pytest.approx(0.03)
    s = pac.pac_summary(2, "2", 0.01, 0.01, tv_shift=0.05)
    assert s["tv_shift"] == 0.05 and s["epsilon_shifted"] == pytest.approx(0.06)
    assert s["seed_vc"] == 22463  # the sample size is fixed by D; only the epsilon on D' moves
    assert "0.06" in s["guarantees"]["seed_vc"] and "TV(D, D') <= 0.05" in s["guarantees"]["seed_vc"]
    for bad in (-1e-9, -0.5, float("nan"), 1.5):
        with pytest.raises(ConfigError, match="--tv-shift"):
            pac.shifted_epsilon(0.01, bad)
        with pytest.raises(ConfigError, match="--tv-shift"):
            pac.pac_summary(2, "2", 0.01, 0.01, tv_shift=bad)


# ----------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("bad", [0.0, -0.1, 0.5000001, 0.7, 1.0, float("nan"), float("inf"), "x"])
def test_bad_epsilon_and_eta(bad):
    with pytest.raises(ConfigError, match="--epsilon"):
        pac.seed_sample_size(bad, 0.1, 3)
    with pytest.raises(ConfigError, match="--epsilon"):
        pac.pac_summary(2, "2", bad, 0.1)
    with pytest.raises(ConfigError, match="--epsilon"):
        pac.binomial_sample_size(bad, 0.1)
    with pytest.raises(ConfigError, match="--eta"):
        pac.seed_sample_size(0.1, bad, 3)
    with pytest.raises(ConfigError, match="--eta"):
        pac.pac_summary(2, "2", 0.1, bad)
    with pytest.raises(ConfigError, match="--eta"):
        pac.binomial_sample_size(0.1, bad)


def test_boundary_half_is_valid():
    assert pac.seed_sample_size(0.5, 0.5, 1) == math.ceil(16 * math.log(32) + 8 * math.log(4))
    assert pac.binomial_sample_size(0.5, 0.5) == 2


@pytest.mark.parametrize("m", [0, -3, 2.5, True])
def test_bad_m(m):
    with pytest.raises(ConfigError, match="--m"):
        pac.vc_dimension(m, "2")
    with pytest.raises(ConfigError, match="--m"):
        pac.pac_summary(m, "inf", 0.1, 0.1)


@pytest.mark.parametrize("norm", ["1", "l1", "", 3, "euclid"])
def test_bad_norm(norm):
    with pytest.raises(ConfigError, match="--norm"):
        pac.vc_dimension(4, norm)


def test_clopper_pearson_bad_input():
    for k, s, eta in [(-1, 10, 0.05), (11, 10, 0.05), (0, 0, 0.05), (0, 10, 0.0), (0, 10, 1.0), (0, 10, 2.0)]:
        with pytest.raises(ConfigError):
            pac.clopper_pearson_upper(k, s, eta)


# ------------------------------------------------------------------------------------------------ CLI


def _run_cli(argv):
    parser = argparse.ArgumentParser(prog="distillcert")
    sub = parser.add_subparsers(dest="command")
    pac.register_pac(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_pac():
    out = _run_cli(["pac", "--m", "2", "--norm", "2", "--epsilon", "0.01", "--eta", "0.01"])
    assert out["seed_vc"] == 22463 and out["d"] == 3 and out["norm"] == "2" and out["m"] == 2
    assert out["binomial"] == math.ceil(math.log(100) / 0.01)
    assert set(out) >= {"seed_vc", "quality_space", "binomial", "d", "m", "norm", "epsilon", "eta",
                        "tv_shift", "guarantees", "text"}
    assert set(out["guarantees"]) == {"seed_vc", "quality_space", "binomial"}
    assert "22463" in out["text"] and "i.i.d." in out["text"]
    json.dumps(out)  # JSON-serialisable as it stands
    out = _run_cli(
        ["pac", "--m", "64", "--norm", "inf", "--epsilon", "0.01", "--eta", "0.05", "--tv-shift", "0.1"]
    )
    assert out["d"] == 128 and out["tv_shift"] == 0.1 and out["epsilon_shifted"] == pytest.approx(0.11)
    assert out["smallest"] == "binomial"
    with pytest.raises(ConfigError, match="--epsilon"):
        _run_cli(["pac", "--m", "2", "--norm", "2", "--epsilon", "0.9", "--eta", "0.01"])
    with pytest.raises(SystemExit):  # argparse rejects an unknown norm
        _run_cli(["pac", "--m", "2", "--norm", "1", "--epsilon", "0.1", "--eta", "0.01"])


def test_cli_pac_through_distillcert_main(capsys):
    """Through the CLI: ``distillcert pac`` is registered by verifier.cli.verify_cmds (a missing
    registration fails here; it must never be skipped)."""
    from verifier.cli import main as cli

    parser = cli.build_parser()
    assert "pac" in parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    rc = cli.main(["pac", "--m", "2", "--norm", "2", "--epsilon", "0.01", "--eta", "0.01", "--json"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["seed_vc"] == 22463
    rc = cli.main(["pac", "--m", "2", "--norm", "2", "--epsilon", "0", "--eta", "0.01"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--epsilon" in err and len(err.strip().splitlines()) == 1
