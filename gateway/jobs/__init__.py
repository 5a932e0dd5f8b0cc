"""Background work: the job queue (``queue``), the kinds of job it runs (``exports``: the export snapshot;
``erasure``: erasing identities, gateway.privacy), and the periodic sweeps (``sweepers``)."""
