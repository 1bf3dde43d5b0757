"""Keep a local tritonserver off the network. Triton 2.51 binds its SageMaker port to 0.0.0.0
whatever ``--http-address`` says (it has no ``--sagemaker-address``), and that port loads any
local path (``POST /models``). A tiny ``LD_PRELOAD`` library turns a bind to the wildcard
address (IPv4 or IPv6) into a bind to loopback; it is built once per user with the system C
compiler. Without a compiler it cannot be built, and ``preload_library`` says so: the caller
then refuses to expose that port rather than start it on every interface."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

/* bind() to the wildcard address becomes bind() to loopback; every other bind is untouched. */
int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real_bind)(int, const struct sockaddr *, socklen_t);
    if (!real_bind) real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    if (addr && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in a;
        memcpy(&a, addr, sizeof a);
        if (a.sin_addr.s_addr == htonl(INADDR_ANY)) {
            a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            return real_bind(fd, (const struct sockaddr *)&a, sizeof a);
        }
    } else if (addr && addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 a;
        memcpy(&a, addr, sizeof a);
        if (IN6_IS_ADDR_UNSPECIFIED(&a.sin6_addr)) {
            a.sin6_addr = in6addr_loopback;
            return real_bind(fd, (const struct sockaddr *)&a, sizeof a);
        }
    }
    return real_bind(fd, addr, len);
}
"""


class NoCompiler(RuntimeError):
    """The loopback library cannot be built here."""


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mmesim"


def preload_library() -> Path:
    """The loopback library (built on first use, then reused); NoCompiler says why it cannot be."""
    digest = hashlib.sha256(SOURCE.encode()).hexdigest()[:16]
    target = _cache_dir() / f"loopback-bind-{digest}.so"
    if target.is_file():
        return target
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        raise NoCompiler("no C compiler (cc, gcc or clang) to build the library that keeps Triton's SageMaker "
                         "port on loopback")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        src, out = Path(tmp) / "loopback.c", Path(tmp) / "loopback.so"
        src.write_text(SOURCE)
        done = subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(src), "-ldl"],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise NoCompiler(f"{cc} could not build the loopback library: {done.stderr.strip()[:300]}")
        os.replace(out, target)             # atomic: a concurrent build leaves one whole file
    return target
