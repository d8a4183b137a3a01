"""hyperd: the host daemon, its REST API, and the state it owns."""
