"""Safe XML parsing and small serialisation helpers shared by the Autodiscover and EWS codecs.

Untrusted documents (server answers on the probe side, client requests in the lab) go through
:func:`parse_xml`, which uses defusedxml's parser with DTDs, entity declarations and external
references forbidden, and caps the input size, the element nesting depth and the element count while
the tree is being built (so a deep or wide document is refused before it costs memory).

Namespaces used by [MS-OXDSCLI] (POX Autodiscover), [MS-OXWSADISC] (SOAP Autodiscover) and the EWS
SOAP envelope ([MS-OXWSCDATA], SOAP 1.1) are defined here so that every codec spells them once.

Documents are *built* as ``xml.etree.ElementTree`` trees with Clark names (``{ns}local``) and written by
:func:`to_bytes`, which takes an explicit prefix map (no global ``register_namespace`` state) and refuses
characters that XML 1.0 cannot carry.
"""

from __future__ import annotations

import functools
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import ParamSpec, TypeVar
from xml.sax.saxutils import escape, quoteattr

from defusedxml.common import DefusedXmlException
from defusedxml.ElementTree import DefusedXMLParser

__all__ = [
    "DEFAULT_LIMITS",
    "NS_AUTODISCOVER_SOAP",
    "NS_EWS_ERRORS",
    "NS_EWS_MESSAGES",
    "NS_EWS_TYPES",
    "NS_SOAP",
    "NS_WSA",
    "NS_XSI",
    "XmlCodecError",
    "XmlLimits",
    "child",
    "child_text",
    "children",
    "element",
    "first_child",
    "int_attr",
    "local_name",
    "namespace_of",
    "parse_int",
    "parse_xml",
    "qname",
    "reraise_as",
    "sub",
    "text_of",
    "to_bytes",
]

NS_SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
NS_XSI = "http://www.w3.org/2001/XMLSchema-instance"
NS_WSA = "http://www.w3.org/2005/08/addressing"
NS_EWS_MESSAGES = "http://schemas.microsoft.com/exchange/services/2006/messages"
NS_EWS_TYPES = "http://schemas.microsoft.com/exchange/services/2006/types"
NS_EWS_ERRORS = "http://schemas.microsoft.com/exchange/services/2006/errors"
NS_AUTODISCOVER_SOAP = "http://schemas.microsoft.com/exchange/2010/Autodiscover"

_NS_XML = "http://www.w3.org/XML/1998/namespace"
# Prefixes used when an attribute's namespace is not yet declared in scope.
_ATTR_PREFIXES = {NS_XSI: "i"}
# XML 1.0 Char production: tab, LF, CR and #x20 upwards, minus surrogates and U+FFFE/U+FFFF.
_BAD_CHARS = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class XmlCodecError(ValueError):
    """A document (or a value to be written) is malformed, hostile, too large or not the expected shape."""


@dataclass(frozen=True, slots=True)
class XmlLimits:
    """Resource caps applied while parsing one document.

    Attributes:
        max_bytes: largest accepted input, in bytes.
        max_depth: deepest accepted element nesting (the root is depth 1).
        max_elements: most elements accepted in one document.
    """

    max_bytes: int = 4 * 1024 * 1024
    max_depth: int = 48
    max_elements: int = 200_000


DEFAULT_LIMITS = XmlLimits()


class _BoundedTreeBuilder:
    """TreeBuilder target that refuses documents deeper or larger than the limits, while parsing."""

    def __init__(self, limits: XmlLimits) -> None:
        self._builder = ET.TreeBuilder()
        self._limits = limits
        self._depth = 0
        self._count = 0

    def start(self, tag: str, attrs: dict[str, str]) -> ET.Element:
        self._depth += 1
        self._count += 1
        if self._depth > self._limits.max_depth:
            raise XmlCodecError(f"XML nesting deeper than {self._limits.max_depth} elements")
        if self._count > self._limits.max_elements:
            raise XmlCodecError(f"XML document has more than {self._limits.max_elements} elements")
        return self._builder.start(tag, attrs)

    def end(self, tag: str) -> ET.Element:
        self._depth -= 1
        return self._builder.end(tag)

    def data(self, data: str) -> None:
        self._builder.data(data)

    def close(self) -> ET.Element:
        return self._builder.close()


def parse_xml(data: bytes | str, *, limits: XmlLimits = DEFAULT_LIMITS) -> ET.Element:
    """Parse an untrusted document and return its root element.

    Raises XmlCodecError for empty, oversized, non-well-formed input, any DTD or entity declaration,
    and documents over the depth or element-count caps.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if not raw.strip():
        raise XmlCodecError("empty XML document")
    if len(raw) > limits.max_bytes:
        raise XmlCodecError(f"XML document of {len(raw)} bytes exceeds the {limits.max_bytes}-byte cap")
    parser = DefusedXMLParser(
        target=_BoundedTreeBuilder(limits), forbid_dtd=True, forbid_entities=True, forbid_external=True
    )
    try:
        parser.feed(raw)
        root = parser.close()
    except XmlCodecError:
        raise
    except DefusedXmlException as exc:
        raise XmlCodecError(f"forbidden XML construct: {type(exc).__name__}") from exc
    except ET.ParseError as exc:
        raise XmlCodecError(f"malformed XML: {exc}") from exc
    except (ValueError, LookupError) as exc:  # e.g. an unknown declared encoding
        raise XmlCodecError(f"undecodable XML: {exc}") from exc
    if not isinstance(root, ET.Element):
        raise XmlCodecError("XML document has no root element")
    return root


_P = ParamSpec("_P")
_R = TypeVar("_R")


def reraise_as(error: type[XmlCodecError]) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Decorate a public parser so generic XmlCodecErrors surface as the module's own ``error`` class."""

    def decorate(func: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(func)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return func(*args, **kwargs)
            except XmlCodecError as exc:
                if isinstance(exc, error):
                    raise
                raise error(str(exc)) from exc

        return wrapper

    return decorate


# --- names -----------------------------------------------------------------------------------------


def qname(ns: str | None, local: str) -> str:
    """Return the Clark name ``{ns}local`` (or just ``local`` when ns is None/empty)."""
    return f"{{{ns}}}{local}" if ns else local


def namespace_of(elem_or_tag: ET.Element | str) -> str | None:
    """Return the namespace URI of an element or Clark tag, or None when it has none."""
    tag = elem_or_tag if isinstance(elem_or_tag, str) else elem_or_tag.tag
    if isinstance(tag, str) and tag.startswith("{"):
        return tag[1 : tag.index("}")]
    return None


def local_name(elem_or_tag: ET.Element | str) -> str:
    """Return the local part of an element's or Clark tag's name."""
    tag = elem_or_tag if isinstance(elem_or_tag, str) else elem_or_tag.tag
    if not isinstance(tag, str):  # comments / processing instructions built by hand
        return ""
    return tag.rsplit("}", 1)[-1]


# --- navigation ------------------------------------------------------------------------------------


def children(parent: ET.Element, ns: str | None, local: str, *, ignore_case: bool = False) -> Iterator[ET.Element]:
    """Yield the direct children named ``local`` in namespace ``ns`` (any namespace when ns is ``"*"``)."""
    want = local.lower() if ignore_case else local
    for elem in parent:
        name = local_name(elem)
        if (name.lower() if ignore_case else name) != want:
            continue
        if ns == "*" or namespace_of(elem) == (ns or None):
            yield elem


def child(parent: ET.Element, ns: str | None, local: str, *, ignore_case: bool = False) -> ET.Element | None:
    """Return the first direct child named ``local`` in ``ns`` (``"*"`` = any namespace), or None."""
    return next(children(parent, ns, local, ignore_case=ignore_case), None)


def first_child(parent: ET.Element) -> ET.Element | None:
    """Return the first child element (ignoring text), or None."""
    for elem in parent:
        if isinstance(elem.tag, str):
            return elem
    return None


def text_of(elem: ET.Element | None, *, max_len: int = 65536) -> str | None:
    """Return an element's stripped text, None when absent or empty; longer than max_len is an error."""
    if elem is None or elem.text is None:
        return None
    value = elem.text.strip()
    if len(value) > max_len:
        raise XmlCodecError(f"<{local_name(elem)}> text longer than {max_len} characters")
    return value or None


def child_text(
    parent: ET.Element, ns: str | None, local: str, *, ignore_case: bool = False, max_len: int = 65536
) -> str | None:
    """Return the stripped text of the first matching direct child, or None."""
    return text_of(child(parent, ns, local, ignore_case=ignore_case), max_len=max_len)


def int_attr(elem: ET.Element, name: str, *, minimum: int = 0, maximum: int = 2**31 - 1) -> int | None:
    """Return an integer attribute (None when absent); a non-integer or out-of-range value is an error."""
    raw = elem.get(name)
    if raw is None:
        return None
    return parse_int(raw, f"{local_name(elem)}@{name}", minimum=minimum, maximum=maximum)


def parse_int(raw: str, what: str, *, minimum: int = 0, maximum: int = 2**31 - 1) -> int:
    """Parse a decimal integer in [minimum, maximum]; anything else raises XmlCodecError naming ``what``."""
    value = raw.strip()
    if not re.fullmatch(r"-?[0-9]{1,12}", value):
        raise XmlCodecError(f"{what} is not an integer: {value[:40]!r}")
    number = int(value)
    if not minimum <= number <= maximum:
        raise XmlCodecError(f"{what} out of range: {number}")
    return number


# --- building --------------------------------------------------------------------------------------


def element(ns: str | None, local: str, text: str | None = None, attrs: Mapping[str, str] | None = None) -> ET.Element:
    """Create an element ``{ns}local`` with optional text and attributes."""
    elem = ET.Element(qname(ns, local), dict(attrs or {}))
    if text is not None:
        elem.text = text
    return elem


def sub(
    parent: ET.Element,
    ns: str | None,
    local: str,
    text: str | None = None,
    attrs: Mapping[str, str] | None = None,
) -> ET.Element:
    """Append and return a child element ``{ns}local`` with optional text and attributes."""
    elem = element(ns, local, text, attrs)
    parent.append(elem)
    return elem


def _checked(value: str) -> str:
    if _BAD_CHARS.search(value):
        raise XmlCodecError("value contains characters that XML 1.0 cannot represent")
    return value


def to_bytes(root: ET.Element, prefixes: Mapping[str, str], *, xml_declaration: bool = True) -> bytes:
    """Serialise ``root`` as UTF-8, declaring ``prefixes`` (prefix -> namespace; "" = default) on the root.

    An element whose namespace is not in scope gets a default-namespace declaration of its own (this is
    how POX nests the 2006a Response inside the 2006 Autodiscover root); an attribute namespace not in
    scope is declared on its element.
    """
    out: list[str] = ['<?xml version="1.0" encoding="utf-8"?>'] if xml_declaration else []
    _write(root, out, {}, dict(prefixes))
    return "".join(out).encode("utf-8")


def _write(elem: ET.Element, out: list[str], scope: dict[str, str], declare: dict[str, str]) -> None:
    """Write one element; ``scope`` maps prefix -> namespace in effect, ``declare`` adds to it here."""
    scope = {**scope, **declare}
    decls = dict(declare)
    ns, local = namespace_of(elem), local_name(elem)
    tag = _prefixed(ns, local, scope)
    if tag is None:  # element namespace not in scope: make it the default namespace from here down
        scope[""] = decls[""] = ns or ""
        tag = local
    attrs: list[str] = []
    for key, value in elem.attrib.items():
        a_ns, a_local = namespace_of(key), local_name(key)
        if a_ns is None:
            name = a_local
        elif a_ns == _NS_XML:  # the xml: prefix is predeclared and must not be bound again
            name = f"xml:{a_local}"
        else:
            prefix = next((p for p, u in scope.items() if u == a_ns and p), None)
            if prefix is None:
                prefix = _ATTR_PREFIXES.get(a_ns, f"ns{len(scope)}")
                scope[prefix] = decls[prefix] = a_ns
            name = f"{prefix}:{a_local}"
        attrs.append(f" {name}={quoteattr(_checked(value))}")
    ns_decls = "".join(
        f" xmlns={quoteattr(uri)}" if not prefix else f" xmlns:{prefix}={quoteattr(uri)}"
        for prefix, uri in decls.items()
    )
    out.append(f"<{tag}{ns_decls}{''.join(attrs)}")
    kids = list(elem)
    if not kids and not elem.text:
        out.append("/>")
    else:
        out.append(">")
        if elem.text:
            out.append(escape(_checked(elem.text)))
        for kid in kids:
            _write(kid, out, scope, {})
            if kid.tail:
                out.append(escape(_checked(kid.tail)))
        out.append(f"</{tag}>")


def _prefixed(ns: str | None, local: str, scope: Mapping[str, str]) -> str | None:
    """Return ``prefix:local`` (or ``local`` for the default namespace) if ``ns`` is in scope, else None."""
    if ns is None:
        return local if not scope.get("") else None
    if scope.get("") == ns:
        return local
    for prefix, uri in scope.items():
        if uri == ns and prefix:
            return f"{prefix}:{local}"
    return None
