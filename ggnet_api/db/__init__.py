"""The API's SQLite database: database.py runs every statement, schema.py makes the
tables, stats.py keeps and reads the aggregates /metrics reports."""
