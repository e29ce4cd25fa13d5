"""Everything etcd mode changes in the daemon, built in one place (``coordination.type: etcd``).

The daemon asks :func:`etcd_mode` for the parts that differ from peer mode and wires them exactly where
it wires the peer-mode ones:

- ``peering``: :class:`~engine.runtime.coordination.etcd_peering.EtcdPeering` (votes as etcd keys);
- ``shared``: :class:`~engine.runtime.coordination.etcd_operator.EtcdOperatorState` (operator keys);
- ``lease``: :class:`~engine.runtime.coordination.etcd_lease.EtcdLeaseWatch` (the etcd write lease);
- ``steps``: the steps factory wrapped so ``shift_dns`` first claims the epoch in etcd
  (:func:`~engine.runtime.coordination.etcd_epoch.claiming_epoch`);
- ``lease_of``: the runbook's lease per service (:func:`~engine.runtime.coordination.etcd_lease.etcd_lease`).
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.config.lease import Lease
from engine.config.model import EngineConfig
from engine.core.clock import Clock
from engine.core.coordination import Holder
from engine.runtime.context import RuntimeContext
from engine.runtime.coordination.build import etcd_from_config
from engine.runtime.coordination.etcd import EtcdCoordination
from engine.runtime.coordination.etcd_epoch import StepsFactory, claiming_epoch
from engine.runtime.coordination.etcd_lease import EtcdLeaseWatch, etcd_lease
from engine.runtime.coordination.etcd_operator import EtcdOperatorState
from engine.runtime.coordination.etcd_peering import EtcdPeering


@dataclass
class EtcdMode:
    config: EngineConfig
    backend: EtcdCoordination
    peering: EtcdPeering
    shared: EtcdOperatorState
    lease: EtcdLeaseWatch

    @property
    def holder(self) -> Holder:
        return Holder(self.config.instance.site, self.config.instance.id)

    def steps(self, factory: StepsFactory) -> StepsFactory:
        return claiming_epoch(factory, self.backend, self.holder)

    def lease_of(self, service: str) -> Lease | None:
        return etcd_lease(self.config, service, self.config.coordination)

    async def close(self) -> None:
        await self.backend.close()


def etcd_mode(config: EngineConfig, ctx: RuntimeContext, clock: Clock) -> EtcdMode | None:
    """The etcd-mode parts, or None in peer mode."""
    if config.coordination.type != "etcd":
        return None
    backend = etcd_from_config(config.coordination, monotonic=clock.monotonic)
    peering = EtcdPeering(config, clock, backend)
    return EtcdMode(config, backend, peering, EtcdOperatorState(ctx, peering, backend),
                    EtcdLeaseWatch(ctx, peering, backend, config.coordination))
