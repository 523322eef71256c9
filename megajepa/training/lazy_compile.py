"""Importing DeepSpeed's Muon module without paying for inductor at import time.

DeepSpeed 0.19.8 imports `deepspeed.runtime.zero.muon` during `deepspeed.initialize` for every
optimizer (an isinstance check in the engine, the ZeRO-3 optimizer and the bf16 optimizer); that
module decorates three functions with `torch.compile`, and the decoration alone imports ~160 inductor
modules (0.7 s of start-up on an idle 2-core box, 1.7 s on a busy one) that a run without Muon
never uses."""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import torch


def _compile_on_first_call(real_compile: Callable) -> Callable:
    """A stand-in for `torch.compile` that returns a wrapper calling the real `torch.compile` with the
    same arguments on the function's first call (torch.compile itself only traces on the first call)."""
    def deferred(model=None, **options):
        if model is None:  # the @torch.compile(mode=...) form
            return lambda fn: deferred(fn, **options)
        compiled = None

        @functools.wraps(model)
        def first_call_compiles(*args, **kwargs):
            nonlocal compiled
            if compiled is None:
                compiled = real_compile(model, **options)
            return compiled(*args, **kwargs)
        return first_call_compiles
    return deferred


@contextlib.contextmanager
def torch_compile_deferred() -> Iterator[None]:
    """Within the block, `torch.compile(fn)` compiles fn on its first call instead of at decoration."""
    real_compile = torch.compile
    torch.compile = _compile_on_first_call(real_compile)
    try:
        yield
    finally:
        torch.compile = real_compile


def import_deepspeed_muon() -> None:
    """Import DeepSpeed's Muon module once with its decorators deferred; later imports find it loaded."""
    with torch_compile_deferred():
        import deepspeed.runtime.zero.muon.muon_optimizer  # noqa: F401
