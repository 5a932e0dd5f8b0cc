"""Background work: the job queue (``queue``), the kinds of job it runs (``exports``: the export snapshot),
and the periodic sweeps (``sweepers``)."""
