# AEGIS live-sandbox PTY helper (docs/adr/0068-live-sandbox-pty.md). Started by the exec agent (live-agent.cjs) inside
# the sandbox, as the sandbox user with no capabilities: it inherits everything the agent has and adds nothing.
#
#   python3 live-pty.py COLS ROWS ARGV...
#
# It opens a pseudo-terminal on the sandbox's own devpts (bubblewrap's --dev mounts a private instance), runs ARGV
# on the slave as a new session with it as controlling terminal, and relays: stdin -> master, master -> stdout.
# fd 3 carries resize requests, one "COLS ROWS" line each: TIOCSWINSZ on the master (the kernel then sends
# SIGWINCH to the foreground process group). It exits with the command's exit code (or dies of its signal).
import errno
import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios


def winsize(fd, cols, rows):
    cols = max(1, min(int(cols), 1000))
    rows = max(1, min(int(rows), 1000))
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack('HHHH', rows, cols, 0, 0))


def write_all(fd, data):
    while data:
        n = os.write(fd, data)
        data = data[n:]


def main():
    cols, rows, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
    pid, master = pty.fork()
    if pid == 0:
        try:
            os.close(3)
        except OSError:
            pass
        try:
            winsize(0, cols, rows)
            os.execvp(argv[0], argv)
        except OSError as error:
            os.write(2, ('%s: %s\r\n' % (argv[0], error.strerror)).encode())
        os._exit(127)

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, lambda s, _f: os.kill(pid, s))
    inputs = [0, master, 3]
    control = b''
    while True:
        try:
            ready, _, _ = select.select(inputs, [], [])
        except InterruptedError:
            continue
        if master in ready:
            try:
                data = os.read(master, 65536)
            except OSError as error:
                if error.errno != errno.EIO:
                    raise
                data = b''
            if not data:
                break
            write_all(1, data)
        if 0 in ready:
            data = os.read(0, 65536)
            if data:
                write_all(master, data)
            else:
                inputs.remove(0)
        if 3 in ready:
            data = os.read(3, 4096)
            if not data:
                inputs.remove(3)
            control += data
            while b'\n' in control:
                line, control = control.split(b'\n', 1)
                parts = line.split()
                if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
                    winsize(master, parts[0], parts[1])
            control = control[-64:]

    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    sys.exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)


main()
