"""The gateway's database: SQLAlchemy 2 tables, the async engine, and Alembic migrations (bridge/migrations)."""
