"""Business logic on top of the CRUD layer. Services take a Session scoped to one tenant (see database.set_tenant)
and never commit: the caller (a request handler, the seed) owns the transaction."""
