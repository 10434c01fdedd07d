"""The setuptools hook that compiles the catalogues when the package is built.

``pip install .`` (the Dockerfile, the systemd recipe's ``pip install git+file://…``)
builds a wheel; this ``build_py`` writes ``bot.mo`` beside each ``bot.po`` in it, so the
installed bot reads its translations with the standard library alone (Babel is needed
only to build: it is in ``[build-system] requires``). Named in pyproject.toml's
``[tool.setuptools.cmdclass]``; never imported by the running bot.
"""

from __future__ import annotations

from pathlib import Path

from setuptools.command.build_py import build_py

from .catalogues import DOMAIN, compile_po

__all__ = ["BuildWithCatalogues"]

_LOCALE = Path(__file__).resolve().parent / "locale"


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
            mo.write_bytes(compile_po(po.read_bytes(), language))
