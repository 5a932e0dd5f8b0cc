"""audience-gateway: exchange large audiences as CSV with Acoustic Exchange."""

__version__ = "0.1.0"
