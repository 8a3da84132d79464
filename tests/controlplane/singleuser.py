"""A stand-in for jupyterhub-singleuser in user pods: answers HTTP on the port KubeSpawner chose.

The real single-user server (Jupyter Server) is not what jdr talks to; the hub only needs the server to
answer HTTP (any non-5xx) at its URL. Listens on 127.0.0.1 at the port of JUPYTERHUB_SERVICE_URL
(or --port=N), serves 200 for every GET, and exits cleanly on SIGTERM.
"""

from __future__ import annotations

import http.server
import os
import signal
import sys
import threading
import urllib.parse


def main() -> None:
    port = None
    for a in sys.argv[1:]:
        if a.startswith("--port="):
            port = int(a.split("=", 1)[1])
    url = os.environ.get("JUPYTERHUB_SERVICE_URL")
    if port is None and url:
        port = urllib.parse.urlparse(url).port
    port = port or 8888
    user = os.environ.get("JUPYTERHUB_USER", "?")

    class H(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            body = f'{{"jdr-test-singleuser": "{user}"}}'.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
    print(f"jdr test singleuser server for {user} on 127.0.0.1:{port}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
