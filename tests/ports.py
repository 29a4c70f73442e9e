"""Free loopback ports for the suite's own servers, below Linux's ephemeral range."""

from __future__ import annotations

import random
import socket
from collections.abc import Collection

# Linux hands out client ports from 32768 up: a server there could collide
# with the suite's own outgoing connections.
DEFAULT_PORTS = range(18000, 19000)


def free_port(ports: range = DEFAULT_PORTS, taken: Collection[int] = ()) -> int:
    """Return a port of ``ports``, not in ``taken``, that nobody listens on."""
    candidates = [port for port in ports if port not in taken]
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {ports.start}-{ports.stop - 1}")
