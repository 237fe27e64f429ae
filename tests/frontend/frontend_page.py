"""Driving the official ComfyUI frontend as a user would, shared by the browser tests and the
screenshot script: open it, open a template, make the demo model's run quick."""

from __future__ import annotations

APP = "window.comfyAPI.app.app"


def open_frontend(page, url: str) -> None:
    page.goto(url)
    # Ready: the graph exists and fluxloom's extension has shown the model manager's status.
    page.wait_for_function("window.comfyAPI?.app?.app?.graph && window.fluxloomStatus?.stats", timeout=60_000)


def open_template(page, name: str) -> None:
    """Templates (sidebar) → the card of a shipped workflow → its graph on the canvas."""
    page.get_by_role("button", name="Templates", exact=True).click()
    page.get_by_text(name, exact=True).first.click()
    page.wait_for_function(
        f"{APP}.graph.nodes.some(n => n.type === 'FluxSampler') && !document.querySelector('[role=dialog]')",
        timeout=20_000,
    )


def shrink(page, size: int = 64, steps: int = 2) -> None:
    """Edit the graph's widgets as a user would, so that the demo model runs in a second."""
    page.evaluate(
        f"""([size, steps]) => {{
        const g = {APP}.graph;
        const set = (type, name, value) => g.nodes.filter(n => n.type === type)
          .forEach(n => {{ n.widgets.find(w => w.name === name).value = value; }});
        set('EmptyLatent16ch', 'width', size); set('EmptyLatent16ch', 'height', size);
        set('FluxSampler', 'steps', steps);
        set('EncodePrompt', 'max_sequence_length', 16);
    }}""",
        [size, steps],
    )


def run_and_wait_for_image(page, size: int = 64, timeout: float = 60_000) -> str:
    """Press Run; the first image's URL once the Save node shows it."""
    page.get_by_test_id("queue-button").click()
    page.wait_for_function(
        f"""(size) => {{ const n = {APP}.graph.nodes.find(n => n.type === 'SaveImage');
            return n.imgs?.length > 0 && n.imgs[0].complete && n.imgs[0].naturalWidth === size; }}""",
        arg=size,
        timeout=timeout,
    )
    return page.evaluate(f"{APP}.graph.nodes.find(n => n.type === 'SaveImage').imgs[0].src")
