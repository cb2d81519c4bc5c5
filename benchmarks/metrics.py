"""Masked PSNR / SSIM for benchmarks: the implementation lives upstream in :mod:`curate.metrics` (curate must not
import downstream packages, and the data pipeline scores pairs with the same functions)."""
from curate.metrics import *  # noqa: F401,F403
from curate.metrics import __all__  # noqa: F401
