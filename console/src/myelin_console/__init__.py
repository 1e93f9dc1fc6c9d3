"""Myelin's web console: one page that shows and tries every model the family services serve.

- `settings.py`: the typed settings (MYELIN_CONSOLE_*): the services' HTTP base URLs, the token.
- `app.py`: the Starlette app: the page and its assets, `/api/<family>/...` forwarded to the
  family's service with the bearer token added, `/api/families`, `/api/live`, `/api/curves`.
- `live.py`: the services' /metrics scraped into requests/s, latency quantiles and batch sizes.
- `curves.py`: training curves read from the model repository, when the console has it.
- `cli.py`: `myelin-console`, uvicorn on a socket bound up front.
- `static/`: the page (HTML, CSS, vanilla JS; canvas and SVG charts), nothing from a CDN.
"""

__version__ = "0.1.0"
