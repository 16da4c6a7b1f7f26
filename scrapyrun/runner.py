# ScrapeThis's Scrapy runner. Run as
#
#   python -c <this file> --mode crawl|runspider|list [--project-root DIR]
#          [--settings-module MODULE] [--stats-interval SECONDS] -- <scrapy argv>
#
# It needs no file on disk. crawl and list load a Scrapy project that lives
# elsewhere (read-only) while the process runs in a fresh job directory:
# the project's root goes on sys.path, SCRAPY_SETTINGS_MODULE names its
# settings, and crawl writes ./scrapy.cfg so that Scrapy's data directory
# (.scrapy/, HTTP cache, ...) lands in the job directory.
#
# Items: fd 1 carries items and nothing else. Anything the process itself
# prints to stdout goes to stderr (the log); the feed exporter writes JSON
# lines to the real stdout. The feed (FEEDS, FEED_URI, the "stdout" storage,
# the "jsonlines" exporter, the FeedExporter extension) is pinned above
# Scrapy's "cmdline" priority, so neither settings.py, a spider's
# custom_settings nor a -s setting can send items elsewhere.
#
# Stats: an extension added to EXTENSIONS_BASE (the project's EXTENSIONS
# stay as they are) writes the crawler's stats as one stderr line
# STATS_PREFIX + JSON object every --stats-interval while the spider runs,
# and once more when the engine has stopped (with finish_reason and
# elapsed_time_seconds).
#
# Errors: a failure the runner understands ends the process with exit
# status 1 and one last stderr line ERROR_PREFIX + reason.
#
# Zygote (--mode zygote): a warm parent. It imports Scrapy, Twisted and the
# components Scrapy's default settings name (never a reactor), says
# "ready" on its control socket (fd 3), and forks one child per request
# there; see ZYGOTE below.

import io
import json
import math
import os
import re
import sys
import traceback
import types

ERROR_PREFIX = "scrapethis: error: "
STATS_PREFIX = "\x1escrapethis-stats "
# Under the Go side's 64 KiB bound for the JSON of one stats line.
STATS_MAX_BYTES = 60 * 1024
SPIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
# Above Scrapy's highest named priority ("cmdline", 40).
PINNED = 100
MODULE = "scrapethis_runner"


class Failure(Exception):
    """A reason to stop, said in one line."""


def one_line(text):
    return " ".join(str(text).split())


def describe(exc):
    text = one_line(exc)
    return type(exc).__name__ + (": " + text if text else "")


def parse_options(argv):
    opts = {"mode": "", "project_root": "", "settings_module": "", "stats_interval": 5.0}
    names = {
        "--mode": "mode",
        "--project-root": "project_root",
        "--settings-module": "settings_module",
        "--stats-interval": "stats_interval",
    }
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return opts, argv[i + 1:]
        if arg not in names or i + 1 >= len(argv):
            raise Failure("runner: bad option %r" % arg)
        opts[names[arg]] = argv[i + 1]
        i += 2
    return opts, []


def items_output():
    """Keeps fd 1 for items: returns a writer on it and points fd 1 (and
    so print, C code and child processes) at stderr."""
    sys.stdout.flush()
    fd = os.dup(1)  # not inherited by child processes
    os.dup2(2, 1)
    try:
        sys.stdout.reconfigure(line_buffering=True)  # a log line as it comes
    except (AttributeError, ValueError):
        pass

    class Items(io.BufferedWriter):
        # One write per item, flushed, so items reach the reader as they come.
        def write(self, data):
            n = super().write(data)
            self.flush()
            return n

    return Items(io.FileIO(fd, "wb"))


def use_project(root, module):
    """Makes the project at root importable and its settings module the one
    Scrapy loads; returns the project's real root and the module's name."""
    if not root:
        raise Failure("no project root given")
    root = os.path.realpath(root)
    if not os.path.isdir(root):
        raise Failure("project root %s is not a directory" % root)
    if not module:
        module = settings_module_from_cfg(root)
    if not MODULE_NAME.match(module):
        raise Failure("settings module %r is not a Python module name" % module)
    sys.path.insert(0, root)
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = root + (os.pathsep + old if old else "")
    os.environ["SCRAPY_SETTINGS_MODULE"] = module
    import importlib

    try:
        importlib.import_module(module)
    except (Exception, SystemExit) as e:
        traceback.print_exc()
        raise Failure("settings module %s cannot be imported: %s" % (module, describe(e)))
    return root, module


def settings_module_from_cfg(root):
    import configparser

    path = os.path.join(root, "scrapy.cfg")
    cfg = configparser.ConfigParser()
    try:
        cfg.read(path)
        module = cfg.get("settings", "default", fallback="")
    except configparser.Error as e:
        raise Failure("scrapy.cfg: %s" % describe(e))
    if not module.strip():
        raise Failure("no settings module: %s has no [settings] default" % path)
    return module.strip()


def write_scrapy_cfg(module):
    try:
        with open("scrapy.cfg", "x") as f:
            f.write("[settings]\ndefault = %s\n" % module)
    except FileExistsError:
        pass
    except OSError as e:
        raise Failure("cannot write scrapy.cfg in the job directory: %s" % describe(e))


def jsonable(v, depth=0):
    import datetime

    if v is None or isinstance(v, (bool, int)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else str(v)
    if isinstance(v, str):
        return clean_text(v)
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:  # Scrapy's are naive UTC
            v = v.replace(tzinfo=datetime.timezone.utc)
        return v.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
    if depth < 16 and isinstance(v, dict):
        return {clean_text(str(k)): jsonable(x, depth + 1) for k, x in v.items()}
    if depth < 16 and isinstance(v, (list, tuple)):
        return [jsonable(x, depth + 1) for x in v]
    return clean_text(str(v))


def clean_text(s):
    # Valid UTF-8 without NUL: what Postgres can store.
    return s.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def encode_stats(stats):
    entries = {}
    for k, v in list(stats.items()):
        k = clean_text(str(k))
        entries[k] = json.dumps(jsonable(v), separators=(",", ":"), allow_nan=False)
    size = sum(len(json.dumps(k)) + len(v) + 2 for k, v in entries.items())
    if size > STATS_MAX_BYTES:
        # Keep the small values (Scrapy's counters), drop the biggest.
        budget = STATS_MAX_BYTES - 100
        kept = {}
        for k, v in sorted(entries.items(), key=lambda kv: len(kv[0]) + len(kv[1])):
            cost = len(json.dumps(k)) + len(v) + 2
            if cost > budget:
                break
            kept[k] = v
            budget -= cost
        kept["scrapethis/stats_dropped"] = json.dumps(len(entries) - len(kept))
        entries = kept
    return "{" + ",".join(json.dumps(k) + ":" + v for k, v in sorted(entries.items())) + "}"


def write_stderr(data):
    """Writes data to fd 2 as one piece. Not through sys.stderr: a signal
    handler that logs (Scrapy's, on SIGTERM) while that writer is busy fails
    on a reentrant call and loses the shutdown. Signals are blocked in this
    thread meanwhile, so that no handler's line lands inside this one."""
    import signal

    mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        sys.stderr.flush()
        view = memoryview(data)
        while view:
            view = view[os.write(2, view):]
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def register(interval, items):
    """Defines the runner's Scrapy components in a module of their own, so
    that settings can name them."""
    from twisted.internet import task

    from scrapy import signals
    from scrapy.extensions.feedexport import StdoutFeedStorage as ScrapyStdout

    class Stats:
        def __init__(self, crawler):
            self.crawler = crawler
            self.loop = None

        @classmethod
        def from_crawler(cls, crawler):
            ext = cls(crawler)
            crawler.signals.connect(ext.spider_opened, signal=signals.spider_opened)
            crawler.signals.connect(ext.spider_closed, signal=signals.spider_closed)
            crawler.signals.connect(ext.engine_stopped, signal=signals.engine_stopped)
            return ext

        def spider_opened(self, spider):
            self.loop = task.LoopingCall(self.report)
            self.loop.start(interval, now=False)

        def spider_closed(self, spider, reason):
            self.stop()

        def engine_stopped(self):
            # After the stats collector closed: finish_reason and
            # elapsed_time_seconds are set.
            self.stop()
            self.report()

        def stop(self):
            if self.loop is not None and self.loop.running:
                self.loop.stop()

        def report(self):
            try:
                line = STATS_PREFIX + encode_stats(self.crawler.stats.get_stats()) + "\n"
                write_stderr(line.encode())
            except Exception as e:
                sys.stderr.write("scrapethis: warning: stats not reported: %s\n" % describe(e))

    # Named as Scrapy's, whose name its stats (feedexport/success_count/...) carry.
    class StdoutFeedStorage(ScrapyStdout):
        def __init__(self, uri, _stdout=None, *, feed_options=None):
            super().__init__(uri, _stdout=items, feed_options=feed_options)

    mod = types.ModuleType(MODULE)
    mod.Stats = Stats
    mod.StdoutFeedStorage = StdoutFeedStorage
    sys.modules[MODULE] = mod


def pin(settings):
    from scrapy.settings import BaseSettings

    def pin_keys(name, entries):
        merged = BaseSettings()
        merged.update(settings[name])  # keeps each key's priority
        for k, v in entries.items():
            merged.set(k, v, PINNED)
        settings.set(name, merged, PINNED)

    settings.set("FEEDS", {"stdout:": {"format": "jsonlines", "batch_item_count": 0}}, PINNED)
    settings.set("FEED_URI", None, PINNED)
    pin_keys("FEED_STORAGES_BASE", {"stdout": MODULE + ".StdoutFeedStorage"})
    pin_keys("FEED_EXPORTERS_BASE", {"jsonlines": "scrapy.exporters.JsonLinesItemExporter"})
    pin_keys(
        "EXTENSIONS_BASE",
        {
            "scrapy.extensions.corestats.CoreStats": 0,
            "scrapy.extensions.feedexport.FeedExporter": 0,
            MODULE + ".Stats": 0,
        },
    )


def run_spider(opts, argv, items):
    mode = opts["mode"]
    if not argv or argv[0] != mode:
        raise Failure("runner: the scrapy arguments must start with %r" % mode)
    try:
        interval = float(opts["stats_interval"])
    except ValueError:
        raise Failure("runner: bad --stats-interval %r" % opts["stats_interval"])
    if not interval > 0:
        raise Failure("runner: bad --stats-interval %r" % opts["stats_interval"])
    if mode == "crawl":
        _, module = use_project(opts["project_root"], opts["settings_module"])
        write_scrapy_cfg(module)
    register(interval, items)

    from scrapy.cmdline import execute
    from scrapy.utils.project import get_project_settings

    settings = get_project_settings()
    pin(settings)
    execute(["scrapy"] + argv, settings)


def walk(path, failed):
    """Imports module path and, for a package, every module under it, like
    Scrapy's walk_modules, but notes each module that fails."""
    import importlib
    import pkgutil

    try:
        mod = importlib.import_module(path)
    except (Exception, SystemExit) as e:
        traceback.print_exc()
        failed.append("%s (%s)" % (path, describe(e)))
        return []
    mods = [mod]
    for _, sub, ispkg in pkgutil.iter_modules(getattr(mod, "__path__", [])):
        mods += walk(path + "." + sub, failed)
    return mods


def list_spiders(opts, items):
    root, _ = use_project(opts["project_root"], opts["settings_module"])

    from scrapy.utils.misc import load_object
    from scrapy.utils.project import get_project_settings
    from scrapy.utils.spider import iter_spider_classes

    settings = get_project_settings()

    def source(cls):
        import inspect

        try:
            path = inspect.getsourcefile(cls) or inspect.getfile(cls)
        except TypeError:
            return None
        return os.path.realpath(path)

    def where(cls):
        path = source(cls)
        rel = os.path.relpath(path, root) if path else "?"
        return "%s.%s (%s)" % (cls.__module__, cls.__qualname__, rel)

    failed, found = [], {}
    for path in settings.getlist("SPIDER_MODULES"):
        for mod in walk(path, failed):
            for cls in iter_spider_classes(mod):
                found.setdefault(cls.name, []).append(cls)
    if failed:
        more = " and %d more" % (len(failed) - 1) if len(failed) > 1 else ""
        raise Failure("spider module %s fails to import%s" % (failed[0], more))
    for name, classes in found.items():
        if len(classes) > 1:
            raise Failure(
                "spider name %r is used twice: by %s and by %s"
                % (name, where(classes[0]), where(classes[1]))
            )
        if not isinstance(name, str) or not SPIDER_NAME.match(name):
            raise Failure(
                "spider name %r of %s is not valid (letters, digits, '.', '_', '-'; "
                "at most 64; starting with a letter or digit)" % (name, where(classes[0]))
            )

    try:
        loader = load_object(settings["SPIDER_LOADER_CLASS"]).from_settings(settings.frozencopy())
        names = sorted(loader.list())
    except (Exception, SystemExit) as e:
        traceback.print_exc()
        raise Failure("the project's spider loader fails: %s" % describe(e))
    out = []
    for name in names:
        if not isinstance(name, str) or not SPIDER_NAME.match(name):
            raise Failure("spider name %r is not valid" % (name,))
        try:
            cls = loader.load(name)
        except (Exception, SystemExit) as e:
            traceback.print_exc()
            raise Failure("spider %r cannot be loaded: %s" % (name, describe(e)))
        path = source(cls)
        rel = os.path.relpath(path, root) if path else ""
        if not path or rel == os.pardir or rel.startswith(os.pardir + os.sep):
            raise Failure("spider %r is not defined in a file of the project (%s)" % (name, path))
        out.append(json.dumps({"name": name, "file": rel.replace(os.sep, "/")}))
    for line in out:
        items.write((line + "\n").encode())


# ZYGOTE. The worker talks to the zygote over a SOCK_SEQPACKET socket on
# fd 3. The zygote writes "ready PID" once warm. Each request is one
# message "fork" carrying three file descriptors (SCM_RIGHTS): the job's
# own socket, its stdout and its stderr. The zygote forks at once and
# reads nothing of the job: what a job asks for (arguments, settings,
# environment) never enters the parent's memory, so no later child can find
# it there. The first child (C1) reads the request, a JSON object, from the
# job's socket until EOF:
#
#   {"argv": [runner options and scrapy argv], "env": [...], "dir": CWD,
#    "worker_pid": N, "sandbox": null | {"init_pid": N, "uid": N, "gid": N,
#    "cgroups": [DIR...], "binds": [{"Source": HOST, "Target": INSIDE}]}}
#
# With a sandbox, C1 enters the job's sandbox as its init built it from the
# one sandbox.Policy: it joins the job's cgroups, copies the init's rlimits
# and enters every namespace of the init's that differs from its own (the
# mount namespace last). It forks the spider (C2), writes "pid N" (N as the
# worker sees it) on the job's socket and exits, so that C2 is adopted by
# the worker (a child subreaper), which waits for it as for any spider.
# C2 waits for C1 to be gone, takes a process group of its own, a parent-
# death SIGKILL (sandbox off: its parent is now the worker) or, sandboxed,
# drops to the job's uid for good (no_new_privs, no capabilities, no
# supplementary groups), takes the job's fds, directory and environment,
# writes "ok" and runs the runner's main as a fresh process would. Any
# step that fails is reported as "error REASON" on the job's socket.

ZYGOTE_SKIP = {
    # Both install the default reactor when imported.
    "scrapy.core.downloader.handlers.ftp",
    "scrapy.extensions.telnet",
}


def preload():
    """Imports what every crawl imports, and what Scrapy's default settings
    name, without installing a reactor."""
    import importlib

    import scrapy  # noqa: F401
    import scrapy.cmdline  # noqa: F401
    import scrapy.commands.crawl  # noqa: F401
    import scrapy.commands.runspider  # noqa: F401
    import scrapy.crawler  # noqa: F401
    import scrapy.exporters  # noqa: F401
    import scrapy.extensions.feedexport  # noqa: F401
    import scrapy.utils.project  # noqa: F401
    import scrapy.utils.spider  # noqa: F401
    import twisted.internet.task  # noqa: F401
    from scrapy.settings import default_settings

    names = set()
    for key in dir(default_settings):
        value = getattr(default_settings, key)
        values = list(value) + list(value.values()) if isinstance(value, dict) else [value]
        for v in values:
            if isinstance(v, str) and v.startswith("scrapy.") and "." in v[7:]:
                names.add(v.rsplit(".", 1)[0])
    for name in sorted(names - ZYGOTE_SKIP):
        try:
            importlib.import_module(name)
        except Exception:
            pass
    for name in ("configparser", "datetime", "inspect", "pkgutil", "ctypes", "ctypes.util"):
        importlib.import_module(name)
    if "twisted.internet.reactor" in sys.modules:
        raise Failure("zygote: preloading installed a reactor")


def zygote():
    import gc
    import signal
    import socket
    import threading

    control = socket.socket(fileno=3)
    preload()
    if threading.active_count() != 1:
        raise Failure("zygote: preloading started threads")
    # Its children (C1) are reaped by the kernel.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    # What is loaded stays where it is: the collector never touches it, so
    # children keep sharing its pages.
    gc.collect()
    gc.freeze()
    sys.stdout.flush()
    sys.stderr.flush()
    control.send(b"ready %d" % os.getpid())
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(control, 64, 8)
        except InterruptedError:
            continue
        if not msg:
            os._exit(0)  # the worker is gone
        if msg != b"fork" or len(fds) != 3:
            for fd in fds:
                os.close(fd)
            continue
        pid = os.fork()
        if pid == 0:
            try:
                control.close()
                fork_child(fds)
            except BaseException:
                traceback.print_exc()
            os._exit(125)
        for fd in fds:
            os.close(fd)


class Libc:
    def __init__(self):
        import ctypes

        self.ctypes = ctypes
        self.lib = ctypes.CDLL(None, use_errno=True)

    def call(self, name, *args):
        ret = getattr(self.lib, name)(*args)
        if ret < 0:
            err = self.ctypes.get_errno()
            raise OSError(err, "%s: %s" % (name, os.strerror(err)))
        return ret


PR_SET_PDEATHSIG = 1
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
NAMESPACES = ("ipc", "uts", "net", "cgroup", "pid", "mnt")


def read_all(sock):
    chunks = []
    while True:
        b = sock.recv(65536)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def fork_child(fds):
    """C1: reads the request, enters the job's sandbox, forks the spider."""
    import signal
    import socket

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    conn_fd, out_fd, err_fd = fds
    conn = socket.socket(fileno=conn_fd)

    def fail(step, e):
        try:
            conn.sendall(("error %s: %s\n" % (step, one_line(describe(e)))).encode())
        finally:
            os._exit(125)

    try:
        req = json.loads(read_all(conn))
        box = req.get("sandbox")
        argv, env, cwd = req["argv"], req["env"], req["dir"]
    except Exception as e:
        fail("read request", e)
    libc = Libc()
    if box:
        try:
            enter(libc, box)
        except Exception as e:
            fail("enter sandbox", e)
    # Readable once C1 has exited, its children handed over: a pidfd's
    # readiness comes after the reparenting (a pipe's EOF may come before).
    gone = os.pidfd_open(os.getpid())
    pid = os.fork()
    if pid:
        conn.sendall(b"pid %d\n" % pid)
        os._exit(0)
    # C2: the spider.
    try:
        import select

        p = select.poll()
        p.register(gone, select.POLLIN)
        while not p.poll():
            pass
        os.close(gone)
        os.setpgid(0, 0)
        if box:
            become_job(libc, box)
        else:
            libc.call("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != req["worker_pid"]:
                raise Failure("the worker is gone (or not a child subreaper)")
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        keep = {0, 1, 2, conn.fileno()}
        for fd in sorted(int(f) for f in os.listdir("/proc/self/fd")):
            if fd not in keep:
                try:
                    os.close(fd)
                except OSError:
                    pass
        os.chdir(cwd)
        os.environ.clear()
        for kv in env:
            k, _, v = kv.partition("=")
            os.environ[k] = v
        if box:
            remap_paths(box.get("binds") or [])
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
    except BaseException as e:
        fail("start spider", e)
    conn.sendall(b"ok\n")
    conn.close()
    run_child(argv)


def enter(libc, box):
    """C1, still root: the job's cgroups, the init's rlimits, its namespaces."""
    import resource

    me = str(os.getpid())
    for d in box.get("cgroups") or []:
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(me)
    init = int(box["init_pid"])
    for name in dir(resource):
        if name.startswith("RLIMIT_"):
            res = getattr(resource, name)
            resource.setrlimit(res, resource.prlimit(init, res))
    fds = []
    for ns in NAMESPACES:
        theirs = "/proc/%d/ns/%s" % (init, ns)
        if not os.path.exists(theirs) or os.stat(theirs).st_ino == os.stat("/proc/self/ns/" + ns).st_ino:
            continue
        fds.append((ns, os.open(theirs, os.O_RDONLY | os.O_CLOEXEC)))
    for ns, fd in fds:
        try:
            libc.call("setns", fd, 0)
        except OSError as e:
            raise Failure("join the %s namespace: %s" % (ns, describe(e)))
        os.close(fd)
    os.chdir("/")


def become_job(libc, box):
    """C2 in the sandbox: the job's uid for good, as the init's spider has."""
    uid, gid = int(box["uid"]), int(box["gid"])
    if uid <= 0 or gid <= 0:
        raise Failure("no job uid")
    libc.call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    cap = 0
    while cap < 64:
        try:
            libc.call("prctl", PR_CAPBSET_DROP, cap, 0, 0, 0)
        except OSError as e:
            if e.errno == 22:  # EINVAL: past the kernel's last capability
                break
            raise
        cap += 1
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getgroups():
        raise Failure("uid %d did not stick" % uid)


def remap_paths(binds):
    """The interpreter was started outside the sandbox: where its modules
    and packages live on the host, the sandbox binds them elsewhere (a
    version's venv at /spider/venv)."""
    import importlib

    moves = [(b["Source"].rstrip("/"), b["Target"].rstrip("/")) for b in binds if b["Source"] != b["Target"]]
    if not moves:
        return

    def inside(p):
        if not isinstance(p, str):
            return p
        for src, dst in moves:
            if p == src or p.startswith(src + "/"):
                return dst + p[len(src):]
        return p

    sys.path[:] = [inside(p) for p in sys.path]
    for name in ("prefix", "exec_prefix", "executable", "base_prefix", "base_exec_prefix"):
        setattr(sys, name, inside(getattr(sys, name)))
    for mod in list(sys.modules.values()):
        path = getattr(mod, "__path__", None)
        if isinstance(path, list):
            path[:] = [inside(p) for p in path]
        f = getattr(mod, "__file__", None)
        if isinstance(f, str) and inside(f) != f:
            try:
                mod.__file__ = inside(f)
            except (AttributeError, TypeError):
                pass
    sys.path_importer_cache.clear()
    importlib.invalidate_caches()


def run_child(argv):
    """Runs the runner's main as a fresh interpreter would, to its exit:
    non-daemon threads are waited for, atexit handlers run, streams are
    flushed."""
    import atexit
    import threading

    sys.argv = ["-c"] + list(argv)
    code = 0
    try:
        main(list(argv))
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code & 0xFF
        else:
            sys.stderr.write("%s\n" % (e.code,))
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        threading._shutdown()
    except BaseException:
        pass
    try:
        atexit._run_exitfuncs()
    except BaseException:
        pass
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except BaseException:
            pass
    os._exit(code)


def main(argv):
    try:
        opts, rest = parse_options(argv)
        if opts["mode"] == "zygote":
            zygote()
        items = items_output()
        try:
            import scrapy  # noqa: F401
        except Exception as e:
            raise Failure("Scrapy cannot be imported by %s: %s" % (sys.executable, describe(e)))
        mode = opts["mode"]
        if mode == "list":
            list_spiders(opts, items)
        elif mode in ("crawl", "runspider"):
            run_spider(opts, rest, items)
        else:
            raise Failure("runner: bad --mode %r" % mode)
    except Failure as e:
        sys.stderr.write(ERROR_PREFIX + one_line(e) + "\n")
        sys.exit(1)
    except (KeyboardInterrupt, Exception) as e:
        traceback.print_exc()
        sys.stderr.write(ERROR_PREFIX + describe(e)[:400] + "\n")
        sys.exit(1)


main(sys.argv[1:])
