"""A chapter's live widget in a real browser: JupyterLab in headless Chromium, via Playwright.

Starts JupyterLab on a free port (``DIFFNOTES_PROFILE=ci``, widgets live), opens one chapter,
runs all its cells, moves the first slider with the keyboard and checks that the figure under it
is redrawn as a different image. Screenshots before and after go to ``--out``. Not part of
``make test`` or CI; ``make browser-check`` installs Playwright and Chromium when missing::

    python -m bench.browser_check [--chapter 04-ncsn] [--out /tmp/diffnotes-browser-check]

Exit 0 with a one-line summary, 1 with the reason. The server is always shut down, and the
notebook on disk is left as it was (autosave is off, checkpoints go to a temporary folder, and
a changed file is restored).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
# As root in a closed network: no sandbox, no GPU, and none of Chromium's own connections.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# JupyterLab settings for the check: never write the notebook back, never fetch news.
LAB_SETTINGS = {
    "@jupyterlab/docmanager-extension/plugin.jupyterlab-settings": {"autosave": False},
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false",
        "checkForUpdates": False,
    },
}

# The current notebook's state as the page sees it (window.jupyterapp: expose_app_in_browser).
JS_STATE = """() => {
  const app = window.jupyterapp;
  const panel = app && app.shell.currentWidget;
  if (!panel || !panel.sessionContext || !panel.content) return null;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  const errors = [];
  cells.forEach((c, i) => {
    for (let k = 0; k < c.model.outputs.length; k++) {
      const o = c.model.outputs.get(k);
      if (o.type !== 'error') continue;
      const e = o.toJSON();
      errors.push(`code cell ${i}: ${e.ename}: ${e.evalue}`);
    }
  });
  return {
    kernel: kernel ? kernel.status : null,
    cells: cells.length,
    run: cells.filter(c => c.model.executionCount !== null).length,
    busy: cells.filter(c => {
      const prompt = c.node.querySelector('.jp-InputPrompt');
      return prompt && prompt.textContent.includes('*');
    }).length,
    errors,
  };
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fail(msg: str) -> None:
    raise CheckFailed(msg)


class CheckFailed(Exception):
    pass


def start_lab(port: int, token: str, tmp: Path, cache: str | None) -> subprocess.Popen:
    settings = tmp / "settings"
    for name, value in LAB_SETTINGS.items():
        (settings / name).parent.mkdir(parents=True, exist_ok=True)
        (settings / name).write_text(json.dumps(value))
    env = dict(os.environ)
    env.pop("DIFFNOTES_STATIC", None)  # live widgets, not the book's static figures
    env.update(
        DIFFNOTES_PROFILE="ci",
        OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "2"),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
    )
    if cache:
        env["DIFFNOTES_CACHE"] = cache
    cmd = [
        str(Path(sys.executable).parent / "jupyter"),
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={REPO}",
        "--LabApp.expose_app_in_browser=True",
        # the checkpoint JupyterLab takes on opening goes to tmp, not notebooks/.ipynb_checkpoints
        f"--FileCheckpoints.checkpoint_dir={tmp / 'checkpoints'}",
    ]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(tmp / "jupyter.log", "wb")
    return subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def wait_for_lab(proc: subprocess.Popen, base: str, token: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            fail(f"jupyter lab exited with code {proc.returncode} before it served")
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    fail(f"jupyter lab did not answer within {timeout:.0f} s")


def stop_lab(proc: subprocess.Popen, base: str, token: str) -> None:
    """Shut down the server and its kernels (kernels run in sessions of their own)."""
    if proc.poll() is None:
        try:
            req = urllib.request.Request(
                f"{base}/api/shutdown", method="POST", headers={"Authorization": f"token {token}"}
            )
            urllib.request.urlopen(req, timeout=5).close()
        except OSError:
            pass
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def wait_state(page, ok, what: str, timeout: float, poll: float = 0.5) -> dict:
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = page.evaluate(JS_STATE)
        if state and state["errors"]:
            fail("the chapter raised: " + "; ".join(state["errors"]))
        if state and ok(state):
            return state
        time.sleep(poll)
    fail(f"timed out after {timeout:.0f} s waiting for {what} (last state: {state})")


def figure_src(interact) -> str | None:
    img = interact.locator(".widget-output img")
    if img.count() == 0:
        return None
    return img.first.get_attribute("src")


def check(page, url: str, out: Path, timeout: float) -> str:
    page.goto(url)
    page.wait_for_function("() => window.jupyterapp !== undefined", timeout=120_000)
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
    wait_state(page, lambda s: s["kernel"] == "idle", "the kernel to start", 120)

    t0 = time.monotonic()
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    state = wait_state(
        page,
        lambda s: s["kernel"] == "idle" and s["busy"] == 0 and s["run"] == s["cells"],
        "all cells to run",
        timeout,
    )
    ran = time.monotonic() - t0

    interact = page.locator(".jp-NotebookPanel .widget-interact").first
    try:
        interact.wait_for(state="attached", timeout=30_000)
    except Exception:
        fail("no ipywidgets interact widget rendered (is DIFFNOTES_STATIC set, or widgets off?)")
    interact.scroll_into_view_if_needed()
    slider = interact.locator(".widget-slider").first
    handle = slider.locator(".noUi-handle").first
    if handle.count() == 0:
        fail("the widget has no slider handle (.widget-slider .noUi-handle)")
    label = (slider.locator(".widget-label").first.text_content() or "").strip()
    readout = slider.locator(".widget-readout").first

    deadline = time.monotonic() + 60
    while (before := figure_src(interact)) is None:
        if time.monotonic() > deadline:
            fail("the widget drew no figure (no <img> in its output)")
        time.sleep(0.5)
    value_before = readout.inner_text().strip()
    interact.screenshot(path=str(out / "before.png"))
    page.screenshot(path=str(out / "before-page.png"))

    handle.focus()
    for _ in range(3):
        page.keyboard.press("ArrowRight")
        time.sleep(0.2)
    # each press redraws (continuous updates): wait for a new figure that stays for 2 s
    deadline = time.monotonic() + 60
    after, since = before, time.monotonic()
    while time.monotonic() < deadline:
        now = figure_src(interact)
        if now != after:
            after, since = now, time.monotonic()
        elif after not in (None, before) and time.monotonic() - since >= 2:
            break
        time.sleep(0.25)
    value_after = readout.inner_text().strip()
    interact.scroll_into_view_if_needed()
    time.sleep(0.5)  # let the new image lay out before the screenshot
    interact.screenshot(path=str(out / "after.png"))
    page.screenshot(path=str(out / "after-page.png"))
    if value_after == value_before:
        fail(f"slider {label!r} did not move: its readout stayed {value_before!r}")
    if after is None or after == before:
        fail(
            f"slider {label!r} moved {value_before} -> {value_after} but the figure did not change"
        )
    return (
        f"{state['cells']} cells ran in {ran:.0f} s; slider {label!r} {value_before} -> "
        f"{value_after}; figure redrawn ({len(before)} -> {len(after)} bytes of PNG data URL)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chapter", default="04-ncsn", help="notebooks/<chapter>.ipynb")
    parser.add_argument("--out", type=Path, default=Path("/tmp/diffnotes-browser-check"))
    parser.add_argument("--timeout", type=float, default=600, help="seconds to run the chapter")
    parser.add_argument("--cache", help="DIFFNOTES_CACHE for the kernel (default: as set)")
    parser.add_argument("--chromium", default=CHROMIUM, help="the Chromium executable")
    parser.add_argument("--headed", action="store_true", help="show the browser window")
    args = parser.parse_args(argv)

    notebook = REPO / "notebooks" / f"{args.chapter.removesuffix('.ipynb')}.ipynb"
    if not notebook.exists():
        print(f"browser-check: FAIL: no chapter {notebook.relative_to(REPO)}", file=sys.stderr)
        return 1
    if not Path(args.chromium).exists():
        print(f"browser-check: FAIL: no Chromium at {args.chromium}", file=sys.stderr)
        return 1
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print(
            "browser-check: FAIL: pip install playwright (or: make browser-check)", file=sys.stderr
        )
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    saved = notebook.read_bytes()
    checkpoints = notebook.parent / ".ipynb_checkpoints"
    stray = [checkpoints, checkpoints / f"{notebook.stem}-checkpoint.ipynb"]
    stray = [p for p in stray if not p.exists()]  # only what this run might create

    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="diffnotes-browser-"))
    port, token = free_port(), secrets.token_hex(16)
    base = f"http://127.0.0.1:{port}"
    proc = start_lab(port, token, tmp, args.cache)
    try:
        wait_for_lab(proc, base, token, 120)
        url = f"{base}/lab/tree/notebooks/{notebook.name}?token={token}"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=args.chromium, headless=not args.headed, args=CHROMIUM_ARGS
            )
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                try:
                    summary = check(page, url, args.out, args.timeout)
                except Exception:
                    page.screenshot(path=str(args.out / "failure.png"))
                    raise
            finally:
                browser.close()
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"browser-check: FAIL ({notebook.name}): {reason}", file=sys.stderr)
        print(f"  screenshots in {args.out}; server log {tmp / 'jupyter.log'}", file=sys.stderr)
        return 1
    finally:
        stop_lab(proc, base, token)
        if notebook.read_bytes() != saved:
            notebook.write_bytes(saved)
            print(f"browser-check: restored {notebook.name}, which was saved", file=sys.stderr)
        for path in reversed(stray):
            if path.is_file():
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"browser-check: PASS {notebook.name} in {time.monotonic() - t0:.0f} s: {summary}; "
        f"screenshots in {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
