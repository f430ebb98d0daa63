"""Build of the C engine (c2scribe._core) against Debian's libnids, libhtp, libpcap and libcrypto
(the native reassembly engine needs nothing more).

Everything else is declared in pyproject.toml.
"""
import shlex
import subprocess

from setuptools import Extension, setup


def pkg_config(*args, default=()):
    try:
        out = subprocess.run(["pkg-config", *args], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return list(default)
    return shlex.split(out)


htp_cflags = pkg_config("--cflags", "htp", default=["-I/usr/include"])
htp_libs = pkg_config("--libs", "htp", default=["-lhtp"])

core = Extension(
    "c2scribe._core",
    sources=[
        "c2scribe/_core/module.c",
        "c2scribe/_core/flow.c",
        "c2scribe/_core/record.c",
        "c2scribe/_core/columns.c",
        "c2scribe/capture/pcapfile.c",
        "c2scribe/capture/linktype.c",
        "c2scribe/reassembly/nids.c",
        "c2scribe/reassembly/native.c",
        "c2scribe/reassembly/tcpreasm.c",
        "c2scribe/reassembly/ipfrag.c",
        "c2scribe/http/htp.c",
    ],
    depends=["c2scribe/_core/core.h", "c2scribe/capture/capture.h",
             "c2scribe/reassembly/tcpreasm.h", "c2scribe/reassembly/ipfrag.h"],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wno-unused-function", *htp_cflags],
    extra_link_args=htp_libs,
    libraries=["nids", "pcap", "crypto", "brotlidec"],
)

setup(ext_modules=[core])
