"""DeepSpeed's Muon module is imported with its `torch.compile` decorators deferred to their first call
(training/lazy_compile.py; docs/benchmarks.md, start-up). CPU only."""
import subprocess
import sys
import textwrap

import torch
from torch._dynamo.utils import counters

from megajepa.training.lazy_compile import torch_compile_deferred


def affine(x):
    return 2 * x + 1


def shifted(x):  # its own code object: dynamo caches traces per code object
    return x - 3


def test_deferred_compile_traces_on_the_first_call_with_the_given_options():
    real_compile = torch.compile
    with torch_compile_deferred():
        plain = torch.compile(affine, backend="eager")
        decorated = torch.compile(backend="eager")(shifted)
    assert torch.compile is real_compile
    for fn, eager in ((plain, affine), (decorated, shifted)):
        before = counters["frames"]["ok"]
        x = torch.randn(5)
        assert counters["frames"]["ok"] == before
        torch.testing.assert_close(fn(x), eager(x), rtol=0, atol=0)
        assert counters["frames"]["ok"] == before + 1  # dynamo traced it, with backend="eager"
        fn(x)
        assert counters["frames"]["ok"] == before + 1  # and only once


def inductor_modules_added_by(statement: str) -> int:
    """Inductor modules that appear while `statement` runs, in a fresh interpreter with dynamo loaded."""
    script = textwrap.dedent(f"""
        import sys
        import torch, torch._dynamo, deepspeed
        def inductor(): return sum(m.startswith("torch._inductor") for m in sys.modules)
        before = inductor()
        {statement}
        from deepspeed.runtime.zero.muon.muon_optimizer import MuonWithAuxAdam
        assert issubclass(MuonWithAuxAdam, torch.optim.Optimizer)
        print(inductor() - before)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


def test_muon_import_leaves_inductor_unloaded():
    assert inductor_modules_added_by("import deepspeed.runtime.zero.muon.muon_optimizer") > 50
    deferred = "from megajepa.training.lazy_compile import import_deepspeed_muon; import_deepspeed_muon()"
    assert inductor_modules_added_by(deferred) == 0
