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


def main(argv):
    try:
        opts, rest = parse_options(argv)
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
