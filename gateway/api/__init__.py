"""HTTP handlers, one module per group of routes. Handlers parse the request and shape the answer; the
queries and the rules they run live in the domain packages (ingest, audience, jobs, auth), never here."""
