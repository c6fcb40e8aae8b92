"""gunicorn settings for the dqrxfer server behind Apache or nginx.

Install as /etc/dqrxfer/gunicorn.conf.py.  Two ways to use it:

* ``dqrxfer-server serve --config /etc/dqrxfer/server.toml --gunicorn-config
  /etc/dqrxfer/gunicorn.conf.py --host 127.0.0.1 --port 8080`` (what the systemd
  unit runs): ``serve`` checks the configuration and the database schema before
  it forks, and its ``--host``/``--port`` decide the address (``bind`` below is
  ignored then);
* ``gunicorn -c /etc/dqrxfer/gunicorn.conf.py``: plain gunicorn, the app then
  reads its settings from ``$DQRXFER_CONFIG`` (``wsgi_app`` below).

Why these values: an upload is a sequence of long PATCH requests that each hold
one thread while their body streams to disk, at whatever rate the link from
the site allows.  Threads (gthread), not processes, carry that waiting.
"""

import os

# Used by plain ``gunicorn -c`` only.
wsgi_app = "dqrxfer.server.app:create_app()"
bind = os.environ.get("DQRXFER_BIND", "127.0.0.1:8080")

# --- workers -----------------------------------------------------------------
# dqrxfer's worker: gunicorn's threaded worker (gthread) that takes a thread
# only for a request that has arrived, keeps 16 threads of each worker for
# requests without a body (pings, the read API, HEAD, creations) and accepts
# only with a thread free (dqrxfer/server/worker.py).  A PATCH holds a thread
# while its body streams in, minutes over a slow link, so the pool is large:
# workers x (threads - 16) request bodies at once (here 4 x 304 = 1,216), each
# costing about 0.13 MiB and 3 open files, next to no CPU while it waits
# (docs/operators/scaling.md for sizing).  More processes mainly add CPU for
# hashing and the GIL-bound Python work of many small requests.
worker_class = "dqrxfer.server.worker.UploadWorker"
workers = int(os.environ.get("DQRXFER_WORKERS", "4"))
threads = int(os.environ.get("DQRXFER_THREADS", "320"))
# Connections kept per worker (in flight, waiting for a thread, idle keep-alive).
worker_connections = 2000
# One listening socket shared by the workers: a worker whose threads are all
# busy stops accepting, so an idle one takes the next connection.  With a
# socket per worker (reuse_port) the kernel would pick the worker by a hash of
# the connection, not by its load: 24 slow uploads left pings unanswered.
reuse_port = False

# --- timeouts ----------------------------------------------------------------
# ``timeout`` is the worker heartbeat, not a request limit: a gthread worker's
# main loop reports every second whatever its threads are doing, so an upload
# taking hours is fine.  A worker silent for this long is wedged and restarted.
timeout = 120
# A client has this long to send a request's line and headers; a connection
# that sends nothing is closed then (``header_timeout`` in server.toml; plain
# ``gunicorn -c`` uses 10 s).  Request bodies may stall for ``read_timeout``.
#
# On stop (SIGTERM, ``systemctl stop``) or reload, a worker stops listening,
# closes idle keep-alive connections (within 2 s) and connections that never
# sent a request, and ends request bodies in flight: the bytes received are
# kept, the client is answered 400 and resumes from Upload-Offset.  Requests
# past their body (finishing an upload) get this long to finish.
graceful_timeout = 60
# Longer than the front end's idle time for pooled backend connections
# (Apache ``ttl=60`` in ProxyPass, nginx ``keepalive_timeout 60s`` in the
# upstream): the proxy must close an idle connection before gunicorn does, or a
# request sent on a connection gunicorn just closed fails with a 502.
keepalive = 75
# No periodic worker recycling: it would cut long uploads for no gain.
max_requests = 0
# The heartbeat file on tmpfs: a slow /tmp (or a full one) must not stall workers.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# --- the proxy in front -------------------------------------------------------
# X-Forwarded-* headers (https URLs in tus Location headers and report links)
# are honoured by the app alone, from the config's trusted_proxies (by default
# the proxies [auth] trusts); ``serve`` turns gunicorn's own handling
# (forwarded_allow_ips) off, so there is one list to keep.

# --- gunicorn 25+ control socket ---------------------------------------------
# By default gunicorn opens a control socket under $XDG_RUNTIME_DIR or
# $HOME/.gunicorn; a service account has neither writable, and nothing here uses
# it (``serve`` sets this too).
control_socket_disable = True

# --- logging -------------------------------------------------------------------
# Everything to stdout/stderr, for journald.  Access lines carry the principal
# Apache passed and the request time in ms; never headers with credentials.
accesslog = "-"
errorlog = "-"
# gunicorn's logger computing only the atoms access_log_format names: the same
# lines for less work per request (dqrxfer/server/accesslog.py).
logger_class = "dqrxfer.server.accesslog.AccessLogger"
loglevel = os.environ.get("DQRXFER_LOGLEVEL", "info")
access_log_format = (
    '%(h)s %({x-remote-user}i)s "%(r)s" %(s)s %(b)s %(M)sms "%({upload-offset}i)s" "%(a)s"'
)
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        # The LVK tools' style: LEVEL:name:message (journald adds the time).
        "plain": {"format": "%(levelname)s:%(name)s:%(message)s"},
        "access": {"format": "%(message)s"},
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "stream": "ext://sys.stderr",
        },
        "access": {
            "class": "logging.StreamHandler",
            "formatter": "access",
            "stream": "ext://sys.stdout",
        },
    },
    "root": {"level": "INFO", "handlers": ["stderr"]},
    "loggers": {
        "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
        "dqrxfer": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
    },
}
