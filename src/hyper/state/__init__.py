"""hyperd's durable state: SQLite, one file under the state dir."""
