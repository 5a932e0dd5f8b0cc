"""Background work: the job queue (``queue``), the kinds of job it runs (``exports``: the export snapshot;
``erasure``: erasing identities, gateway.privacy;
``segment_jobs``: evaluating segment definitions, gateway.segmentation), and the periodic sweeps (``sweepers``)."""
