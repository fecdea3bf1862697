"""One module per page; each has a ``render()`` that draws it (the sidebar and the error guard are app.py's)."""
