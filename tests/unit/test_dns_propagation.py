"""Every provider type has a worst-case propagation figure with its source."""

from __future__ import annotations

import typing

from actions.dns import PROPAGATION, propagation_worst_s
from engine.config.dns import ProviderConfig


def test_every_provider_type_has_a_figure_and_a_source() -> None:
    """Each ``provider.type`` of the config union has a non-negative figure, a source and a note."""
    union = typing.get_args(typing.get_args(ProviderConfig)[0])
    types = {typing.get_args(model.model_fields["type"].annotation)[0] for model in union}
    assert types == set(PROPAGATION)
    for kind in types:
        figure = PROPAGATION[kind]
        assert propagation_worst_s(kind) == figure.worst_s >= 0 and figure.source and figure.note
        assert figure.documented == figure.source.startswith(("http", "RFC"))
