"""How consistent a snapshot is, which depends on how it was taken.

- ``clean``: the volume was not attached to any running VM; its file system was unmounted
  cleanly (or, after a crash, is exactly what the crash left, like ``crash``).
- ``application``: attached and mounted; the guest agent froze the file system (``FIFREEZE``:
  dirty data written, journal committed, writes held) for the instant of the snapshot. An
  application that keeps its own consistent state on disk at every ``fsync`` (a database) is
  consistent in it; one that holds state in memory only is not, as with any fsfreeze.
- ``crash``: attached, not frozen (the agent could not freeze it, or the volume is not
  mounted): what the disk would hold after a power cut at that instant. ext4's journal makes
  the file system mountable again; the application's data is as good as its own recovery.
"""

from __future__ import annotations

from enum import Enum


class Consistency(Enum):
    CLEAN = "clean"
    APPLICATION = "application"
    CRASH = "crash"
