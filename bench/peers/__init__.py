"""Peers the gateway is measured against (anchors), each a small program of its own."""
