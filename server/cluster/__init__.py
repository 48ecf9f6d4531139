"""Replicas: the replicator that keeps components in line with the store, the Redis bus, sync bases."""
