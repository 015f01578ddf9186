"""Reading annotation JSON with errors that name the file and the missing piece."""

import json
from pathlib import Path

from engine.errors import FormatError


def read_json(path: str | Path) -> dict:
    """Whole JSON object of `path`; FormatError if missing, unreadable, malformed or not an object."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise FormatError(path, "file not found") from None
    except OSError as e:
        raise FormatError(path, f"cannot read ({e.strerror or e})") from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FormatError(path, f"malformed JSON ({e})") from None
    except RecursionError:
        raise FormatError(path, "JSON nested too deeply to be an annotation file") from None
    if not isinstance(data, dict):
        raise FormatError(path, f"expected a JSON object at the top level, found {type(data).__name__}")
    return data


def need(d, key: str, path: str | Path, where: str, kind: type | tuple[type, ...] | None = None):
    """d[key], or a FormatError saying which key is missing (or of the wrong type) in which entry."""
    if not isinstance(d, dict):
        raise FormatError(path, f"{where}: expected an object, found {type(d).__name__}")
    if key not in d:
        raise FormatError(path, f"{where}: missing key '{key}'")
    v = d[key]
    if kind is not None and not isinstance(v, kind) or isinstance(v, bool) and kind in (int, (int, float)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise FormatError(path, f"{where}: '{key}' should be {names}, found {type(v).__name__}")
    return v
