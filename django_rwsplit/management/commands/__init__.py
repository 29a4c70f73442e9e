"""``manage.py`` commands: ``replica_health``."""
