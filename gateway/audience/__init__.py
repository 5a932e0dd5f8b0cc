"""Segments, their metadata and members, the change feed, purge, endpoints."""
