"""Go's ``%q`` quoting, which Kubernetes' messages use for names, paths and values.

Clients and people compare these messages with a real API server's, so a name holding a
quote, a backslash or a control character must read as Go prints it, not as Python's ``repr``
or JSON would.
"""

from __future__ import annotations

from typing import Final

_GO_ESCAPES: Final = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def go_quote(text: str) -> str:
    """Quote a string as Go's ``%q`` verb (``strconv.Quote``) does.

    Kubernetes messages quote names with ``%q``, so a name with a quote, backslash or control
    character reads differently from Python's ``repr``; this reproduces Go's output.

    Args:
        text: The string to quote.

    Returns:
        The double-quoted, escaped string.
    """
    out = ['"']
    for char in text:
        code = ord(char)
        if char in {'"', "\\"}:
            out.append("\\" + char)
        elif char.isprintable():
            # Python's printable set is Go's unicode.IsPrint: categories L, M, N, P, S and the
            # ASCII space.
            out.append(char)
        elif char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xDC80 <= code <= 0xDCFF:
            # A byte that was not valid UTF-8, carried through surrogateescape: Go prints the
            # raw byte as \xNN.
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\\ufffd")  # not a valid rune; Go substitutes utf8.RuneError
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)
