"""The AWS emulator for tests: moto's server (DynamoDB, SQS, SSM…) on 127.0.0.1.

DynamoDB applies each transaction atomically and serializably; moto applies a
request's reads and writes without a lock, so two concurrent transactions on
one item can lose an update. Serving DynamoDB requests one at a time restores
that guarantee; other services (SQS long polls) stay concurrent.

Usage: emulator.py PORT
"""

import os
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

port = int(sys.argv[1])
os.environ.setdefault("MOTO_PORT", str(port))
moto = DomainDispatcherApplication(create_backend_app)
dynamodb = threading.Lock()


def app(environ, start_response):
    if environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB"):
        with dynamodb:
            return list(moto(environ, start_response))
    return moto(environ, start_response)


run_simple("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)
