"""The Redis side of the cluster: keys, messages, the bus, membership, the ring, fencing locks, the catalogue."""
