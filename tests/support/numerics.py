"""Float tolerances derived from numerics, one place for every test that compares floats.

Why: a tolerance tuned on one CPU fails on another. Float32 kernels (AVX2, AVX-512, AMX; ``ATEN_CPU_CAPABILITY``
selects them) block their sums differently, so the same computation rounds differently; a difference of 1.79e-7
against a hand-picked ``atol=1e-7`` is such a case. A tolerance here is derived, and the failure message says how:

    rtol = safety × eps(dtype) × growth(accumulations) × steps
    atol = rtol × scale

- ``eps(dtype)``: the unit roundoff's spacing at 1 (``torch.finfo(dtype).eps`` / ``numpy.finfo(dtype).eps``):
  float32 1.19e-7, bfloat16 7.8e-3, float16 9.8e-4, float64 2.2e-16.
- ``accumulations`` (n): the length of the longest chain of roundings a value went through, usually the number of
  terms in the largest reduction (a matmul's inner dimension, a mean's element count, a softmax's key count), or
  a layer count × reduction length where reductions feed each other. Floating-point summation of n terms has a
  worst-case relative error of about n·eps (each addition rounds once and the errors can all point the same way)
  and a typical one of about sqrt(n)·eps (the rounding errors behave like independent zero-mean noise, a random
  walk). ``growth="sqrt"`` (the default) is for comparing two *different summation orders* of the same values
  (the CPU-kernel, sharded-vs-unsharded and batched-vs-single cases): both sides sit near the exact value, and the
  difference is a random walk. ``growth="linear"`` is the worst-case bound, for a reference computed in another way
  (another formula, another dtype) where the errors need not cancel.
- ``steps``: the number of times such an error is fed back, e.g. optimizer updates or denoising/ODE steps: an
  error made at step k is carried into every later step, so the bound grows linearly with the step count (no
  contraction assumed).
- ``safety`` (default 8): the constant in front of the bounds above (they are O(·) statements, and the typical
  case has a tail); 8 keeps a test from flaking on another CPU while a real bug (an off-by-one, a wrong scale, a
  missing term: errors of 1e-3 and above in float32) still fails by orders of magnitude.
- ``scale``: the absolute part. Rounding errors of a sum are relative to the *summands*, not to the result, so an
  element that cancels to ~0 still carries an absolute error of rtol × (the size of the values it was computed
  from). By default the scale is the largest |expected| value in the compared array (1.0 when that is 0); pass
  ``scale=`` when the summands are larger than the result (e.g. a loss that is a difference of large terms).

Where a tolerance is not a rounding bound (values written with 6 significant digits, a statistical estimate, an
approximation formula), pass ``rtol=``/``atol=`` explicitly; ``why=`` is then the stated reason, and it is required
in every case so the test says why its tolerance is what it is.

Exact comparisons (bit-identical states, deterministic reruns) stay exact: :func:`assert_exact`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

SAFETY = 8.0

__all__ = ["SAFETY", "Tolerance", "approx", "assert_close", "assert_exact", "assert_states_close", "eps", "forced_capability",
           "is_close", "skip_if_forced_capability_unsupported", "tol"]


def eps(dtype: Any) -> float:
    """Machine epsilon of a torch or numpy dtype (or a Python float: float64)."""
    if dtype is float or dtype is None:
        return float(np.finfo(np.float64).eps)
    try:
        import torch

        if isinstance(dtype, torch.dtype):
            return float(torch.finfo(dtype).eps)
    except ImportError:  # pragma: no cover - torch is installed with the project
        pass
    return float(np.finfo(np.dtype(dtype)).eps)


def _dtype_name(dtype: Any) -> str:
    if dtype is float or dtype is None:
        return "float64"
    return str(dtype).replace("torch.", "")


@dataclass(frozen=True)
class Tolerance:
    """A relative and absolute tolerance and the sentence that derives them. Unpacks as ``rtol, atol``."""

    rtol: float
    atol: float
    derivation: str

    def __iter__(self):
        return iter((self.rtol, self.atol))

    def kwargs(self) -> dict:
        """``rtol=..., atol=...`` for ``torch.testing.assert_close`` / ``numpy.testing.assert_allclose``."""
        return {"rtol": self.rtol, "atol": self.atol}


def tol(dtype: Any, accumulations: int = 1, *, steps: int = 1, growth: str = "sqrt", safety: float = SAFETY,
        scale: float = 1.0) -> Tolerance:
    """The tolerance for values of ``dtype`` that went through ``accumulations`` roundings in a chain, ``steps``
    times over: ``rtol = safety·eps·g(n)·steps`` with g(n) = sqrt(n) (typical) or n (worst case, ``growth="linear"``),
    ``atol = rtol·scale``. See the module docstring for when to use which."""
    if accumulations < 1 or steps < 1:
        raise ValueError(f"accumulations and steps count roundings: >= 1 (got {accumulations}, {steps})")
    if growth not in ("sqrt", "linear"):
        raise ValueError(f"growth is 'sqrt' (typical) or 'linear' (worst case), not {growth!r}")
    e = eps(dtype)
    g = math.sqrt(accumulations) if growth == "sqrt" else float(accumulations)
    rtol = safety * e * g * steps
    formula = f"sqrt({accumulations})" if growth == "sqrt" else f"{accumulations}"
    derivation = (f"rtol = safety {safety:g} × eps({_dtype_name(dtype)}) {e:.3g} × {formula} accumulations"
                  f"{f' × {steps} steps' if steps > 1 else ''} = {rtol:.3g}; atol = rtol × scale {scale:.3g} "
                  f"= {rtol * scale:.3g}")
    return Tolerance(rtol, rtol * scale, derivation)


def _as_array(value: Any) -> np.ndarray:
    try:
        import torch

        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            if value.is_floating_point() and value.dtype != torch.float64:
                value = value.double()
            return value.numpy()
    except ImportError:  # pragma: no cover
        pass
    array = np.asarray(value)
    if array.dtype.kind in "fc" and array.dtype != np.float64 and array.dtype.kind == "f":
        array = array.astype(np.float64)
    return array


def _native_dtype(value: Any) -> Any:
    try:
        import torch

        if isinstance(value, torch.Tensor):
            return value.dtype
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return value.dtype
    if isinstance(value, (np.floating,)):
        return value.dtype
    return float


def _resolve(actual: Any, expected: Any, *, dtype: Any, accumulations: int | None, steps: int, growth: str,
             safety: float, rtol: float | None, atol: float | None, scale: float | None, why: str) -> Tolerance:
    if not why or not why.strip():
        raise ValueError("why= is required: say what the tolerance bounds (accumulation length, steps, or reason)")
    if rtol is not None or atol is not None:
        if accumulations is not None:
            raise ValueError("give either accumulations (a derived tolerance) or rtol/atol (an explicit one)")
        r, a = rtol or 0.0, atol or 0.0
        return Tolerance(r, a, f"explicit rtol {r:.3g}, atol {a:.3g}: {why}")
    if scale is None:
        exp = _as_array(expected)
        finite = np.abs(exp[np.isfinite(exp)]) if exp.dtype.kind in "fc" else np.abs(exp.astype(np.float64))
        scale = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    t = tol(dtype if dtype is not None else _native_dtype(actual), accumulations or 1, steps=steps, growth=growth,
            safety=safety, scale=scale)
    return Tolerance(t.rtol, t.atol, f"{t.derivation}: {why}")


def _compare(actual: Any, expected: Any, t: Tolerance, equal_nan: bool):
    a, e = _as_array(actual), _as_array(expected)
    if a.shape != e.shape:
        a, e = np.broadcast_arrays(a, e) if a.size == 1 or e.size == 1 else (a, e)
        if a.shape != e.shape:
            return False, f"shapes differ: {a.shape} vs {e.shape}"
    a, e = a.astype(np.float64), e.astype(np.float64)
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    if equal_nan:
        if (nan_a != nan_e).any():
            return False, f"NaN at different positions ({int((nan_a != nan_e).sum())} of {a.size})"
        both = ~(nan_a & nan_e)
        a, e = a[both], e[both]
    elif nan_a.any() or nan_e.any():
        return False, f"NaN present (actual {int(nan_a.sum())}, expected {int(nan_e.sum())}); equal_nan=False"
    inf = np.isinf(a) | np.isinf(e)
    if inf.any():
        if not (a[inf] == e[inf]).all():
            return False, "infinities differ"
        a, e = a[~inf], e[~inf]
    if a.size == 0:
        return True, ""
    diff = np.abs(a - e)
    bound = t.atol + t.rtol * np.abs(e)
    bad = diff > bound
    if not bad.any():
        return True, ""
    rel = diff / np.maximum(np.abs(e), np.finfo(np.float64).tiny)
    worst = int(np.argmax(diff - bound))
    return False, (f"{int(bad.sum())} of {a.size} values out of tolerance; max abs error {diff.max():.3g}, "
                   f"max rel error {rel.max():.3g}; worst: actual {a.flat[worst]!r} vs expected {e.flat[worst]!r} "
                   f"(allowed {bound.flat[worst]:.3g})")


def assert_close(actual: Any, expected: Any, *, why: str, dtype: Any = None, accumulations: int | None = None,
                 steps: int = 1, growth: str = "sqrt", safety: float = SAFETY, scale: float | None = None,
                 rtol: float | None = None, atol: float | None = None, equal_nan: bool = False, msg: str = ""):
    """Assert |actual - expected| <= atol + rtol·|expected| elementwise, for torch tensors, numpy arrays, sequences
    and floats. The tolerance is derived (``accumulations``, ``steps``, ``dtype``: see :func:`tol`; ``dtype``
    defaults to ``actual``'s) or explicit (``rtol``/``atol`` with ``why`` as its reason)."""
    t = _resolve(actual, expected, dtype=dtype, accumulations=accumulations, steps=steps, growth=growth,
                 safety=safety, rtol=rtol, atol=atol, scale=scale, why=why)
    ok, detail = _compare(actual, expected, t, equal_nan)
    if not ok:
        raise AssertionError(f"{msg + ': ' if msg else ''}not close: {detail}\n  tolerance: {t.derivation}")


def is_close(actual: Any, expected: Any, *, why: str, dtype: Any = None, accumulations: int | None = None,
             steps: int = 1, growth: str = "sqrt", safety: float = SAFETY, scale: float | None = None,
             rtol: float | None = None, atol: float | None = None, equal_nan: bool = False) -> bool:
    """:func:`assert_close` as a predicate, for ``assert not is_close(...)`` (two things that must differ)."""
    t = _resolve(actual, expected, dtype=dtype, accumulations=accumulations, steps=steps, growth=growth,
                 safety=safety, rtol=rtol, atol=atol, scale=scale, why=why)
    return _compare(actual, expected, t, equal_nan)[0]


def approx(expected: Any, *, why: str, dtype: Any = float, accumulations: int | None = None, steps: int = 1,
           growth: str = "sqrt", safety: float = SAFETY, scale: float | None = None, rtol: float | None = None,
           atol: float | None = None):
    """``pytest.approx`` with a derived (or explicit, reasoned) tolerance, for ``==`` inside dicts and lists.
    ``dtype`` defaults to float64 (Python floats)."""
    t = _resolve(expected, expected, dtype=dtype, accumulations=accumulations, steps=steps, growth=growth,
                 safety=safety, rtol=rtol, atol=atol, scale=scale, why=why)
    return pytest.approx(expected, rel=t.rtol, abs=t.atol)


def assert_exact(actual: Any, expected: Any, *, why: str, equal_nan: bool = False):
    """Bit-for-bit equality (same shape, same dtype for tensors, same values; NaNs equal only with ``equal_nan``):
    for reruns and state round-trips that must not change a single bit."""
    if not why or not why.strip():
        raise ValueError("why= is required")
    try:
        import torch

        if isinstance(actual, torch.Tensor) or isinstance(expected, torch.Tensor):
            torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=equal_nan,
                                       msg=lambda m: f"not bit-identical ({why}): {m}")
            return
    except ImportError:  # pragma: no cover
        pass
    np.testing.assert_array_equal(np.asarray(actual), np.asarray(expected), err_msg=f"not identical ({why})")


def assert_states_close(actual: dict, expected: dict, *, exact: bool, why: str, dtype: Any = None,
                        accumulations: int | None = None, steps: int | None = None) -> None:
    """Two state dicts (name -> tensor) with the same keys: bit-identical when ``exact``, else each tensor within the
    rounding bound of ``accumulations``-long sums over ``steps`` updates."""
    assert actual.keys() == expected.keys() and actual, (sorted(actual), sorted(expected))
    for key in actual:
        if exact:
            assert_exact(actual[key], expected[key], why=why)
        else:
            assert_close(actual[key], expected[key], dtype=dtype, accumulations=accumulations, steps=steps or 1,
                         msg=key, why=why)


# --- forced CPU capabilities (ATEN_CPU_CAPABILITY) ---------------------------------------------------------------

_UNSUPPORTED_UNDER_FORCED = ("only supported when avx512 is supported",)


def forced_capability() -> str | None:
    """The CPU kernel set forced with ``ATEN_CPU_CAPABILITY`` (default / avx2 / avx512 ...), or None when unset."""
    value = os.environ.get("ATEN_CPU_CAPABILITY", "").strip()
    return value or None


class skip_if_forced_capability_unsupported:
    """Context manager (and decorator) for bfloat16 ops in parity tests: on an AMX / AVX-512 CPU, forcing
    ``ATEN_CPU_CAPABILITY=avx2`` makes some bf16 kernels raise inside torch itself (``pack_vnni2 is only supported
    when avx512 is supported``). That is torch refusing the forced configuration, not a project failure: the test
    is skipped with torch's own message. It skips only when a capability is forced AND torch raises that
    RuntimeError; any other error, or the same error without a forced capability, propagates."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None and _is_forced_unsupported(exc):
            pytest.skip(f"ATEN_CPU_CAPABILITY={forced_capability()}: torch cannot run this op under the forced "
                        f"capability: {exc}")
        return False

    def __call__(self, fn):
        import functools

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with skip_if_forced_capability_unsupported():
                return fn(*args, **kwargs)

        return wrapper


def _is_forced_unsupported(exc: BaseException) -> bool:
    if forced_capability() is None:
        return False
    seen = exc
    while seen is not None:
        if isinstance(seen, RuntimeError) and any(s in str(seen) for s in _UNSUPPORTED_UNDER_FORCED):
            return True
        seen = seen.__cause__ or seen.__context__
    # errors raised in a child process arrive as text (tests.support.gloo re-raises them)
    return any(s in str(exc) for s in _UNSUPPORTED_UNDER_FORCED) and "RuntimeError" in str(exc)
