#!/usr/bin/env python3
"""An HTTP proxy that plays Amazon OpenSearch Service's request authentication in front
of a plain test OpenSearch: it recomputes each request's SigV4 signature with botocore
(AWS's own Python signer, independent of the Rust crates vismig signs with) and forwards
only requests whose signature matches; any other gets AWS's 403.

    sigv4_proxy.py --upstream http://127.0.0.1:9200 --region eu-west-1 \
        --access-key AKID...  (secret in SIGV4_PROXY_SECRET_KEY, token in SIGV4_PROXY_TOKEN)

Prints `listening HOST:PORT` on stdout once bound (port 0 picks a free one), then one
line per request on stderr: `verified METHOD TARGET` or `refused METHOD TARGET: why`.
Runs until killed.
"""

import argparse
import datetime
import hmac
import http.client
import http.server
import json
import os
import sys
import threading
import urllib.parse

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"
# AWS refuses a request signed more than 5 minutes away from its clock.
MAX_SKEW = datetime.timedelta(minutes=5)
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


class Refused(Exception):
    pass


def parse_authorization(value):
    """`AWS4-HMAC-SHA256 Credential=.., SignedHeaders=.., Signature=..` as a dict."""
    algorithm, _, rest = value.partition(" ")
    if algorithm != "AWS4-HMAC-SHA256":
        raise Refused(f"authorization is not AWS4-HMAC-SHA256 but {algorithm or 'empty'}")
    fields = {}
    for part in rest.split(","):
        key, _, val = part.strip().partition("=")
        fields[key] = val
    for key in ("Credential", "SignedHeaders", "Signature"):
        if not fields.get(key):
            raise Refused(f"authorization has no {key}")
    return fields


def expected_signature(args, method, target, headers, body, signed_headers, timestamp):
    """What botocore signs for this request, from the headers the client said it signed."""
    parts = urllib.parse.urlsplit(target)
    host = headers.get("host", "")
    # Only the headers the client listed: botocore signs every header it is given.
    to_sign = {}
    for name in signed_headers:
        value = headers.get_all(name)
        if value is None:
            raise Refused(f"signed header {name} is missing from the request")
        to_sign[name] = ",".join(value)
    request = AWSRequest(method=method, url=f"http://{host}{parts.path}", headers=to_sign, data=body)
    # The query as AWS canonicalises it: decoded, then each key and value encoded anew.
    request.params = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    request.context["timestamp"] = timestamp
    signer = SigV4Auth(Credentials(args.access_key, args.secret_key, args.token), args.service, args.region)
    canonical = signer.canonical_request(request)
    botocore_signed = signer.signed_headers(signer.headers_to_sign(request))
    if botocore_signed != ";".join(signed_headers):
        raise Refused(f"signed headers {';'.join(signed_headers)} are not botocore's {botocore_signed}")
    return signer.signature(signer.string_to_sign(request, canonical), request)


def verify(args, method, target, headers, body):
    auth = headers.get("authorization")
    if not auth:
        raise Refused("no authorization header (Missing Authentication Token)")
    fields = parse_authorization(auth)
    key, date, region, service, terminator = (fields["Credential"].split("/") + [""] * 5)[:5]
    if key != args.access_key:
        raise Refused("unknown access key (The security token included in the request is invalid)")
    if (region, service, terminator) != (args.region, args.service, "aws4_request"):
        raise Refused(f"credential scope {region}/{service}/{terminator} is not {args.region}/{args.service}/aws4_request")
    timestamp = headers.get("x-amz-date", "")
    try:
        signed_at = datetime.datetime.strptime(timestamp, SIGV4_TIMESTAMP).replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        raise Refused(f"x-amz-date {timestamp!r} is not a SigV4 timestamp") from None
    if abs(datetime.datetime.now(datetime.timezone.utc) - signed_at) > MAX_SKEW:
        raise Refused(f"signed at {timestamp}, more than 5 minutes from now")
    if timestamp[:8] != date:
        raise Refused(f"credential date {date} is not the date of x-amz-date {timestamp}")
    signed_headers = fields["SignedHeaders"].split(";")
    for required in ["host", "x-amz-date"] + (["x-amz-security-token"] if args.token else []):
        if required not in signed_headers:
            raise Refused(f"{required} is not signed")
    if args.token and headers.get("x-amz-security-token") != args.token:
        raise Refused("x-amz-security-token is not the session's token")
    want = expected_signature(args, method, target, headers, body, signed_headers, timestamp)
    if not hmac.compare_digest(want, fields["Signature"]):
        raise Refused("signature does not match (The request signature we calculated does not match the signature you provided)")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    local = threading.local()

    def log_message(self, *_):
        pass

    def note(self, line):
        sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def upstream(self):
        conn = getattr(self.local, "conn", None)
        if conn is None:
            parts = urllib.parse.urlsplit(self.server.args.upstream)
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
            self.local.conn = conn
        return conn

    def reply(self, status, headers, body):
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        try:
            verify(self.server.args, self.command, self.path, self.headers, body)
        except Refused as e:
            self.note(f"refused {self.command} {self.path}: {e}")
            message = json.dumps({"message": str(e)}).encode()
            self.reply(403, [("content-type", "application/json")], message)
            return
        self.note(f"verified {self.command} {self.path}")
        forward = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "authorization"}
        for attempt in (1, 2):
            conn = self.upstream()
            try:
                conn.request(self.command, self.path, body=body, headers=forward)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, OSError):
                # A kept-alive upstream connection the server closed: one fresh try.
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise
        self.reply(resp.status, resp.getheaders(), data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_any


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--upstream", required=True)
    p.add_argument("--region", required=True)
    p.add_argument("--service", default="es")
    p.add_argument("--access-key", required=True)
    args = p.parse_args()
    args.secret_key = os.environ["SIGV4_PROXY_SECRET_KEY"]
    args.token = os.environ.get("SIGV4_PROXY_TOKEN") or None
    host, _, port = args.listen.rpartition(":")
    server = http.server.ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    server.args = args
    print(f"listening {host}:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
