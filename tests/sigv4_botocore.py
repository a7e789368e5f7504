"""Signs requests with botocore's own S3 SigV4 signer, for tests/bindings/s3_test.lua.

Reads a JSON list of requests on stdin; each has method, host, path (raw,
unencoded), params (list of [name, value]), headers (list of [name, value]),
body, date (20150830T123600Z), access_key, secret_key, region, and
optionally token. Writes a JSON list of {authorization, creq, sts}.
botocore encodes the path and the query itself, independently of pgvault.
"""
import datetime
import json
import sys
from urllib.parse import quote

import awscli  # noqa: F401  (Debian's awscli vendors botocore)
import botocore.auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials


class FixedClock:
    now = None

    @classmethod
    def utcnow(cls):
        return cls.now


class ClockModule:
    datetime = FixedClock


botocore.auth.datetime = ClockModule


def sign(req):
    FixedClock.now = datetime.datetime.strptime(req["date"], "%Y%m%dT%H%M%SZ")
    url = "http://" + req["host"] + quote(req["path"], safe="/~")
    aws_req = AWSRequest(method=req["method"], url=url, data=req["body"].encode("utf-8"),
                         params={k: v for k, v in req["params"]})
    for name, value in req["headers"]:
        aws_req.headers[name] = value
    creds = Credentials(req["access_key"], req["secret_key"], req.get("token"))
    signer = botocore.auth.S3SigV4Auth(creds, "s3", req["region"])
    signer.add_auth(aws_req)
    authorization = aws_req.headers["Authorization"]
    del aws_req.headers["Authorization"]
    creq = signer.canonical_request(aws_req)
    return {
        "authorization": authorization,
        "creq": creq,
        "sts": signer.string_to_sign(aws_req, creq),
        "amz_date": aws_req.headers["X-Amz-Date"],
    }


json.dump([sign(r) for r in json.load(sys.stdin)], sys.stdout)
