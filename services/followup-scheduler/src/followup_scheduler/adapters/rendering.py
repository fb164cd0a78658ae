"""Message rendering with Jinja2 in sandboxed mode, per locale."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import yaml
from jinja2 import StrictUndefined, Template, TemplateError, meta
from jinja2.sandbox import SandboxedEnvironment

FALLBACK_LOCALE = "en"
LOCALES = ("en", "ja")


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str | None


class TemplateNotFound(LookupError):
    pass


InlineTemplates = Mapping[str, Mapping[str, Any]]


class Renderer:
    def __init__(self) -> None:
        self._env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, trim_blocks=True)
        self._html_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=True, trim_blocks=True)
        self._library: dict[str, dict[str, dict[str, str]]] = {}
        # Compiling costs far more than rendering; sources are few, so compiled ones are kept.
        self._compiled: dict[tuple[bool, str], Template] = {}
        self._names: dict[tuple[str, ...], frozenset[str]] = {}
        for resource in files("followup_scheduler.templates").iterdir():
            if resource.name.endswith(".yaml"):
                self._library[resource.name.removesuffix(".yaml")] = yaml.safe_load(
                    resource.read_text("utf-8")
                )

    def source(
        self, template: str, locale: str | None, inline: InlineTemplates | None = None
    ) -> dict[str, Any]:
        """The template's parts for a locale: the playbook's own first, then the packaged library."""
        language = (locale or FALLBACK_LOCALE).split("-")[0].lower()
        own = (inline or {}).get(template) or {}
        found = own.get(language) or own.get(FALLBACK_LOCALE)
        if found is not None:
            parts = found.model_dump() if hasattr(found, "model_dump") else dict(found)
            return {k: v for k, v in parts.items() if v is not None}
        catalogue = self._library.get(language) or self._library[FALLBACK_LOCALE]
        packaged = catalogue.get(template) or self._library[FALLBACK_LOCALE].get(template)
        if packaged is None:
            raise TemplateNotFound(template)
        return packaged

    def knows(self, template: str, inline: InlineTemplates | None = None) -> bool:
        return template in (inline or {}) or template in self._library[FALLBACK_LOCALE]

    def _template(self, text: str, *, html: bool = False) -> Template:
        key = (html, text)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = (self._html_env if html else self._env).from_string(text)
            if len(self._compiled) < 10_000:  # shops' own templates are bounded, but be safe
                self._compiled[key] = compiled
        return compiled

    def variables(
        self, template: str, locale: str | None, inline: InlineTemplates | None = None
    ) -> frozenset[str]:
        """The top-level names a template uses, so that costly context parts are built only when used."""
        source = self.source(template, locale, inline)
        key = tuple(str(source.get(part) or "") for part in ("subject", "text", "html"))
        names = self._names.get(key)
        if names is None:
            found: set[str] = set()
            for part in key:
                found |= meta.find_undeclared_variables(self._env.parse(part))
            names = frozenset(found)
            if len(self._names) < 10_000:
                self._names[key] = names
        return names

    def render(
        self,
        template: str,
        locale: str | None,
        context: dict[str, Any],
        inline: InlineTemplates | None = None,
    ) -> Rendered:
        source = self.source(template, locale, inline)
        subject = self._template(source["subject"]).render(context).strip()
        text = self._template(source["text"]).render(context)
        html = self._template(source["html"], html=True).render(context) if source.get("html") else None
        return Rendered(subject=subject, text=text, html=html)

    def check(
        self,
        template: str,
        contexts: list[dict[str, Any]],
        inline: InlineTemplates | None = None,
        locales: tuple[str, ...] = LOCALES,
    ) -> list[tuple[str, str]]:
        """Render a template in every locale with each sample context: (locale, error) per failure."""
        if not self.knows(template, inline):
            return [("*", f"unknown template {template!r}")]
        errors = []
        for locale in locales:
            for index, context in enumerate(contexts):
                try:
                    self.render(template, locale, context, inline)
                except (TemplateError, TemplateNotFound) as exc:
                    # Later contexts lack optional data: say so, or the error reads as nonsense.
                    when = " (with optional data absent, e.g. no recommendation)" if index else ""
                    errors.append((locale, f"{type(exc).__name__}: {exc}{when}"))
                    break
        return errors
