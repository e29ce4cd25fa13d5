"""Coordination backends behind :class:`engine.core.coordination.Coordination`: ``etcd`` (this package's
:mod:`~engine.runtime.coordination.etcd`); the embedded ``peer`` backend follows."""
