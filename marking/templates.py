"""Card templates in the database: stored once by content hash, immutable (R-OMR-1).

The hash is SHA-256 of the template's canonical JSON — the same definition as
``omr.template.content_hash`` (a test checks they agree), computed here because
marking must not import omr. Templates hold geometry in millimetres, so floats are
allowed in them: they are never scores.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import CardTemplate


class TemplateRefused(ValueError):
    """The template cannot serve as a subject's card template."""


class TemplateClash(TemplateRefused):
    """The same template id and version already exist with different content."""


def check_single_page_items(body: Mapping[str, Any]) -> None:
    """Refuse a template whose subjective item has answer regions on two pages.

    An item's image is cut from one scanned page (the OMR library cuts the regions of a
    page; the batch makes one response per script and item from one card), so the part
    of an answer on another page would never reach a marker. Refused here, where the
    template becomes a subject's, rather than marked partly.
    """
    pages_of: dict[str, list[str]] = {}
    for page in body.get("pages") or []:
        if not isinstance(page, Mapping):
            continue
        for region in page.get("answer_regions") or []:
            item = region.get("item") if isinstance(region, Mapping) else None
            if item in (None, ""):
                continue
            codes = pages_of.setdefault(str(item), [])
            if str(page.get("code")) not in codes:
                codes.append(str(page.get("code")))
    for item, codes in pages_of.items():
        if len(codes) > 1:
            raise TemplateRefused(f"subjective item {item} has answer regions on pages {', '.join(codes)}; "
                                  "an item's regions must all be on one page (an answer continued on "
                                  "another page is not joined to it, so that part would not be marked)")


def template_json(body: Mapping[str, Any]) -> str:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def template_hash(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(template_json(body).encode("utf-8")).hexdigest()


def template_identity(body: Mapping[str, Any]) -> tuple[str, str]:
    """(id, version) as the template declares them (``id`` or ``code``; version as text)."""
    code = str(body.get("id") or body.get("code") or "").strip()
    version = str(body.get("version") or "").strip()
    if not code or not version:
        raise TemplateClash("a card template needs an id and a version")
    return code[:60], version[:20]


def store_template(session: Session, body: Mapping[str, Any]) -> CardTemplate:
    """The stored row for this exact template, added if new. A changed template must
    carry a new version: the same (id, version) with other content is refused."""
    check_single_page_items(body)
    digest = template_hash(body)
    existing = session.scalar(select(CardTemplate).where(CardTemplate.content_hash == digest))
    if existing is not None:
        return existing
    code, version = template_identity(body)
    if session.scalar(select(CardTemplate.id).where(CardTemplate.code == code, CardTemplate.version == version)):
        raise TemplateClash(f"card template {code} version {version} already exists with different content; "
                            "a changed template needs a new version (R-OMR-1)")
    row = CardTemplate(code=code, version=version, content_hash=digest, body=template_json(body))
    session.add(row)
    session.flush()
    return row
