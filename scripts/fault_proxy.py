"""A loopback HTTP proxy in front of the local emulator, for fault tests and benchmarks.

It forwards every request to --upstream, after --latency-ms, and can answer every --every'th
request with a fault instead, cycling through --faults:
  throttle  the service's own throttling error (ThrottlingException, Throttling, SlowDown)
  500       an internal error
  timeout   no answer for --hang-seconds, then the connection closes
  drop      the connection closes at once, with no answer
  late      the request reaches the emulator, then the connection closes before the answer
            (the caller cannot tell whether its call took effect)
With --write-log it appends the arrival time of each Secrets Manager write it forwards and
the emulator accepts, one a line;
with --fault-log, the kind of each fault it injects.
It prints its port on the first line of standard output. Standard library only.
"""

import argparse
import http.client
import itertools
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WRITES = {
    "CreateSecret",
    "PutSecretValue",
    "UpdateSecretVersionStage",
    "RestoreSecret",
    "DeleteSecret",
    "RemoveRegionsFromReplication",
}
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


class Faults:
    def __init__(self, every, kinds, log):
        self.every = every
        self.kinds = itertools.cycle(kinds) if kinds else None
        self.count = 0
        self.log = log
        self.lock = threading.Lock()

    def next(self):
        """The fault for this request, or None."""
        with self.lock:
            self.count += 1
            if not (self.every and self.kinds and self.count % self.every == 0):
                return None
            kind = next(self.kinds)
            if self.log:
                self.log.write(kind + "\n")
                self.log.flush()
            return kind


def throttle_reply(headers):
    """(status, content type, body) of a throttling error in the protocol of the service."""
    target = headers.get("X-Amz-Target", "")
    if target:
        body = b'{"__type":"ThrottlingException","message":"Rate exceeded"}'
        return 400, "application/x-amz-json-1.1", body
    if headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
        body = (
            b"<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>"
            b"<Message>Rate exceeded</Message></Error><RequestId>f</RequestId></ErrorResponse>"
        )
        return 400, "text/xml", body
    body = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
    return 503, "application/xml", body


def make_handler(options, faults, write_log, write_lock):
    upstream = urllib.parse.urlsplit(options.upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def handle_any(self):
            self.arrived = time.monotonic()
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            fault = faults.next()
            if fault == "drop":
                self.close_now()
                return
            if fault == "timeout":
                time.sleep(options.hang_seconds)
                self.close_now()
                return
            if options.latency_ms:
                time.sleep(options.latency_ms / 1000)
            if fault == "throttle":
                self.reply(*throttle_reply(self.headers))
                return
            if fault == "500":
                self.reply(500, "application/xml", b"<Error><Code>InternalError</Code></Error>")
                return
            self.forward(body, answer=fault != "late")
            if fault == "late":
                self.close_now()

        def close_now(self):
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def reply(self, status, content_type, body):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def forward(self, body, answer=True):
            target = self.headers.get("X-Amz-Target", "")
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
            try:
                connection.request(self.command, self.path, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
            finally:
                connection.close()
            if write_log and target.split(".")[-1] in WRITES and response.status < 300:
                with write_lock:
                    write_log.write(f"{self.arrived:.6f} {target.split('.')[-1]}\n")
                    write_log.flush()
            if not answer:
                return
            self.send_response(response.status)
            for key, value in response.getheaders():
                if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT of the emulator")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--every", type=int, default=0, help="fault every n-th request; 0: none")
    parser.add_argument("--faults", default="", help="comma-separated: throttle,500,timeout,drop,late")
    parser.add_argument("--hang-seconds", type=float, default=3)
    parser.add_argument("--write-log", help="file to append Secrets Manager write times to")
    parser.add_argument("--fault-log", help="file to append the kind of each fault to")
    options = parser.parse_args()

    if urllib.parse.urlsplit(options.upstream).hostname not in ("127.0.0.1", "localhost"):
        sys.exit("the upstream must be on loopback")
    kinds = [kind for kind in options.faults.split(",") if kind]
    write_log = open(options.write_log, "a", encoding="utf-8") if options.write_log else None
    fault_log = open(options.fault_log, "a", encoding="utf-8") if options.fault_log else None
    faults = Faults(options.every, kinds, fault_log)
    handler = make_handler(options, faults, write_log, threading.Lock())
    server = ThreadingHTTPServer(("127.0.0.1", options.port), handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
