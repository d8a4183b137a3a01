"""Messages for whoever watches the VM's console (the host's serial log)."""

from __future__ import annotations

import contextlib
import os


def log(message: str) -> None:
    """One line on stderr, which is /dev/console in the guest; never raises."""
    with contextlib.suppress(OSError):
        os.write(2, f"hyperstart: {message}\n".encode(errors="replace"))


def describe(exc: BaseException) -> str:
    """The exception and where it was raised, innermost last (``traceback`` costs imports)."""
    lines = []
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        lines.append(f"  {code.co_filename}:{tb.tb_lineno} in {code.co_name}")
        tb = tb.tb_next
    lines.append(f"{type(exc).__name__}: {exc}")
    return "\n".join(lines)
