"""Segmentation: definitions in a safe subset of PQL, segment jobs that build "Queries" audiences from
them, and the schedules that run those jobs.

Modules:
- ``pql``: the expression language: ``parse(text) -> Node`` (a small tree whose nodes carry their source
  position), ``ExpressionError(message, position)``, ``attributes_used(node)``, ``segments_used(node)``.
- ``compiler``: ``compile_predicate(node, ...) -> Compiled(sql, params)``: SQL text built only from the
  tree's shape; every literal, every attribute index and "now" is a bind parameter.
- ``profiles``: the rows a definition is evaluated over: one per identity of its sources, each attribute
  from the first source that has it non-empty (``mergePolicy: "firstSource"``).
- ``insegment``: what ``inSegment("…")`` reads (one rule for definitions, jobs, previews and export files),
  and the share lock a snapshot that reads members tables takes first (a REPLACE then waits for it).
- ``definitions``: create, read, change and delete definitions and their Queries audience.
- ``evaluate``: a segment job's work (build the audience, swap it in, count realized/existing/exited).
- ``segment_jobs``: create, read, list and cancel segment jobs (rows of the job queue, kind ``SegmentJob``).
- ``schedules``: cron schedules that create segment jobs.
- ``audiences``: every audience of an endpoint as the guide shows them (a view over segments and definitions),
  and which audiences one identity is in (``GET /api/audiences``, ``GET /api/search/members``).
- ``search``: the entity search string parsed into terms, and the ranked full-text search over audiences and
  definitions (``GET /api/search/entities``).
"""
