"""The seed workflow's app: a small HTTP server on port 8000."""

from http.server import BaseHTTPRequestHandler, HTTPServer

import six  # installed by `pip install -r requirements.txt` during the build


class Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"hello from my-app (six {six.__version__})\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


if __name__ == "__main__":
    HTTPServer(("0.0.0.0", 8000), Hello).serve_forever()
