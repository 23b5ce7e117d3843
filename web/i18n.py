"""Language: Simplified Chinese by default, English available, chosen per user (User.locale).

UI strings are written in English in the code and translated by the catalogues in
``web/translations/<locale>/LC_MESSAGES/messages.po``. The .po files are the source
of truth; the app factory compiles them into a per-process cache directory (no .mo
is committed and nobody runs a manual step).
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

from flask import Flask, g, request
from babel import Locale
from flask_babel import Babel

TRANSLATIONS = Path(__file__).parent / "translations"
DEFAULT_LOCALE = "zh_CN"
LOCALES = ("zh_CN", "en")
_compiled: dict[str, str] = {}
_lock = threading.Lock()


def compile_catalogues(source: Path = TRANSLATIONS) -> str:
    """Compile every messages.po under ``source`` into a cache dir; returns its path."""
    pos = sorted(source.glob("*/LC_MESSAGES/messages.po"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in pos)).hexdigest()[:16]
    with _lock:
        if digest in _compiled:
            return _compiled[digest]
        out = Path(tempfile.gettempdir()) / f"mc-translations-{digest}"
        for po in pos:
            locale = po.parent.parent.name
            # Babel names zh_CN "zh_Hans_CN" when looking catalogues up: write under both names.
            for name in {locale, str(Locale.parse(locale))}:
                _compile(po, locale, out / name / "LC_MESSAGES" / "messages.mo")
        _compiled[digest] = str(out)
        return str(out)


def _compile(po: Path, locale: str, target: Path) -> None:
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(po, "rb") as handle:
        catalog = read_po(handle, locale=locale)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        write_mo(handle, catalog)
    tmp.replace(target)


def select_locale() -> str:
    user = g.get("user")
    if user is not None and user.locale in LOCALES:
        return user.locale
    chosen = request.cookies.get("mc_lang")
    if chosen in LOCALES:
        return chosen
    return DEFAULT_LOCALE


def init_app(app: Flask) -> None:
    app.config.setdefault("BABEL_DEFAULT_LOCALE", DEFAULT_LOCALE)
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = compile_catalogues()
    Babel(app, locale_selector=select_locale)
