#!/usr/bin/env python3
"""Compiles every kernels/*.cu with NVRTC the way backend/cuda/kernels.rs does, without a GPU.

Same source expansion (`#include "common.cuh"` / `"params.cuh"` inlined once each, no include
path, no CUDA headers), same options (`--gpu-architecture=<arch>`, plus -DVIVA_CHECK_OFFSETS: the field-offset asserts that CUDA 13's NVRTC cannot evaluate), one program per file;
gemv.cu also with the `VIVA_FP8_HW_CVT=1` prelude. Prints each file's entry points and fails on
any compile error or warning.

NVRTC comes from the `nvidia-cuda-nvrtc` wheel (no GPU or driver needed):
    python3 -m pip install --target /tmp/nvrtc nvidia-cuda-nvrtc
    PYTHONPATH=/tmp/nvrtc python3 scripts/check_kernels.py [--arch sm_90a,sm_90,sm_89,sm_80]
or point VIVA_NVRTC at a libnvrtc.so.
"""
import ctypes
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KERNELS = os.path.join(ROOT, "kernels")
INCLUDE = re.compile(r'^\s*#include\s+"([^"]+)"\s*$')


def expand(name, seen):
    """The file's text with its local includes inlined, each header once (kernels.rs `expand`)."""
    out = []
    with open(os.path.join(KERNELS, name)) as f:
        for line in f.read().splitlines():
            m = INCLUDE.match(line)
            if not m:
                out.append(line)
            elif m.group(1) not in seen:
                seen.add(m.group(1))
                out.append(expand(m.group(1), seen))
    return "\n".join(out) + "\n"


def find_nvrtc():
    if os.environ.get("VIVA_NVRTC"):
        return os.environ["VIVA_NVRTC"]
    for base in sys.path:
        hits = sorted(glob.glob(os.path.join(base, "nvidia", "*", "lib", "libnvrtc.so*")))
        hits += sorted(glob.glob(os.path.join(base, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so*")))
        if hits:
            return hits[-1]
    return "libnvrtc.so"


def compile_one(lib, name, src, arch):
    prog = ctypes.c_void_p()
    rc = lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), name.encode(), 0, None, None)
    if rc:
        return rc, "nvrtcCreateProgram failed", ""
    opts = [f"--gpu-architecture={arch}".encode(), b"-DVIVA_CHECK_OFFSETS"]
    arr = (ctypes.c_char_p * len(opts))(*opts)
    rc = lib.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    ptx = ""
    if rc == 0:
        lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
        buf = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetPTX(prog, buf)
        ptx = buf.value.decode()
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return rc, log.value.decode().strip(), ptx


def main():
    archs = ["sm_90a", "sm_90", "sm_89", "sm_80"]
    if "--arch" in sys.argv:
        archs = sys.argv[sys.argv.index("--arch") + 1].split(",")
    path = find_nvrtc()
    lib = ctypes.CDLL(path)
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    print(f"NVRTC {major.value}.{minor.value} ({path})")
    failed = 0
    for cu in sorted(glob.glob(os.path.join(KERNELS, "*.cu"))):
        name = os.path.basename(cu)
        src = expand(name, set())
        variants = [("", src)]
        if name == "gemv.cu":
            variants.append(("FP8_HW_CVT=1", "#define FP8_HW_CVT 1\n" + src))
        for arch in archs:
            for label, text in variants:
                rc, log, ptx = compile_one(lib, name, text, arch)
                entries = re.findall(r"\.entry\s+(\w+)", ptx)
                tag = f"{name} {arch}{' ' + label if label else ''}"
                if rc or log:
                    failed += 1 if rc or "warning" in log else 0
                    print(f"{'FAIL' if rc else 'note'} {tag}\n{log}")
                if rc == 0:
                    print(f"ok   {tag}: {len(entries)} kernels ({', '.join(entries[:4])}{', ...' if len(entries) > 4 else ''})")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
