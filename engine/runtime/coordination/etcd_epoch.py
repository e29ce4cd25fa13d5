"""The epoch of a move claimed in etcd before the DNS shift (``coordination.type: etcd``).

:func:`claiming_epoch` wraps the coordinator's steps factory: the runbook's ``shift_dns`` step first
moves ``services/{service}/epoch`` to the operation's ``epoch_to`` by a transaction comparing the key's
``mod_revision`` with the one just read (a linearizable compare-and-set), the operation's id as the
token; only the winner goes on to the DNS provider's own compare-and-set, which stays behind it. A
claim whose answer was lost is retried with the same token and recognised as ours; a claim someone
else made at ``epoch_to`` or later stands this operation down. Two engines moving at once: one wins
in etcd, the other never touches DNS.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from engine.core.coordination import Epoch, EpochMove, Holder, Unavailable
from engine.core.operations import Operation, Outcome, StepFailed
from engine.core.steps import StepSpec
from engine.runtime.coordination.etcd import EtcdCoordination
from engine.runtime.runner import StepFn
from engine.runtime.service import ServiceRuntime

StepsFactory = Callable[[ServiceRuntime], tuple[Sequence[StepSpec], Mapping[str, StepFn]]]


async def claim(backend: EtcdCoordination, op: Operation, by: Holder) -> Outcome | None:
    """None when etcd's epoch of ``op.service`` is (now) this operation's ``epoch_to``; else the stand-down.
    :class:`StepFailed` (retried) when etcd gives no answer: the outcome is unknown, the same token retries."""
    current = await backend.read_epoch(op.service)
    if isinstance(current, Unavailable):
        raise StepFailed(f"etcd epoch not read: {current.reason}")
    if current.token == op.id and current.number == op.epoch_to:
        return None
    if current.number >= op.epoch_to:
        return Outcome(f"etcd epoch {current.number} already claimed by {current.moved_by} ({current.site}): another "
                       "operation won; not touching DNS", {"etcd_epoch": current.number, "etcd_site": current.site},
                       stand_down=True)
    # etcd may be behind the engines (a first move after switching to etcd): the claim names our epoch number
    base = Epoch(op.epoch_to - 1, current.site, current.moved_by, current.token, current.revision)
    move = await backend.move_epoch(op.service, base, op.target, by, op.id)
    if isinstance(move, Unavailable):
        raise StepFailed(f"etcd epoch claim unanswered: {move.reason}")
    assert isinstance(move, EpochMove)
    if move.won:
        return None
    return Outcome(f"etcd: {move.message}; not touching DNS",
                   {"etcd_epoch": move.current.number, "etcd_site": move.current.site}, stand_down=True)


def claiming_epoch(factory: StepsFactory, backend: EtcdCoordination, by: Holder) -> StepsFactory:
    """``factory`` with every ``shift_dns`` step preceded by the etcd claim of the operation's epoch."""

    def build(rt: ServiceRuntime) -> tuple[Sequence[StepSpec], Mapping[str, StepFn]]:
        specs, steps = factory(rt)
        shift = steps.get("shift_dns")
        if shift is None or rt.config.dns is None:
            return specs, steps

        async def shift_dns(op: Operation) -> Outcome:
            refused = await claim(backend, op, by)
            if refused is not None:
                return refused
            outcome = await shift(op)
            return Outcome(f"etcd epoch {op.epoch_to} claimed; {outcome.summary}",
                           {**outcome.data, "etcd_epoch": op.epoch_to}, outcome.skipped, outcome.stand_down)

        return specs, {**steps, "shift_dns": shift_dns}

    return build
