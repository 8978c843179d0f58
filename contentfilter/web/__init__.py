"""`contentfilter web`: the quarantine's web page.

Recipients reach their own held mail from a notice or digest link; admins log in to
search and decide. Server-rendered pages that work without JavaScript; every action
is a POST with a CSRF token (link previewers and mail scanners fetch every URL with
GET). The page runs in its own process, so the SMTP workers never wait on it.

`contentfilter.web.settings` (the `web:` section) imports nothing of the web stack,
so loading the config stays cheap for the other commands.
"""
