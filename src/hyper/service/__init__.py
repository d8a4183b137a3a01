"""Use cases shared by every front end (the CLI now; hyperd, runv and CRI later)."""
