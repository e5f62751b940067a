"""The vector operations of secbook/csrc/simd.h and the int8 dot products of int8_gemv.h, checked on their own for
every path this machine can run: tests/csrc/simd_check.cpp is plain C++ (no PyTorch: ~1-2 s to compile), compiled
once per path — AVX-512 with and without VNNI, AVX2, the plain loops — and for 64-bit ARM (NEON), run under the
qemu emulator where a cross compiler and qemu are installed (``apt install g++-aarch64-linux-gnu qemu-user``).
It checks e^x to 4e-7, partial loads/stores, dot products, the activation rounding (ties to even) and the int8
products against the same arithmetic written out plainly, to the bit.
"""
import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

SRC = Path(__file__).parent / "csrc" / "simd_check.cpp"
AVX512 = ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mfma"]
# path -> (compiler flags that select it, /proc/cpuinfo flags a CPU needs to run it)
X86_PATHS = {
    "avx512-vnni": (AVX512 + ["-mavx512vnni"], {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"}),
    "avx512": (AVX512, {"avx512f", "avx512bw", "avx512vl"}),
    "avx2": (["-mavx2", "-mfma"], {"avx2", "fma"}),
}


def _cxx() -> str | None:
    return shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")


def _run_check(cmd: list[str], exe: Path, run: list[str]) -> list[str]:
    subprocess.run(cmd + ["-o", str(exe), str(SRC)], check=True, capture_output=True, timeout=300)
    out = subprocess.run(run + [str(exe)], capture_output=True, text=True, timeout=300)
    return out.stdout.splitlines()


@pytest.mark.parametrize("path", list(X86_PATHS) + ["scalar"])
def test_simd_path(path, tmp_path):
    if _cxx() is None:
        pytest.skip("no C++ compiler on this machine")
    if path == "scalar":
        flags = ["-DSECBOOK_PORTABLE"]
    else:
        if platform.machine().lower() not in ("x86_64", "amd64"):
            pytest.skip(f"the {path} path is for x86-64 CPUs")
        flags, needs = X86_PATHS[path]
        try:
            have = set(Path("/proc/cpuinfo").read_text().split())
        except OSError:
            pytest.skip("cannot read /proc/cpuinfo to see whether this CPU runs the path")
        if needs - have:
            pytest.skip(f"this CPU lacks {', '.join(sorted(needs - have))}")
    lines = _run_check([_cxx(), "-O2", "-std=c++17", *flags], tmp_path / "simd_check", [])
    assert lines[0] == path  # the compiler's macros picked the path these flags name
    assert lines[1:] == ["ok"], "\n".join(lines[1:20])


def test_simd_neon(tmp_path):
    """The NEON path: natively on 64-bit ARM, else cross-compiled and run under qemu where both are installed."""
    if platform.machine().lower() in ("aarch64", "arm64") and _cxx():
        cmd, run = [_cxx(), "-O2", "-std=c++17"], []
    elif shutil.which("aarch64-linux-gnu-g++") and shutil.which("qemu-aarch64"):
        cmd, run = ["aarch64-linux-gnu-g++", "-O2", "-std=c++17", "-static"], ["qemu-aarch64"]
    else:
        pytest.skip("not an ARM machine, and no aarch64 cross compiler + qemu-aarch64 to emulate one "
                    "(apt install g++-aarch64-linux-gnu qemu-user)")
    lines = _run_check(cmd, tmp_path / "simd_check", run)
    assert lines[0] == "neon"
    assert lines[1:] == ["ok"], "\n".join(lines[1:20])
