"""Actions the runbook takes: DNS shifts (``actions.dns``), database steps, consistency, notify."""
