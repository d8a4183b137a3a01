"""hyperstart: the guest agent, PID 1 of every pod's micro-VM.

It speaks :mod:`hyper.proto` with the host over a virtio-serial port, assembles each container's
root filesystem, runs the containers' processes and relays their stdio, signals, terminal sizes
and exit statuses. It runs on Debian's bare ``python3.11 -ISB`` under emulation, so it imports
only light stdlib modules, all at module top level (the initramfs packs their closure).
"""

__version__ = "0.1.0"
