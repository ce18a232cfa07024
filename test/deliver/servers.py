#!/usr/bin/env python3
"""Loopback servers for test/deliver.sh, written with the standard library
and Debian's python3-aiosmtpd, not by schedphi:

  servers.py smtp  PORTFILE CERT KEY OUTDIR   SMTP that requires STARTTLS and AUTH
  servers.py https PORTFILE CERT KEY OUTDIR   HTTPS that takes JSON POSTs

Each binds 127.0.0.1 on a free port, writes the port to PORTFILE, and
stores what it receives in OUTDIR (one file per message, with whether TLS
was in use, and for HTTPS the Authorization header) for the test to read.
"""
import asyncio
import http.server
import json
import os
import ssl
import sys
import threading
import time


def ctx(cert, key):
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    c.minimum_version = ssl.TLSVersion.TLSv1_2
    c.load_cert_chain(cert, key)
    return c


def write_port(path, port):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.rename(tmp, path)


def smtp(portfile, cert, key, out):
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    # the vendor's credentials, as the test's auth file holds them
    def authenticator(server, session, envelope, mechanism, auth_data):
        good = (isinstance(auth_data, LoginPassword) and auth_data.login == b"clinic"
                and auth_data.password == b"synthetic-password-42")
        return AuthResult(success=good, auth_data=auth_data if good else None)

    count = [0]

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            count[0] += 1
            with open(os.path.join(out, "mail-%d.json" % count[0]), "w") as f:
                json.dump({"tls": session.ssl is not None, "from": envelope.mail_from,
                           "login": (session.auth_data.login.decode()
                                     if isinstance(getattr(session, "auth_data", None), LoginPassword) else None),
                           "to": envelope.rcpt_tos,
                           "data": envelope.content.decode("utf-8", "replace")}, f)
            return "250 Message accepted for delivery"

    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    c = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=ctx(cert, key),
                   require_starttls=True, authenticator=authenticator, auth_required=True,
                   auth_require_tls=True, ready_timeout=10)
    c.start()
    write_port(portfile, port)
    try:
        while True:
            time.sleep(3600)
    finally:
        c.stop()


def https(portfile, cert, key, out):
    count = [0]
    lock = threading.Lock()

    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n)
            with lock:
                count[0] += 1
                k = count[0]
            with open(os.path.join(out, "post-%d.json" % k), "w") as f:
                json.dump({"path": self.path, "auth": self.headers.get("Authorization"),
                           "type": self.headers.get("Content-Type"),
                           "json": json.loads(body.decode("utf-8"))}, f)
            answer = json.dumps({"id": "V-%d" % k}).encode()
            self.send_response(201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.socket = ctx(cert, key).wrap_socket(srv.socket, server_side=True)
    write_port(portfile, srv.server_address[1])
    srv.serve_forever()


if __name__ == "__main__":
    mode, portfile, cert, key, out = sys.argv[1:6]
    {"smtp": smtp, "https": https}[mode](portfile, cert, key, out)
