"""Background jobs: the export job queue and its workers."""
