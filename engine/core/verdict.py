"""Verdicts: one voter's view of every service at one moment, as exchanged between instances.

A verdict is what a voter saw through its *own* health machines: the health of each site, the
replication lag it knows, the shared dependencies it sees down, and the epoch and active site it
believes in. Verdicts are plain data (pydantic, strict, ``extra="forbid"``): a malformed one is
rejected before anything reads it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

HealthName = Literal["up", "down", "unknown"]
_Name = Annotated[str, Field(max_length=64)]
_Text = Annotated[str, Field(max_length=1024)]


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)


class OperatorStamp(_Strict):
    """One cluster-wide operator key as the sender holds it (engine.core.operator_state.Stamped)."""

    value: dict[_Name, _Text | float | int | bool | None] = Field(max_length=16)
    version: int = Field(ge=0)
    voter: str = Field(max_length=64)
    at: float
    by: str | None = Field(None, max_length=128)


class ServiceVerdict(_Strict):
    active: str = Field(max_length=64)
    epoch: int = Field(ge=0)
    sites: dict[str, HealthName] = Field(max_length=16)
    lag_s: float | None = Field(None, ge=0)
    shared_down: list[str] = Field(default_factory=list, max_length=64)
    paused: bool = False
    drill: str | None = Field(None, max_length=128, description="a full drill under way, announced")
    runbook: str | None = Field(None, max_length=128, description="an operation this voter is running")
    halted: str | None = Field(None, max_length=128, description=(
        "an operation of this service this voter holds halted (it still owns the databases until retried or "
        "aborted); left out when null"))
    primary_writable: bool | None = Field(None, description=(
        "sent by an engine of the active site about its local primary: true writable, false down or read-only "
        "(the write lease given up, see engine.core.lease_rules), null unknown or not this engine's to say; "
        "left out when null, so older peers still parse the verdict"))
    operator: dict[Literal["pause", "breaker", "arm", "drill_lock", "drift_ack"], OperatorStamp] | None = Field(
        None, description=("the sender's cluster-wide operator state (engine.core.operator_state), each key with "
                           "its version; left out when null, so older peers still parse the verdict"))


class Echo(_Strict):
    """What the sender last received from one peer: that peer's process nonce and send stamp (the peer's
    monotonic clock), and how long before this verdict was made the sender received it (its own clock).
    ``boot``/``sent_mono`` are null when the sender never heard this peer since it started (``silent_s``
    then counts from the sender's start). The self-fencing lease (engine.core.lease_echo)."""

    boot: str | None = Field(None, max_length=64)
    sent_mono: float | None = None
    silent_s: float = Field(ge=0, le=10 * 365 * 86400)


class Verdict(_Strict):
    v: Literal[1] = 1
    sender: str = Field(max_length=64)
    site: str = Field(max_length=64)
    role: Literal["engine", "witness"]
    boot: str = Field(max_length=64, description="random per process start")
    seq: int = Field(ge=0)
    at: float = Field(description="sender's wall time when it made the verdict")
    interval: float = Field(gt=0, le=3600, description="how often the sender sends")
    services: dict[str, ServiceVerdict] = Field(max_length=256)
    hears: list[str] = Field(default_factory=list, max_length=64, description=(
        "the voters whose verdicts the sender holds fresh (quorum and status; the lease uses echoes)"))
    sent_mono: float | None = Field(None, description=(
        "the sender's monotonic clock when it made the verdict: echoed back by its peers, it renews the sender's "
        "self-fencing lease; left out by older peers"))
    echoes: dict[Annotated[str, Field(max_length=64)], Echo] = Field(default_factory=dict, max_length=64, description=(
        "per peer the sender has a record of: the echo of that peer's newest verdict and how long ago it arrived"))
