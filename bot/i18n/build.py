"""The setuptools hook that compiles the catalogues when the package is built.

``pip install .`` (the Dockerfile, the systemd recipe's ``pip install git+file://…``)
builds a wheel; this ``build_py`` writes ``bot.mo`` beside each ``bot.po`` in it, so the
installed bot reads its translations with the standard library alone (Babel is needed
only to build: it is in ``[build-system] requires``). Named in pyproject.toml's
``[tool.setuptools.cmdclass]``; never imported by the running bot.

setuptools loads this file on its own, not as part of the ``bot`` package, so it
imports nothing from ``bot`` (the compile is Babel's, as in :func:`catalogues.compile_po`).
"""

from __future__ import annotations

import io
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from setuptools.command.build_py import build_py

__all__ = ["BuildWithCatalogues"]

_LOCALE = Path(__file__).resolve().parent / "locale"
DOMAIN = "bot"


def _compile(po: Path, language: str) -> bytes:
    """Malformed catalogues fail the build (abort_invalid); fuzzy entries are left out."""
    with po.open("rb") as handle:
        catalog = read_po(handle, locale=language, domain=DOMAIN, abort_invalid=True)
    compiled = io.BytesIO()
    write_mo(compiled, catalog, use_fuzzy=False)
    return compiled.getvalue()


class BuildWithCatalogues(build_py):
    """``build_py``, plus every ``locale/<lang>/LC_MESSAGES/bot.po`` compiled to ``.mo``."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return  # an editable install reads the checkout: it compiles at first use
        target = Path(self.build_lib) / "bot" / "i18n" / "locale"
        for po in sorted(_LOCALE.glob(f"*/LC_MESSAGES/{DOMAIN}.po")):
            language = po.parent.parent.name
            mo = target / language / "LC_MESSAGES" / f"{DOMAIN}.mo"
            mo.parent.mkdir(parents=True, exist_ok=True)
            mo.write_bytes(_compile(po, language))
