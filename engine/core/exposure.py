"""Who can reach the API: a listener off loopback without tokens answers anyone who reaches its port.

Pure: the listen address and what protects it in, one warning per weakness out (``check-config`` prints
them; the engine still starts, a deliberate choice in a closed network is the operator's to make).
"""

from __future__ import annotations

LOOPBACK = ("127.", "::1", "localhost")


def is_loopback(listen: str) -> bool:
    """``host:port`` (``[v6]:port`` too) bound to a loopback address only."""
    host = listen.rpartition(":")[0].strip("[]").lower()
    return host.startswith(LOOPBACK)


def listener_warnings(listen: str, *, tokens: int, tls: bool) -> list[str]:
    """What a reader of the config must know about its listener (empty on loopback)."""
    if is_loopback(listen):
        return []
    out = []
    if tokens == 0:
        out.append(f"instance.listen {listen} is not loopback and api.tokens is empty: anyone who reaches the "
                   "port reads the status, the events and the operations (give api.tokens, or listen on "
                   "127.0.0.1)")
    if not tls:
        out.append(f"instance.listen {listen} is not loopback and serves plain HTTP: tokens cross the network "
                   "in clear (give instance.tls unless the network itself is private)")
    return out
