"""A Flask (Werkzeug) app behind the gateway in the differential tests.

Every answer names the area Werkzeug's router dispatched to and the path it routed on:
`RESOURCE:admin:<path>` from the `/admin/<path:p>` view, `RESOURCE:intranet:<path>` from any
view of the `intranet.test` host, `RESOURCE:public:<path>` from the catch-all. Hosts are
matched by Werkzeug itself (`host_matching`), as a multi-tenant Flask app does.

Usage: python3 flask_app.py PORT
"""

import logging
import sys

from flask import Flask, request

app = Flask(__name__, static_folder=None, host_matching=True)


def report(area):
    return f"RESOURCE:{area}:{request.path}\n", 200, {"Content-Type": "text/plain"}


@app.route("/", host="intranet.test", defaults={"p": ""})
@app.route("/<path:p>", host="intranet.test")
def intranet(p):
    return report("intranet")


@app.route("/admin/", host="<h>", defaults={"p": ""})
@app.route("/admin/<path:p>", host="<h>")
def admin(h, p):
    return report("admin")


@app.route("/", host="<h>", defaults={"p": ""})
@app.route("/<path:p>", host="<h>")
def public(h, p):
    return report("public")


if __name__ == "__main__":
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app.run(host="127.0.0.1", port=int(sys.argv[1]), threaded=True)
