"""The CPU kernel path: which instruction set the libraries that do the arithmetic chose, the part of a machine that
decides the last bits of a float result.

The same code, seed, thread count and torch version give equal numbers only when the kernels are the same: PyTorch
picks its vectorised ATen kernels by CPU capability (AVX-512, AVX2 or the portable default), MKL (matrix products)
and oneDNN (convolutions) pick theirs by the instruction set they find. On a CPU with AVX2 only, a shipped record's
epoch-1 loss differs from its AVX-512 value in the 4th-5th digit, the same on every rerun there. So a record names
its kernel path, and equality is claimed only on the same path (ssl_bench.analysis.verify); elsewhere numbers agree
within a
measured spread (``python -m benchmarks.kernel_spread``).

The environment variables that move a path on one machine (used by the tests to run on another path):
``ATEN_CPU_CAPABILITY`` (default, avx2, avx512), ``MKL_CBWR`` (e.g. COMPATIBLE), ``MKL_ENABLE_INSTRUCTIONS``,
``ONEDNN_MAX_CPU_ISA``.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache

# Variables that choose another kernel path than the machine's own (see the module docstring).
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")


@lru_cache(maxsize=1)
def _cpu() -> tuple[str, str]:
    """(vendor, widest vector instruction set) of this CPU, from /proc/cpuinfo; the platform's machine name where it
    cannot be read (another OS) or the CPU is not x86."""
    vendor, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "vendor_id" and not vendor:
                    vendor = value.strip()
                elif key.strip() in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    isa = next((name for flag, name in (("avx512f", "AVX512"), ("avx2", "AVX2"), ("avx", "AVX"), ("sse4_2", "SSE4.2"),
                                        ("asimd", "NEON")) if flag in flags), platform.machine() or "unknown")
    return vendor or platform.machine() or "unknown", isa


def kernel_path() -> str:
    """This process's CPU kernel path in one line, e.g. ``AuthenticAMD AVX512; aten AVX512; mkl auto; onednn auto``
    (``auto``: the library's own choice on this CPU; a variable that forces another is named with its value)."""
    import torch

    vendor, isa = _cpu()
    mkl = (f"MKL_CBWR={os.environ['MKL_CBWR']}" if os.environ.get("MKL_CBWR")
           else os.environ.get("MKL_ENABLE_INSTRUCTIONS", "auto"))
    onednn = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "auto"
    return f"{vendor} {isa}; aten {torch.backends.cpu.get_cpu_capability()}; mkl {mkl}; onednn {onednn}"


def other_path_environ(environ: dict[str, str] | None = None) -> dict[str, str]:
    """A child process's environment on another kernel path than ``environ``'s (default: this process's): the
    portable ATen kernels and MKL's reproducible mode, or, when ``environ`` already forces a path, the machine's own
    (the variables removed). What the tests use to check that the suite's exactness checks hold elsewhere."""
    env = dict(os.environ if environ is None else environ)
    if any(env.get(k) for k in KERNEL_ENV):
        return {k: v for k, v in env.items() if k not in KERNEL_ENV}
    return {**env, "ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}
