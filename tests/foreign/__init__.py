"""Other systems' real clients (Celery in its own virtual environment), driven by the tests."""
