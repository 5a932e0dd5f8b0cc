"""Privacy: erasing a person from everything an endpoint holds, the suppression list, identities hashed at rest.

- ``identities``: what an erasure or a suppression is given (a JSON list, or a streamed CSV body read by
  gateway.ingest's parser), each identity in every form a segment may store it (as sent, lower-cased, hashed:
  gateway.ingest.upload.normalise_identity is the one rule), and the SHA-256 the audit keeps.
- ``erase``: an erasure's stored request, its work segment by segment (members, open REPLACE staging, export
  snapshot tables of jobs made before migration 0018; the SQL function ``privacy_erase_segment``) and in
  stored rejected rows, and its audit rows. The job that runs it is gateway.jobs.erasure (a kind of the
  generic queue), which also deletes the export files holding an identity (gateway.jobs.export_files.file_holds)
  and rewrites the ``/v1`` export jobs' snapshot files without it (export_files.rewrite_without).
- ``suppressions``: the endpoint's suppression list (pushes skip it: gateway.ingest.apply.drop_suppressed).
- ``hashing``: a segment's ``identityHashing`` setting, changed only while it holds no data.
"""
