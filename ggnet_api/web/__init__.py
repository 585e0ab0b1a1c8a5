"""The operator's web console, served by the API itself under /ui.

Server-rendered pages (ggnet_api/templates/ui/) that read without JavaScript; the
live parts (the machines table, a job's log) use htmx and an EventSource, both served
from this app (static/vendor/, filled from the pinned npm lock by
scripts/web_assets.sh; no CDN).  Sign-in, sessions and CSRF: sessions.py.  The
pages reuse the API's own views and job starts: nothing is derived twice.
"""

from ggnet_api.web.views import bp

__all__ = ["bp"]
