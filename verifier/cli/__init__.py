"""The ``distillcert`` command line.

* :mod:`.main` — the parser, the conventions (``--json``, exit codes) and the registrar table;
* :mod:`.verify_cmds` — ``info``, ``verify``, ``vnncomp``, ``pac``;
* :mod:`.certify_cmds` — ``run``, ``certify``, ``check``.
"""
