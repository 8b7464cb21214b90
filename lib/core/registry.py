"""Name -> component tables, so that configs pick components by name (``{name, params}`` sections,
the style of koukyo1994/kaggle-rfcx's configs)."""
from __future__ import annotations

import difflib

from .errors import ConfigError


def did_you_mean(word: str, candidates) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``candidates`` (difflib), or ``""`` if none is
    close. A candidate that prints as ``word`` but is other text (another Unicode normal form, e.g.
    an accent stored as a combining mark, or spaces around it) is named with both spellings escaped
    (``ascii``), since the two would look the same in the message."""
    import unicodedata

    same = [c for c in candidates if unicodedata.normalize("NFC", str(c)).strip()
            == unicodedata.normalize("NFC", str(word)).strip() and c != word]
    if same:
        return (f"; {same[0]!r} looks the same but is other text ({ascii(word)} wanted, {ascii(same[0])} found: "
                f"another Unicode form or spaces around it): write both alike")
    close = difflib.get_close_matches(str(word), list(candidates), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


class Registry:
    """A name -> callable table, so that configs pick components by name.

    >>> MODELS = Registry("model")
    >>> @MODELS.register("cnn")
    ... class CNN: ...
    >>> MODELS.build({"name": "cnn", "params": {}})  # doctest: +ELLIPSIS
    <...CNN object at ...>
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, object] = {}
        self.choices: dict[str, Registry] = {}
        """Parameters whose value names an entry of another registry (e.g. a model's ``pooling``),
        so that a config check can catch a misspelt value before anything is built."""

    def register(self, name: str):
        """Decorator that registers a class or function under ``name``."""
        def deco(obj):
            self._items[name] = obj
            return obj
        return deco

    def get(self, name: str, where: str | None = None):
        """Return the object registered as ``name``.

        Raises ``ConfigError`` naming ``where`` (the config file, if given), listing the known
        names and the closest one.
        """
        if name not in self._items:
            prefix = f"{where}: " if where else ""
            raise ConfigError(f"{prefix}unknown {self.kind} {name!r}; known: {', '.join(self.names())}"
                              f"{did_you_mean(name, self._items)}")
        return self._items[name]

    def build(self, section: dict, where: str | None = None, **kwargs):
        """Call the object named by ``section['name']`` with ``section['params']`` and ``kwargs``;
        returns what it returns. Raises ``ConfigError`` for an unknown name (see :meth:`get`)."""
        return self.get(section["name"], where)(**(section.get("params") or {}), **kwargs)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._items)
