# AEGIS warm start for Python agents (docs/adr/0012-warm-instances.md).
#
# The sandbox's command is `/usr/bin/python3 /opt/aegis/lib/prewarm.py ENTRYPOINT` (this file is bound read-only
# from the orchestrator's static dir). The interpreter starts while the instance waits in a pool; this shim imports
# nothing (os and sys are loaded by every interpreter start), tells the orchestrator it is ready, and blocks on the
# go socket (fd 63). On go it reads the execution id, closes the socket, makes the process look like
# `python3 ENTRYPOINT` (sys.argv, sys.orig_argv, sys.path[0], the __main__ module's globals) and runs the
# entrypoint's code in __main__, as the interpreter would. An uncaught exception is printed by sys.excepthook
# without this shim's frame, exit code 1, as in a normal run; SystemExit propagates untouched.


def _aegis_warm_start():
    import os
    import sys

    go = 63
    os.set_blocking(go, True)
    os.write(go, b"r")
    line = b""
    while not line.endswith(b"\n"):
        chunk = os.read(go, 256)
        if not chunk:
            break
        line += chunk
    os.close(go)
    if not line.endswith(b"\n"):
        os._exit(125)  # the orchestrator let go of the instance without running it
    execution_id = line[:-1].decode("utf-8")
    if os.environ.get("AEGIS_EXECUTION_ID") != execution_id:
        os.environ["AEGIS_EXECUTION_ID"] = execution_id

    entry = sys.argv[1]
    path = os.path.abspath(entry)
    main = sys.modules["__main__"]
    scope = main.__dict__
    loader = type(scope["__loader__"])("__main__", path)
    sys.argv[:] = sys.argv[1:]
    sys.orig_argv[:] = sys.orig_argv[:1] + sys.orig_argv[2:]
    sys.path[0] = os.path.dirname(os.path.realpath(entry))
    builtins = scope["__builtins__"]
    scope.clear()
    scope.update(
        __name__="__main__",
        __doc__=None,
        __package__=None,
        __loader__=loader,
        __spec__=None,
        __annotations__={},
        __builtins__=builtins,
        __file__=path,
        __cached__=None,
    )
    try:
        with open(path, "rb") as source:
            code = compile(source.read(), path, "exec", dont_inherit=True)
        exec(code, scope)
    except SystemExit:
        raise
    except BaseException as error:
        kind = type(error)
        tb = error.__traceback__.tb_next  # drop this shim's frame: the report starts at the agent's code
        error.__traceback__ = tb
        sys.last_type, sys.last_value, sys.last_traceback = kind, error, tb
        sys.excepthook(kind, error, tb)
        del error, tb
        # A normal run exits 1 on an uncaught exception; on KeyboardInterrupt it dies by SIGINT (bwrap: 130).
        sys.exit(130 if issubclass(kind, KeyboardInterrupt) else 1)


_aegis_warm_start()
