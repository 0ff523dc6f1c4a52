"""Scheduling: the story of a tick (scheduler), ownership, planning, firing, outcomes, the ledger and its audit."""
