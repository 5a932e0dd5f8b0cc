"""PostgreSQL: pool lifecycle, named queries, migrations, the embedded server, table names."""
