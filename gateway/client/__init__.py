"""Command-line clients of a gateway's API: ``push`` (a CSV file as Exchange-style batches) and ``pull``."""
