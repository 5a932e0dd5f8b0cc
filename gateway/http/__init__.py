"""HTTP plumbing shared by the handlers: middleware, answers, ranges, CSV streaming out, slow clients, drain."""
