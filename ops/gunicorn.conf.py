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
# workers x threads = uploads (PATCH requests) served at once.  The work per
# request is mostly waiting on the network and the disk, so a few processes
# with many threads each go far; more processes mainly add CPU for hashing.
worker_class = "gthread"
workers = int(os.environ.get("DQRXFER_WORKERS", "4"))
threads = int(os.environ.get("DQRXFER_THREADS", "16"))
# Connections kept per worker (in flight + idle keep-alive).
worker_connections = 1000
# Each worker listens on a socket of its own (SO_REUSEPORT), so the kernel
# spreads connections over the workers.  On one shared socket the worker that
# wakes first accepts every connection that arrives together: a few uploading
# sites would all land in one worker, whose threads then take turns on one
# GIL while the other workers idle.  A worker that exits (reload, restart)
# drops the connections still queued on its socket; clients retry, and with
# ``sysctl net.ipv4.tcp_migrate_req=1`` (Linux 5.14+) the kernel hands them to
# the other workers instead.  Not for a unix socket (every worker would take
# the same path over); ``serve`` sets this too.
reuse_port = not bind.startswith("unix:")

# --- timeouts ----------------------------------------------------------------
# ``timeout`` is the worker heartbeat, not a request limit: a gthread worker's
# main loop reports every second whatever its threads are doing, so an upload
# taking hours is fine.  A worker silent for this long is wedged and restarted.
timeout = 120
# On stop or reload, requests in flight get this long to finish; an upload cut
# here is resumed by the client from the bytes already stored.
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
