"""`fmnist sweep`: hyperparameter searches with Optuna, in any number of workers, on validation only.

Needs the `sweep` extra (optuna; SQLAlchemy and psycopg for a PostgreSQL storage).
"""
