"""Pushes in: request bodies, CSV parsing, column plans, rejects, upload history, ADD/REMOVE and replace."""
