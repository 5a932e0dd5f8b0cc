"""HTTP plumbing shared by the handlers: middleware, answers, paging, ranges, CSV streaming out, slow clients, drain."""
