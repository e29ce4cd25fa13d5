"""Which runbook a move runs: the step table from :mod:`engine.core.steps` bound to its step functions.

:class:`Runbooks` is the coordinator's steps factory: a planned move (switchover, a failback or full
drill with both sites healthy) runs the switchover runbook, any other the failover runbook.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from engine.core.operations import fence_required, planned
from engine.core.steps import StepSpec, failover_plan, switchover_plan
from engine.runtime.context import RuntimeContext
from engine.runtime.failover import FailoverSteps, LeaseRemaining
from engine.runtime.runner import StepFn
from engine.runtime.service import ServiceRuntime
from engine.runtime.switchover import SwitchoverSteps


class Runbooks:
    def __init__(self, ctx: RuntimeContext, lease_remaining: LeaseRemaining) -> None:
        self.ctx = ctx
        self.lease_remaining = lease_remaining

    def __call__(self, rt: ServiceRuntime) -> tuple[Sequence[StepSpec], Mapping[str, StepFn]]:
        if planned(rt.operation):
            plan = switchover_plan(rt.config)
            steps: FailoverSteps = SwitchoverSteps(self.ctx, rt, self.lease_remaining)
        else:
            plan = failover_plan(rt.config, lease=rt.lease, require_fence=fence_required(rt.operation))
            steps = FailoverSteps(self.ctx, rt, self.lease_remaining)
        return plan, {spec.name: getattr(steps, spec.name) for spec in plan}
