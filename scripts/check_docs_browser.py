"""Open every page of the built documentation site in headless Chromium and check that it renders: the page shows
its title (the browser tab's and the page's first heading) and logs no console error, uncaught exception or failed
request. Exit status 1 names each page that fails.

    mkdocs build --strict --site-dir site && python scripts/check_docs_browser.py --site-dir site
    python scripts/check_docs_browser.py --screenshots shots/ index.html finetune/index.html

Needs Chromium (Debian: `apt-get install chromium`) and the `docs` extra (mkdocs, websockets). Without
--site-dir the site is built into a temporary folder first. The pages are served from a local HTTP server, as a
reader's browser would get them, and driven through the DevTools protocol.
"""

import argparse
import asyncio
import base64
import functools
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

try:
    import websockets
except ImportError:  # pragma: no cover - an install hint instead of a traceback
    sys.exit('check_docs_browser needs websockets: pip install -e ".[docs]"')

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(folder: Path) -> str:
    """Serve `folder` over HTTP on a free local port, in a daemon thread; returns the base URL."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("no Chromium found: install it (Debian: apt-get install chromium)")


def start_browser(chromium: str, profile: str):
    port = free_port()
    argv = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
        f"--remote-debugging-port={port}",
        "about:blank",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=1) as r:
                pages = [t for t in json.load(r) if t.get("type") == "page"]
            if pages:
                return proc, pages[0]["webSocketDebuggerUrl"]
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit("Chromium did not start its DevTools endpoint within 30 s")


class Page:
    """One browser tab, driven over the DevTools protocol; collects the console errors of each load."""

    def __init__(self, ws):
        self.ws, self.next_id, self.errors, self.loaded = ws, 0, [], asyncio.Event()
        self.replies = {}

    async def call(self, method, **params):
        self.next_id += 1
        ident = self.next_id
        future = asyncio.get_running_loop().create_future()
        self.replies[ident] = future
        await self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        return await asyncio.wait_for(future, 60)

    async def listen(self):
        async for raw in self.ws:
            msg = json.loads(raw)
            if "id" in msg and msg["id"] in self.replies:
                self.replies.pop(msg["id"]).set_result(msg.get("result", msg.get("error")))
                continue
            method, params = msg.get("method"), msg.get("params", {})
            if method == "Page.loadEventFired":
                self.loaded.set()
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                self.errors.append(f"console.{params['type']}: {text}")
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                self.errors.append(f"uncaught: {details.get('exception', {}).get('description', details.get('text'))}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                self.errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())

    async def open(self, url):
        self.errors, self.loaded = [], asyncio.Event()
        await self.call("Page.navigate", url=url)
        await asyncio.wait_for(self.loaded.wait(), 60)
        await asyncio.sleep(0.5)  # scripts that run after load (search index, theme) get to log their errors
        result = await self.call(
            "Runtime.evaluate",
            expression="JSON.stringify({title: document.title, h1: ((document.querySelector('article h1, h1') || {}).textContent || '')"
            ".replace('\u00b6', ''), "
            "visible: !!(document.querySelector('h1') && document.querySelector('h1').getBoundingClientRect().height > 0)})",
            returnByValue=True,
        )
        return json.loads(result["result"]["value"])

    async def screenshot(self, path: Path):
        shot = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))


async def check(site: Path, pages, screenshots, chromium):
    base = serve(site)
    profile = tempfile.mkdtemp(prefix="docs-browser-")
    proc, ws_url = start_browser(chromium, profile)
    failures = []
    try:
        async with websockets.connect(ws_url, max_size=None) as ws:
            page = Page(ws)
            listener = asyncio.create_task(page.listen())
            for domain in ("Page", "Runtime", "Log"):
                await page.call(f"{domain}.enable")
            for rel in pages:
                seen = await page.open(base + rel)
                problems = list(page.errors)
                if not seen["title"].strip():
                    problems.append("the page has no title")
                if not seen["h1"].strip() or not seen["visible"]:
                    problems.append("the page shows no heading")
                status = "ok" if not problems else "FAILED"
                print(f"{status}: {rel}: {seen['h1'].strip() or '-'} | {seen['title']}")
                for p in problems:
                    print(f"    {p}")
                if problems:
                    failures.append(rel)
                if screenshots and (rel in screenshots.get("pages", ()) or screenshots.get("all")):
                    out = screenshots["dir"] / (rel.replace("/index.html", "").replace("/", "_") or "index")
                    await page.screenshot(out.with_suffix(".png") if out.suffix != ".html" else out.with_suffix(".png"))
            listener.cancel()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)
    return failures


def site_pages(site: Path):
    """Every page of the site (index.html files; 404.html and the search index's assets are not pages)."""
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("index.html") if "assets" not in p.parts)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("pages", nargs="*", help="pages to screenshot, relative to the site (e.g. finetune/index.html)")
    p.add_argument("--site-dir", type=Path, help="a built site; without it the site is built into a temp folder")
    p.add_argument("--screenshots", type=Path, help="folder for PNG screenshots of the pages named (all without names)")
    a = p.parse_args(argv)
    chromium = find_chromium()
    with tempfile.TemporaryDirectory(prefix="docs-site-") as tmp:
        site = a.site_dir
        if site is None:
            site = Path(tmp) / "site"
            env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
            cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(site)]
            subprocess.run(cmd, cwd=ROOT, check=True, env=env)
        pages = site_pages(site)
        if not pages:
            sys.exit(f"{site}: no pages (build the site first: mkdocs build)")
        shots = None
        if a.screenshots:
            a.screenshots.mkdir(parents=True, exist_ok=True)
            shots = {"dir": a.screenshots, "pages": set(a.pages), "all": not a.pages}
        failures = asyncio.run(check(site, pages, shots, chromium))
    print(f"{len(pages) - len(failures)} of {len(pages)} pages render with their title and no console error")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
