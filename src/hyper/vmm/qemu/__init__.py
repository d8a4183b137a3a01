"""The QEMU driver: command line, process, QMP session, and the VM that combines them."""
