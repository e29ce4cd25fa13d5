"""failover-engine: decides when a two-cloud service must fail over, does it, and proves it worked.

Layout: ``engine.config`` (the YAML model), pure decision modules (``health``, ``decide``,
``schedule``, ``clock``, ``model``) that import no I/O library, and the asyncio shell
(``scheduler``, ``journal``, ``daemon``, ``api``, ``cli``) that wires probes and actions to them.
"""

__version__ = "0.1.0"
