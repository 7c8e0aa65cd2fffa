"""tenantapp: a small multi-tenant FastAPI service used to demonstrate, test and benchmark testshard.

Organisations own users, projects, prompts, test sets, test cases and evaluation runs. Every tenant-owned table is
protected by PostgreSQL Row Level Security keyed on the ``app.current_organization`` setting, and the application
connects as a role that is neither a superuser nor the table owner, so the policies really apply.
"""

__version__ = "0.3.0"
