"""The failover runbook's step budgets an operator may tune (``services.<name>.policy.steps``).

Each budget bounds one step the traffic waits for: ``timeout`` per attempt and ``attempts`` before the
step fails and the runbook halts. :func:`engine.core.steps.failover_plan` reads them, so the runner and
the worst-case RTO (:mod:`engine.core.rto`) see the same numbers. The defaults are generous (a slow
provider API, a slow promotion); a deployment that promises a short ``rto_slo`` sets what its provider
and database really need, and ``check-config`` shows what the budgets cost.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from engine.config.base import HOUR, Duration, Model, positive


class StepBudget(Model):
    """Timeout of one attempt and how many attempts a step gets."""

    timeout: Annotated[Duration, positive(HOUR)] = Field(description="the longest one attempt may take")
    attempts: int = Field(ge=1, le=10, description="attempts before the step fails")


class StepBudgets(Model):
    """The tunable bounds of the failover steps traffic waits for (fence and verify_dns follow
    ``database.fencing.timeout`` and ``dns.verify.deadline``; promote's timeout follows
    ``database.promotion.timeout``)."""

    precheck: StepBudget = Field(default_factory=lambda: StepBudget(timeout=30.0, attempts=3), description=(
        "reading the provider's current answer before the move"))
    promote_attempts: int = Field(3, ge=1, le=10, description="attempts at promoting the standby")
    shift_dns: StepBudget = Field(default_factory=lambda: StepBudget(timeout=60.0, attempts=4), description=(
        "the compare-and-set write of the records at the provider"))
