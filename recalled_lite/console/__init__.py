"""The web console at /console/: server-rendered pages over the API's own functions.

Sign in with an API key (``signin.py``); the browser keeps only a random session id
(``sessions.py``). Each page applies the key's scopes and organization wall by calling the
same functions as the API handlers (``guard.py`` explains how). Templates are in
``templates/``, the stylesheet and the one small script in ``static/``. docs/console.md is
the user's guide.
"""
