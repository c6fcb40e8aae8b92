"""The command-line programs, each a thin layer over the client library.

- :mod:`~dqrxfer.cli.upload`: ``dqr-upload``, report files, tarballs or
  directories into one report (over :mod:`dqrxfer.upload`);
- :mod:`~dqrxfer.cli.batch`: ``dqr-batch-upload``, every report of a tree the
  server does not have yet (over :mod:`dqrxfer.batch`);
- :mod:`~dqrxfer.cli.ping`: ``dqr-ping``, log in, ping and compare the clocks
  (over :mod:`dqrxfer.ping`);
- :mod:`~dqrxfer.cli.common`: what they share (options, logging, the session,
  exit codes).
"""
