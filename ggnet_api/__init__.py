"""ggnet's Flask API: the app factory, its blueprints, database, jobs and metrics."""
