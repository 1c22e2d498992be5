"""Helpers for tests that look at pages: a small DOM of rendered HTML, a non-blank PNG check."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from matplotlib import image as mpimg


class Dom(HTMLParser):
    """Elements of a page as ``(tag, attrs, text)``; ``text`` is all text inside the element."""

    VOID = frozenset({"meta", "link", "br", "img", "input", "hr", "path", "line", "rect",
                      "circle", "source"})  # fmt: skip

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str], list[str]]] = []
        self._open: list[int] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}, []))
        if tag not in self.VOID:
            self._open.append(len(self.elements) - 1)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}, []))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            idx = self._open.pop()
            if self.elements[idx][0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for idx in self._open:
            self.elements[idx][2].append(data)

    def find(self, tag: str | None = None, **attrs: str) -> list[tuple[dict[str, str], str]]:
        """Elements of ``tag`` whose attributes contain ``attrs`` (``class_`` = one class)."""
        out = []
        for t, a, text in self.elements:
            if tag is not None and t != tag:
                continue
            ok = True
            for key, value in attrs.items():
                if key == "class_":
                    ok = ok and value in a.get("class", "").split()
                else:
                    ok = ok and a.get(key.replace("_", "-")) == value
            if ok:
                out.append((a, " ".join("".join(text).split())))
        return out

    def text_of(self, element_id: str) -> str:
        """Text of the element with that id."""
        (hit,) = [text for _t, a, text in self.elements if a.get("id") == element_id]
        return " ".join("".join(hit).split())


def assert_not_blank(png: Path) -> None:
    """The screenshot decodes and shows something: varied pixels, several colours."""
    pixels = mpimg.imread(png)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    rgb = pixels[..., :3].reshape(-1, 3)
    assert float(rgb.std()) > 0.05, "screenshot is blank"
    colours = np.unique((rgb * 255).round().astype(np.uint8), axis=0)
    assert len(colours) > 50, f"only {len(colours)} colours"
