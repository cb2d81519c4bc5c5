"""tests.support.numerics: derived tolerances have the documented values, a difference of 10× the tolerance fails,
0.1× passes, for tensors, arrays and floats; the forced-capability skip fires only when a capability is forced."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.support import numerics
from tests.support.numerics import assert_close, assert_exact, tol


def test_derived_values_for_float32_bfloat16_float64():
    r, a = tol(torch.float32, 64)
    assert r == numerics.SAFETY * 2.0**-23 * 8 and a == r  # eps 2^-23, sqrt(64) = 8, scale 1
    assert tol(np.float32, 64).rtol == r  # numpy dtypes: the same eps
    assert tol(torch.bfloat16, 4).rtol == numerics.SAFETY * 2.0**-7 * 2
    assert tol(torch.float64, 100, growth="linear", steps=3).rtol == numerics.SAFETY * 2.0**-52 * 100 * 3
    assert tol(float, 1, scale=10.0).atol == numerics.SAFETY * 2.0**-52 * 10
    t = tol(torch.float32, 16, steps=2)
    assert "sqrt(16)" in t.derivation and "2 steps" in t.derivation and "float32" in t.derivation
    with pytest.raises(ValueError):
        tol(torch.float32, 0)
    with pytest.raises(ValueError):
        tol(torch.float32, 4, growth="cubic")


@pytest.mark.parametrize("kind", ["torch", "numpy", "float"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_ten_times_the_tolerance_fails_a_tenth_passes(kind, dtype):
    expected = 1.5
    t = tol(getattr(torch, dtype), 16, scale=expected)
    allowed = t.atol + t.rtol * expected

    def make(value):
        if kind == "torch":
            return torch.tensor([0.25, value], dtype=torch.float64)
        if kind == "numpy":
            return np.array([0.25, value])
        return value

    exp = make(expected)
    assert_close(make(expected + 0.1 * allowed), exp, dtype=getattr(torch, dtype), accumulations=16, why="test")
    with pytest.raises(AssertionError) as failure:
        assert_close(make(expected + 10 * allowed), exp, dtype=getattr(torch, dtype), accumulations=16, why="test")
    text = str(failure.value)
    assert "max abs error" in text and "max rel error" in text and "sqrt(16)" in text and "test" in text
    assert numerics.is_close(make(expected - 0.1 * allowed), exp, dtype=getattr(torch, dtype), accumulations=16,
                             why="test")
    assert not numerics.is_close(make(expected - 10 * allowed), exp, dtype=getattr(torch, dtype),
                                 accumulations=16, why="test")


def test_dtype_defaults_to_the_actual_values_and_scale_to_the_largest_expected():
    x = torch.tensor([100.0, 0.0])
    t = tol(torch.float32, 4, scale=100.0)
    assert_close(x + torch.tensor([0.0, 0.5 * t.atol]), x, accumulations=4, why="near-zero entry: scale 100")
    with pytest.raises(AssertionError):
        assert_close(x.double() + torch.tensor([0.0, 0.5 * t.atol], dtype=torch.float64), x.double(),
                     accumulations=4, why="float64 is 2^29 times tighter")


def test_explicit_tolerance_needs_a_reason_and_nans_are_opt_in():
    assert_close(1.00001, 1.0, rtol=2e-5, why="stored with 6 significant digits")
    with pytest.raises(AssertionError, match="6 significant"):
        assert_close(1.0001, 1.0, rtol=2e-5, why="stored with 6 significant digits")
    with pytest.raises(ValueError):
        assert_close(1.0, 1.0, accumulations=1, why="")
    with pytest.raises(ValueError):
        assert_close(1.0, 1.0, accumulations=1, rtol=1e-3, why="both")
    nan = np.array([1.0, math.nan])
    with pytest.raises(AssertionError, match="NaN"):
        assert_close(nan, nan, accumulations=1, why="x")
    assert_close(nan, nan, accumulations=1, why="x", equal_nan=True)
    with pytest.raises(AssertionError, match="shapes"):
        assert_close(np.ones(3), np.ones(2), accumulations=1, why="x")


def test_approx_and_exact():
    t = tol(float, 3)
    assert {"a": 2 / 3 + 0.1 * t.rtol} == {"a": numerics.approx(2 / 3, accumulations=3, why="three roundings")}
    assert {"a": 2 / 3 + 10 * t.rtol} != {"a": numerics.approx(2 / 3, accumulations=3, why="three roundings")}
    assert_exact(torch.tensor([1.0, math.nan]), torch.tensor([1.0, math.nan]), why="rerun", equal_nan=True)
    with pytest.raises(AssertionError):
        assert_exact(torch.tensor([1.0]), torch.tensor([1.0 + 2**-23]), why="one ulp is a difference")


def test_forced_capability_skip_only_when_forced_and_only_for_that_error(monkeypatch):
    message = "pack_vnni2 is only supported when avx512 is supported"
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    with pytest.raises(RuntimeError):  # not forced: torch's error is a real failure
        with numerics.skip_if_forced_capability_unsupported():
            raise RuntimeError(message)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    assert numerics.forced_capability() == "avx2"
    with pytest.raises(pytest.skip.Exception, match="pack_vnni2"):
        with numerics.skip_if_forced_capability_unsupported():
            raise RuntimeError(message)
    with pytest.raises(RuntimeError, match="another"):  # any other error propagates
        with numerics.skip_if_forced_capability_unsupported():
            raise RuntimeError("another error")
    with pytest.raises(pytest.skip.Exception):  # a rank's traceback, re-raised as text by the spawn
        with numerics.skip_if_forced_capability_unsupported():
            raise Exception(f"-- Process 0 terminated with the following error:\nRuntimeError: {message}")
