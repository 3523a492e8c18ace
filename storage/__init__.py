"""What we keep: settings, the database engine, table models, encryption of secrets, migrations.

Nothing here does work at import time: call `get_settings()` and `get_engine()`.
"""
