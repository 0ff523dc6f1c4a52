"""A webhook receiver: logs deliveries, verifies signatures and fences, counts duplicates."""
