"""Management commands of django-rwsplit."""
