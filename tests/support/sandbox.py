"""Commands run as under systemd's MemoryDenyWriteExecute=yes (config/*.service)."""

from __future__ import annotations

import sys

# prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN): the kernel's form of systemd's
# MemoryDenyWriteExecute=yes; it holds across exec and for every child (the decoder
# workers). The wrapper checks that it works, then execs its arguments.
_MDWE_WRAPPER = """
import ctypes, mmap, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:
    sys.exit(f"prctl(PR_SET_MDWE): errno {ctypes.get_errno()}")
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    sys.exit("a writable and executable mapping was allowed")
except OSError:
    pass
os.execv(sys.argv[1], sys.argv[1:])
"""

# put before a command line: it runs with writable-and-executable memory denied
WITHOUT_WRITE_EXECUTE = (sys.executable, "-c", _MDWE_WRAPPER)
